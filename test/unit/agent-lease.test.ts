// The agent's side of exclusive apps: an exclusive task starts only while the node holds a lease
// (a read barrier a quorum answered, less than a lease ago), stops once the lease lapses, starts
// again once it is renewed, and a stopped task is reported `released` once it cannot run again.
import { describe, expect, it } from 'vitest';
import { Agent } from '../../node/apps/agent.js';
import { MockDriver } from '../../node/apps/drivers/mock.js';
import { silentLogger } from '../../node/logger.js';
import { waitFor } from '../../node/local-cluster.js';
import { ClusterState, encodeCommand, type Command } from '../../protocol/cluster/state.js';
import { parseRecord, specKey, statusKey, taskKey, type TaskRecord, type TaskStatusRecord } from '../../protocol/apps/model.js';
import { validateAppSpec } from '../../protocol/apps/spec.js';

const LEASE_MS = 600;

function world(exclusive: boolean) {
  const state = new ClusterState();
  let index = 0;
  const apply = (cmd: Command) => state.apply(++index, encodeCommand(cmd));
  const v = validateAppSpec({ name: 'job', command: ['work'], driver: 'mock', replicas: 1, exclusive });
  if (!v.ok) throw new Error('bad spec');
  apply({ type: 'kv.put', key: specKey('job', 1), value: JSON.stringify(v.spec) });
  const task: TaskRecord = { id: 'job-1', app: 'job', version: 1, nodeId: 'self', hostPorts: [], desired: 'run', createdAtMs: 0, stopReason: '' };
  apply({ type: 'kv.put', key: taskKey(task.id), value: JSON.stringify(task) });
  const driver = new MockDriver();
  let quorum = true;
  let barriers = 0;
  const leases: number[] = [];
  const agent = new Agent(
    {
      id: 'self',
      log: silentLogger,
      raft: { state },
      dataDir: '/nonexistent',
      exclusiveLeaseMs: LEASE_MS,
      proposeOk: async (cmd) => void apply(cmd as Command),
      readBarrier: async () => {
        barriers++;
        await new Promise((r) => setTimeout(r, 5));
        if (!quorum) throw new Error('no quorum');
      },
      publishLease: (until) => void leases.push(until),
    },
    { mock: driver, process: driver, docker: driver },
  );
  const status = () => parseRecord<TaskStatusRecord>(state.kvGet(statusKey('job-1'))?.value);
  return {
    state, driver, agent, leases, status,
    setQuorum: (q: boolean) => (quorum = q),
    barriers: () => barriers,
    stopTask: () => apply({ type: 'kv.put', key: taskKey(task.id), value: JSON.stringify({ ...task, desired: 'stop', stopReason: 'test' }) }),
  };
}

describe('agent: exclusive tasks hold a lease', () => {
  it('an exclusive task stops when no quorum answers for a lease, and starts again once one does', async () => {
    const w = world(true);
    w.agent.start();
    try {
      await waitFor('the task to start', () => w.driver.running().includes('job-1'), 5000, 10);
      expect(w.leases.length).toBeGreaterThan(0);
      // The lease is renewed while the task runs.
      const renewals = w.leases.length;
      await waitFor('a renewal', () => w.leases.length > renewals, 5000, 10);
      expect(w.leases.at(-1)!).toBeGreaterThan(w.leases[renewals - 1]);
      w.setQuorum(false);
      await waitFor('the task to stop once the lease lapsed', () => !w.driver.running().includes('job-1'), 5000, 10);
      const lastLease = w.leases.at(-1)!;
      // It stopped after its last lease ran out, not before (the lease was valid until then).
      expect(performance.now()).toBeGreaterThanOrEqual(lastLease);
      await waitFor('the reason to be reported', () => /lease lapsed/.test(w.status()?.reason ?? ''), 5000, 10);
      w.agent.kick();
      await new Promise((r) => setTimeout(r, LEASE_MS));
      expect(w.driver.running()).not.toContain('job-1'); // no quorum: not started again
      w.setQuorum(true);
      await waitFor('the task to start again', () => w.driver.running().includes('job-1'), 5000, 10);
    } finally {
      w.agent.stop();
    }
  });

  it('an exclusive task never starts without a lease; a plain one does', async () => {
    const ex = world(true);
    ex.setQuorum(false);
    const plain = world(false);
    ex.agent.start();
    plain.agent.start();
    try {
      await new Promise((r) => setTimeout(r, 300));
      expect(ex.driver.calls.filter((c) => c.startsWith('start'))).toEqual([]);
      ex.setQuorum(true);
      await waitFor('the exclusive task to start with a lease', () => ex.driver.running().includes('job-1'), 5000, 10);
      // A plain task needs no lease: the agent's first barrier was enough; no renewals after it.
      await waitFor('the plain task to start', () => plain.driver.running().includes('job-1'), 5000, 10);
      const b = plain.barriers();
      await new Promise((r) => setTimeout(r, LEASE_MS));
      expect(plain.barriers()).toBe(b);
      expect(plain.leases.length).toBeLessThanOrEqual(1);
    } finally {
      ex.agent.stop();
      plain.agent.stop();
    }
  });

  it('a task stopped by the orchestrator is reported released once it no longer runs', async () => {
    const w = world(true);
    w.agent.start();
    try {
      await waitFor('the task to start', () => w.driver.running().includes('job-1'), 5000, 10);
      expect(w.status()?.released).toBeUndefined();
      // Its allocation epoch: the index of the entry that placed it.
      expect(w.driver.config('job-1')?.env.OMNI_TASK_EPOCH).toBe(String(w.state.kvGet(taskKey('job-1'))!.createIndex));
      expect(w.driver.config('job-1')?.exclusive).toBe(true);
      w.stopTask();
      w.agent.kick();
      await waitFor('released', () => w.status()?.released === true, 5000, 10);
      expect(w.driver.running()).not.toContain('job-1');
    } finally {
      w.agent.stop();
    }
  });
});
