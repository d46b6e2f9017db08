// Scheduling per app: in one round the leader's orchestrator plans every app that needs it and
// proposes their transactions back to back — each guarded by its app record and by the nodes it
// places on, not by one global epoch — so independent apps are scheduled together; a plan made
// stale by a change to a node it places on is refused and redone, never over-committing it.
import { describe, expect, it } from 'vitest';
import { Orchestrator } from '../../node/apps/orchestrator.js';
import { silentLogger } from '../../node/logger.js';
import { OmniError } from '../../node/errors.js';
import { waitFor } from '../../node/local-cluster.js';
import { ClusterState, encodeCommand, type Command } from '../../protocol/cluster/state.js';
import { appKey, parseRecord, schedNodeKey, specKey, TASK_PREFIX, type AppRecord, type TaskRecord } from '../../protocol/apps/model.js';
import { validateAppSpec } from '../../protocol/apps/spec.js';
import type { Raft } from '../../protocol/raft/raft.js';

function cluster(nodeIds: string[], cpuPerNode: number) {
  const state = new ClusterState();
  let index = 0;
  const apply = (cmd: Command) => state.apply(++index, encodeCommand(cmd));
  for (const id of nodeIds) {
    apply({ type: 'node.register', node: { id, name: id, addrs: [], apiUrl: `http://${id}`, resources: { cpuCores: cpuPerNode, memoryBytes: 8 * 1024 ** 3, diskBytes: 1e11, arch: 'x86_64', gpus: [] }, labels: {} } });
  }
  const addApp = (name: string, replicas: number, cpu: number) => {
    const v = validateAppSpec({ name, command: ['x'], driver: 'mock', replicas, resources: { cpu } });
    if (!v.ok) throw new Error(JSON.stringify(v.errors));
    const rec: AppRecord = { name, version: 1, previousVersion: 0, latestVersion: 1, state: 'running', deploy: { status: 'stable', fromVersion: 0, startedAtMs: 0, message: '' }, pending: '', events: [] };
    apply({ type: 'kv.put', key: specKey(name, 1), value: JSON.stringify(v.spec) });
    apply({ type: 'kv.put', key: appKey(name), value: JSON.stringify(rec) });
  };
  const tasks = () => state.kvList(TASK_PREFIX, 1000).map((r) => parseRecord<TaskRecord>(r.value)!).filter((t) => t.desired === 'run');
  return { state, apply, addApp, tasks };
}

