// The autopilot's driver (node/cluster/autopilot.ts) on a fake leader: when its rounds come
// and what it takes as proof of life. The decisions themselves: autopilot.test.ts.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Autopilot, type AutopilotDeps } from '../../node/cluster/autopilot.js';
import { silentLogger } from '../../node/logger.js';
import type { PeerLiveness } from '../../node/cluster/heartbeats.js';
import { ConfChangeType, Role, type ConfChange } from '../../protocol/raft/types.js';
import type { Command } from '../../protocol/cluster/commands.js';
import type { NodeRecord } from '../../protocol/cluster/state.js';

function record(id: string): NodeRecord {
  return {
    id, name: id, addrs: [], apiUrl: 'http://127.0.0.1:1', labels: {}, role: 'voter', status: 'up', statusReason: '', root: id === 'n1', joinedIndex: 1, updatedIndex: 1,
    resources: { cpuCores: 1, memoryBytes: 1, diskBytes: 1, arch: 'amd64', gpus: [] },
  };
}

/** A leader n1 of a cluster with a voter target of 3. */
function fakeLeader(opts: { voters: string[]; learners: string[]; nodes: string[]; heard?: string[] }) {
  const voters = new Set(opts.voters);
  const learners = new Set(opts.learners);
  const nodes = opts.nodes.map(record);
  const seen = new Map<string, PeerLiveness>((opts.heard ?? []).map((id) => [id, { lastSeenMs: Date.now(), load1: 0, memFreeBytes: 0, applied: 0 }]));
  const changes: ConfChange[] = [];
  const proposals: Command[] = [];
  const prs = new Map([...voters, ...learners].map((id) => [id, { match: 10 }]));
  const raft = { role: Role.Leader, voters, learners, prs, pendingConfIndex: 0, log: { applied: 10, lastIndex: () => 10 } };
  const deps = {
    id: 'n1',
    log: silentLogger,
    raft: {
      raft,
      isLeader: true,
      state: {
        config: () => ({ clusterId: 'c', voterTarget: 3, rootNodeId: 'n1', rootRetired: false, ephemeralRoot: false }),
        nodes: () => nodes,
        nodeCount: () => nodes.length,
        node: (id: string) => nodes.find((n) => n.id === id),
      },
      transferLeader: () => undefined,
    },
    liveness: {
      seen,
      touch: (id: string) => seen.set(id, { lastSeenMs: Date.now(), load1: 0, memFreeBytes: 0, applied: 0 }),
    },
    peers: { dropPeer: () => undefined, tellRemoved: async () => undefined },
    // A membership change applies at once (the fake's log is always committed).
    changeMembership: async (cc: ConfChange) => {
      changes.push(cc);
      if (cc.type === ConfChangeType.AddVoter) {
        learners.delete(cc.node);
        voters.add(cc.node);
      }
    },
    proposeOk: async (cmd: Command) => void proposals.push(cmd),
  };
  const addLearner = (id: string) => {
    nodes.push(record(id));
    learners.add(id);
    prs.set(id, { match: 10 });
  };
  return { deps: deps as unknown as AutopilotDeps, changes, proposals, seen, addLearner };
}

