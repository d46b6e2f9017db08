import { describe, expect, it } from 'vitest';
import { planAutopilot, type AutopilotInput } from '../../protocol/cluster/autopilot.js';
import type { NodeRecord, ClusterConfig } from '../../protocol/cluster/state.js';

function node(id: string, status: NodeRecord['status'] = 'up', role: NodeRecord['role'] = 'voter'): NodeRecord {
  return {
    id, name: id, addrs: [], apiUrl: 'http://127.0.0.1:1', labels: {}, role, status, statusReason: '', root: false, joinedIndex: 1, updatedIndex: 1,
    resources: { cpuCores: 1, memoryBytes: 1, diskBytes: 1, arch: 'amd64', gpus: [] },
  };
}

type InputOverrides = Partial<Omit<AutopilotInput, 'voters' | 'learners' | 'config'>> & { voters: string[]; learners?: string[]; config?: Partial<ClusterConfig> };

function input(over: InputOverrides): AutopilotInput {
  const learners: string[] = over.learners ?? [];
  const all = [...over.voters, ...learners];
  return {
    self: over.self ?? over.voters[0],
    config: { clusterId: 'c', voterTarget: 3, rootNodeId: 'root', rootRetired: true, ephemeralRoot: false, ...over.config },
    nodes: over.nodes ?? all.map((id) => node(id, 'up', learners.includes(id) ? 'learner' : 'voter')),
    voters: new Set(over.voters),
    learners: new Set(learners),
    silenceMs: over.silenceMs ?? new Map(all.map((id) => [id, 100])),
    downForMs: over.downForMs ?? new Map(),
    lagEntries: over.lagEntries ?? new Map(all.map((id) => [id, 0])),
    confChangePending: over.confChangePending ?? false,
    downAfterMs: 5000,
    replaceAfterMs: 15_000,
    maxPromotableLagEntries: 64,
  };
}