describe('orchestrator: scheduling per app', () => {
  it('plans independent apps in the same round, their transactions in flight together', async () => {
    const c = cluster(['a', 'b', 'c'], 8);
    for (const name of ['one', 'two', 'three', 'four']) c.addApp(name, 2, 0.5);
    let inFlight = 0;
    let maxInFlight = 0;
    const o = new Orchestrator({
      log: silentLogger,
      raft: { state: c.state, isLeader: true, raft: {} as Raft },
      proposeOk: async (cmd) => {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        await new Promise((r) => setTimeout(r, 20)); // a commit's round trip
        inFlight--;
        const r = c.apply(cmd as Command);
        if (!r.ok) throw new OmniError(r.error.code, r.error.message);
        return r.value;
      },
    });
    o.start();
    try {
      await waitFor('8 tasks placed', () => c.tasks().length === 8, 5000, 10);
      expect(maxInFlight).toBeGreaterThanOrEqual(4);
      // Every node's guard key moved with the placements there.
      for (const n of new Set(c.tasks().map((t) => t.nodeId))) expect(c.state.kvGet(schedNodeKey(n))?.version).toBeGreaterThan(0);
    } finally {
      o.stop();
    }
  });

  it('a plan made stale by a change on a node it places on is refused and redone: no node is over-committed', async () => {
    // Two nodes with room for one 1-cpu task each; two apps of one replica each.
    const c = cluster(['a', 'b'], 1);
    c.addApp('x', 1, 1);
    c.addApp('y', 1, 1);
    let first = true;
    let conflicts = 0;
    const o = new Orchestrator({
      log: silentLogger,
      raft: { state: c.state, isLeader: true, raft: {} as Raft },
      proposeOk: async (cmd) => {
        if (first) {
          // While the round's plans are being proposed, something else takes nodes a and b
          // (another leader's plan, say): every plan of this round is stale.
          first = false;
          const v = validateAppSpec({ name: 'squat', command: ['x'], driver: 'mock', replicas: 2, resources: { cpu: 1 } });
          if (!v.ok) throw new Error('bad spec');
          c.apply({ type: 'kv.put', key: specKey('squat', 1), value: JSON.stringify(v.spec) });
          for (const n of ['a', 'b']) {
            const t: TaskRecord = { id: `squat-${n}`, app: 'squat', version: 1, nodeId: n, hostPorts: [], desired: 'run', createdAtMs: 0, stopReason: '' };
            c.apply({ type: 'kv.txn', compares: [], ops: [{ op: 'put', key: `${TASK_PREFIX}${t.id}`, value: JSON.stringify(t) }, { op: 'put', key: schedNodeKey(n), value: 'other' }] });
          }
        }
        const r = c.apply(cmd as Command);
        if (!r.ok) {
          if (r.error.code === 'CONFLICT') conflicts++;
          throw new OmniError(r.error.code, r.error.message);
        }
        return r.value;
      },
    });
    o.start();
    try {
      await waitFor('both apps to say they are pending', () => ['x', 'y'].every((n) => /pending/.test(parseRecord<AppRecord>(c.state.kvGet(appKey(n))?.value)?.pending ?? '')), 5000, 10);
      expect(conflicts).toBeGreaterThanOrEqual(1);
      // Only the squatter's tasks hold the nodes: nothing of x or y was placed over them.
      expect(c.tasks().map((t) => t.id).sort()).toEqual(['squat-a', 'squat-b']);
    } finally {
      o.stop();
    }
  });

  it('drops the placement guards of nodes removed from the cluster (and of no node), and keeps the members\'', async () => {
    const c = cluster(['a', 'b', 'c'], 8);
    c.addApp('web', 3, 0.5);
    const proposed: Command[] = [];
    const o = new Orchestrator({
      log: silentLogger,
      raft: { state: c.state, isLeader: true, raft: {} as Raft },
      proposeOk: async (cmd) => {
        proposed.push(cmd as Command);
        const r = c.apply(cmd as Command);
        if (!r.ok) throw new OmniError(r.error.code, r.error.message);
        return r.value;
      },
    });
    o.start();
    try {
      await waitFor('3 tasks placed', () => c.tasks().length === 3, 5000, 10);
      for (const n of ['a', 'b', 'c']) expect(c.state.kvGet(schedNodeKey(n))).toBeDefined();
      // c is removed (omni nodes remove: its record stays, status left): its task is placed
      // elsewhere and its guard goes; a guard of no node at all goes too.
      expect(c.apply({ type: 'kv.put', key: schedNodeKey('gone'), value: '1' }).ok).toBe(true);
      expect(c.apply({ type: 'node.remove', id: 'c' }).ok).toBe(true);
      o.kick();
      await waitFor('3 tasks on the members', () => c.tasks().length === 3 && c.tasks().every((t) => t.nodeId !== 'c'), 5000, 10);
      await waitFor('the removed node\'s guard deleted', () => c.state.kvGet(schedNodeKey('c')) === undefined, 5000, 10);
      expect(c.state.kvGet(schedNodeKey('a'))).toBeDefined();
      expect(c.state.kvGet(schedNodeKey('b'))).toBeDefined();
      await waitFor('the guard of no node deleted', () => c.state.kvGet(schedNodeKey('gone')) === undefined, 5000, 10);
      const deletes = proposed.flatMap((p) => (p.type === 'kv.txn' ? p.ops.filter((op) => op.op === 'delete' && op.key.startsWith('sched/')).map((op) => op.key) : []));
      expect(new Set(deletes)).toEqual(new Set([schedNodeKey('c'), schedNodeKey('gone')]));
    } finally {
      o.stop();
    }
  });
});