describe('autopilot driver', () => {
  let pilot: Autopilot | undefined;
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => {
    pilot?.stop();
    vi.useRealTimers();
  });

  it('promotes a learner that joined after the leader took over without waiting for its first heartbeat', async () => {
    const f = fakeLeader({ voters: ['n1', 'n2'], learners: [], nodes: ['n1', 'n2'] });
    pilot = new Autopilot(f.deps, { downAfterMs: 5000, replaceAfterMs: 15_000 });
    pilot.start();
    await vi.advanceTimersByTimeAsync(500); // the first round as leader touches everyone
    expect(f.changes).toEqual([]);
    // n3 joins now: its record and learner entry appear; its first gossiped heartbeat takes a second or two.
    f.addLearner('n3');
    await vi.advanceTimersByTimeAsync(500);
    expect(f.proposals.filter((p) => p.type === 'node.status')).toEqual([]);
    expect(f.changes).toEqual([{ type: ConfChangeType.AddVoter, node: 'n3' }]);
  });

  it('chains the rounds of a forming cluster 20 ms apart, then goes back to 500 ms', async () => {
    const f = fakeLeader({ voters: ['n1'], learners: ['n2', 'n3'], nodes: ['n1', 'n2', 'n3'] });
    pilot = new Autopilot(f.deps, { downAfterMs: 5000, replaceAfterMs: 15_000 });
    pilot.start();
    await vi.advanceTimersByTimeAsync(500);
    expect(f.changes.map((c) => c.node)).toEqual(['n2']);
    await vi.advanceTimersByTimeAsync(19);
    expect(f.changes.map((c) => c.node)).toEqual(['n2']);
    await vi.advanceTimersByTimeAsync(1);
    expect(f.changes.map((c) => c.node)).toEqual(['n2', 'n3']);
    // The target is reached and the root (this node) is due to step down: still settling.
    const transfers = vi.spyOn(f.deps.raft, 'transferLeader');
    await vi.advanceTimersByTimeAsync(20);
    expect(transfers).toHaveBeenCalledTimes(1);
  });

  it('a membership change applied during a round (as its own promotion is) brings the next round at once', async () => {
    const f = fakeLeader({ voters: ['n1'], learners: ['n2', 'n3'], nodes: ['n1', 'n2', 'n3'] });
    pilot = new Autopilot(f.deps, { downAfterMs: 5000, replaceAfterMs: 15_000 });
    const change = f.deps.changeMembership.bind(f.deps);
    // the daemon kicks the autopilot when it applies the change, before the proposal's promise settles
    f.deps.changeMembership = async (cc, caller) => {
      await change(cc, caller);
      pilot!.kick();
    };
    const transfers = vi.spyOn(f.deps.raft, 'transferLeader');
    pilot.start();
    await vi.advanceTimersByTimeAsync(500);
    // n2, then n3, then the root's transfer: one round after another, well within the 20 ms between settling rounds
    for (let i = 0; i < 3; i++) await vi.advanceTimersByTimeAsync(1);
    expect(f.changes.map((c) => c.node)).toEqual(['n2', 'n3']);
    expect(transfers).toHaveBeenCalledTimes(1);
  });

  it('kick: a round at once (a node that has just become leader retires the root without waiting out its timer)', async () => {
    const f = fakeLeader({ voters: ['n1', 'n2', 'n3'], learners: [], nodes: ['n1', 'n2', 'n3'] });
    (f.deps.raft.raft as { role: Role }).role = Role.Follower;
    pilot = new Autopilot(f.deps, { downAfterMs: 5000, replaceAfterMs: 15_000 });
    pilot.start();
    await vi.advanceTimersByTimeAsync(500); // a follower's round: nothing
    // It becomes leader (as n2 after the root's transfer; here n1 plays it and is not the root)
    (f.deps.raft.state as { config: () => unknown }).config = () => ({ clusterId: 'c', voterTarget: 3, rootNodeId: 'n9', rootRetired: false, ephemeralRoot: false });
    (f.deps.raft.raft as { role: Role }).role = Role.Leader;
    pilot.kick();
    await vi.advanceTimersByTimeAsync(1);
    expect(f.proposals.map((p) => p.type)).toEqual(['root.retire']);
  });

  it('kick during a round does not start a second chain of rounds', async () => {
    const f = fakeLeader({ voters: ['n1', 'n2', 'n3'], learners: [], nodes: ['n1', 'n2', 'n3'] });
    // the root is another node and never seen retired by this fake: every round proposes its retirement, which takes 100 ms
    (f.deps.raft.state as { config: () => unknown }).config = () => ({ clusterId: 'c', voterTarget: 3, rootNodeId: 'n9', rootRetired: false, ephemeralRoot: false });
    f.deps.proposeOk = () => new Promise((r) => setTimeout(r, 100));
    pilot = new Autopilot(f.deps, { downAfterMs: 5000, replaceAfterMs: 15_000 });
    const rounds = vi.spyOn(pilot as unknown as { round: () => Promise<boolean> }, 'round');
    pilot.start();
    await vi.advanceTimersByTimeAsync(550); // the first round is under way (its proposal pending)
    for (let i = 0; i < 5; i++) pilot.kick();
    rounds.mockClear();
    await vi.advanceTimersByTimeAsync(6_000);
    // one chain: a round of 100 ms, then 20 ms to the next (it acted) — 50 in 6 s (the round the
    // kicks came in is followed at once); a second chain would double it
    expect(rounds.mock.calls.length).toBeGreaterThanOrEqual(45);
    expect(rounds.mock.calls.length).toBeLessThanOrEqual(52);
  });

  it('gives a node first seen now a full timeout instead of marking it down', async () => {
    // n3's record exists (a join registered it) but it is neither in the Raft configuration nor heard from yet.
    const f = fakeLeader({ voters: ['n1', 'n2'], learners: [], nodes: ['n1', 'n2', 'n3'], heard: ['n2'] });
    pilot = new Autopilot(f.deps, { downAfterMs: 5000, replaceAfterMs: 15_000 });
    pilot.start();
    await vi.advanceTimersByTimeAsync(500); // the first round as leader touches everyone
    f.seen.delete('n3'); // as if the record appeared after that round
    await vi.advanceTimersByTimeAsync(1000);
    expect(f.proposals.filter((p) => p.type === 'node.status')).toEqual([]);
    // Silent past the timeout, it is marked down.
    await vi.advanceTimersByTimeAsync(5000);
    expect(f.proposals).toContainEqual(expect.objectContaining({ type: 'node.status', id: 'n3', status: 'down' }));
  });
});