describe('autopilot decisions', () => {
  it('does nothing before the cluster is initialised', () => {
    expect(planAutopilot(input({ voters: ['a'], config: { clusterId: '' } }))).toEqual([]);
  });

  it('promotes the most caught-up healthy learner while below the voter target', () => {
    const plan = planAutopilot(input({ voters: ['a'], learners: ['b', 'c'], lagEntries: new Map([['a', 0], ['b', 10], ['c', 2]]) }));
    expect(plan).toEqual([{ kind: 'promote', node: 'c', reason: 'voters 1 < target 3' }]);
  });

  it('does not promote a lagging or silent learner, nor during a pending membership change', () => {
    expect(planAutopilot(input({ voters: ['a'], learners: ['b'], lagEntries: new Map([['b', 1000]]) }))).toEqual([]);
    expect(planAutopilot(input({ voters: ['a'], learners: ['b'], lagEntries: new Map([['b', Infinity]]) }))).toEqual([]);
    const silent = planAutopilot(input({ voters: ['a'], learners: ['b'], silenceMs: new Map([['a', 1]]) }));
    expect(silent.filter((x) => x.kind === 'promote')).toEqual([]);
    expect(planAutopilot(input({ voters: ['a'], learners: ['b'], confChangePending: true }))).toEqual([]);
  });

  it('marks a silent node down and a heard-from node up again', () => {
    const nodes = [node('a'), node('b'), node('c', 'down')];
    const plan = planAutopilot(input({ voters: ['a', 'b', 'c'], nodes, silenceMs: new Map([['b', 6000], ['c', 10]]) }));
    expect(plan).toContainEqual({ kind: 'markDown', node: 'b', reason: 'no heartbeat for 6s' });
    expect(plan).toContainEqual({ kind: 'markUp', node: 'c' });
  });

  it('replaces a voter down past the grace period: promote first, then demote', () => {
    const nodes = [node('a'), node('b'), node('c', 'down'), node('d', 'up', 'learner')];
    const first = planAutopilot(input({ voters: ['a', 'b', 'c'], learners: ['d'], nodes, silenceMs: new Map([['b', 1], ['c', 1], ['d', 1]]), downForMs: new Map([['c', 20_000]]) }));
    expect(first.filter((x) => x.kind !== 'markUp')).toEqual([{ kind: 'promote', node: 'd', reason: 'replacing voter c that is down' }]);
    const second = planAutopilot(input({ voters: ['a', 'b', 'c', 'd'], nodes, silenceMs: new Map([['b', 1], ['c', 1], ['d', 1]]), downForMs: new Map([['c', 21_000]]) }));
    expect(second.find((x) => x.kind === 'demote')).toMatchObject({ kind: 'demote', node: 'c' });
  });

  it('waits out the grace period before replacing a voter', () => {
    const nodes = [node('a'), node('b'), node('c', 'down'), node('d', 'up', 'learner')];
    const plan = planAutopilot(input({ voters: ['a', 'b', 'c'], learners: ['d'], nodes, silenceMs: new Map([['b', 1], ['d', 1], ['c', 9000]]), downForMs: new Map([['c', 1000]]) }));
    expect(plan.filter((x) => x.kind === 'promote' || x.kind === 'demote')).toEqual([]);
  });

  it('root transfers leadership once the target is reached; another leader retires it', () => {
    const cfg = { rootNodeId: 'a', rootRetired: false };
    const asRoot = planAutopilot(input({ voters: ['a', 'b', 'c'], self: 'a', config: cfg, lagEntries: new Map([['b', 5], ['c', 0]]) }));
    expect(asRoot).toEqual([{ kind: 'transferLeadership', to: 'c', reason: 'root steps down: voter target reached' }]);
    const asOther = planAutopilot(input({ voters: ['a', 'b', 'c'], self: 'b', config: cfg }));
    expect(asOther).toEqual([{ kind: 'retireRoot', reason: 'voter target 3 reached' }]);
    expect(planAutopilot(input({ voters: ['a', 'b'], self: 'a', config: cfg }))).toEqual([]);
  });

  it('an ephemeral root does not count toward the target, and is marked left then removed', () => {
    const cfg = { rootNodeId: 'r', rootRetired: false, ephemeralRoot: true };
    expect(planAutopilot(input({ voters: ['r', 'b', 'c'], self: 'r', config: cfg }))).toEqual([]);
    const ready = planAutopilot(input({ voters: ['r', 'b', 'c', 'd'], self: 'r', config: cfg }));
    expect(ready[0]).toMatchObject({ kind: 'transferLeadership' });
    const retired = { ...cfg, rootRetired: true };
    // Out of the configuration first, while the root can still vote for it...
    expect(planAutopilot(input({ voters: ['r', 'b', 'c', 'd'], self: 'b', config: retired }))).toEqual([{ kind: 'removeMember', node: 'r', reason: 'ephemeral root retired' }]);
    // ...then its record is marked left (which tells it to exit).
    const nodes = [node('r'), node('b'), node('c'), node('d')];
    const heard = new Map(['r', 'b', 'c', 'd'].map((id) => [id, 10]));
    expect(planAutopilot(input({ voters: ['b', 'c', 'd'], self: 'b', config: retired, nodes, silenceMs: heard }))).toEqual([{ kind: 'markLeft', node: 'r', reason: 'ephemeral root retired' }]);
    // A retired ephemeral root that became leader again hands leadership off.
    expect(planAutopilot(input({ voters: ['r', 'b', 'c', 'd'], self: 'r', config: retired }))[0]).toMatchObject({ kind: 'transferLeadership' });
    // With a target of 1 the root is one of only two voters: its removal still goes first.
    const one = { ...retired, voterTarget: 1 };
    expect(planAutopilot(input({ voters: ['r', 'b'], self: 'b', config: one }))).toEqual([{ kind: 'removeMember', node: 'r', reason: 'ephemeral root retired' }]);
  });
});
