// The agent's side of jobs: a job task runs once on its node. It is never restarted in place
// (exit 0 or not), and a job task that already ran is never started again — not after omnid
// restarts with its process gone, not after an exclusive job's lease lapsed.
import { describe, expect, it } from 'vitest';
import { Agent } from '../../node/apps/agent.js';
import { MockDriver } from '../../node/apps/drivers/mock.js';
import { silentLogger } from '../../node/logger.js';
import { waitFor } from '../../node/local-cluster.js';
import { ClusterState, encodeCommand, type Command } from '../../protocol/cluster/state.js';
import { parseRecord, specKey, statusKey, taskKey, type TaskRecord, type TaskStatusRecord } from '../../protocol/apps/model.js';
import { validateAppSpec } from '../../protocol/apps/spec.js';

const LEASE_MS = 600;

function world(opts: { exclusive?: boolean; status?: Partial<TaskStatusRecord> } = {}) {
  const state = new ClusterState();
  let index = 0;
  const apply = (cmd: Command) => state.apply(++index, encodeCommand(cmd));
  const v = validateAppSpec({ name: 'batch', type: 'job', command: ['work'], driver: 'mock', exclusive: opts.exclusive === true });
  if (!v.ok) throw new Error('bad spec');
  apply({ type: 'kv.put', key: specKey('batch', 1), value: JSON.stringify(v.spec) });
  const task: TaskRecord = { id: 'batch-1', app: 'batch', version: 1, nodeId: 'self', hostPorts: [], desired: 'run', createdAtMs: 0, stopReason: '' };
  apply({ type: 'kv.put', key: taskKey(task.id), value: JSON.stringify(task) });
  if (opts.status) apply({ type: 'kv.put', key: statusKey(task.id), value: JSON.stringify({ id: task.id, state: 'running', health: 'none', exitCode: null, reason: '', restarts: 0, startedAtMs: 5, updatedAtMs: 6, ...opts.status }) });
  const driver = new MockDriver();
  let quorum = true;
  const agent = new Agent(
    {
      id: 'self',
      log: silentLogger,
      raft: { state },
      dataDir: '/nonexistent',
      exclusiveLeaseMs: LEASE_MS,
      proposeOk: async (cmd) => void apply(cmd as Command),
      readBarrier: async () => {
        await new Promise((r) => setTimeout(r, 5));
        if (!quorum) throw new Error('no quorum');
      },
      publishLease: () => undefined,
    },
    { mock: driver, process: driver, docker: driver },
  );
  const status = () => parseRecord<TaskStatusRecord>(state.kvGet(statusKey('batch-1'))?.value);
  const starts = () => driver.calls.filter((c) => c === 'start batch-1').length;
  return { driver, agent, status, starts, setQuorum: (q: boolean) => (quorum = q) };
}

describe('agent: job tasks run once', () => {
  it('exit 0 is reported exited (succeeded) and never restarted; a failure is reported failed, not restarted in place', async () => {
    for (const code of [0, 2]) {
      const w = world();
      w.agent.start();
      try {
        await waitFor('the task to start', () => w.driver.running().includes('batch-1'), 5000, 10);
        w.driver.crash('batch-1', code);
        w.agent.kick();
        await waitFor('the exit reported', () => w.status()?.exitCode === code, 5000, 10);
        expect(w.status()?.state).toBe(code === 0 ? 'exited' : 'failed');
        w.agent.kick();
        await new Promise((r) => setTimeout(r, 300));
        expect(w.starts()).toBe(1);
      } finally {
        w.agent.stop();
      }
    }
  });

  it('after a restart with its process gone, a job task that was running is reported failed and not started again', async () => {
    const w = world({ status: { state: 'running' } });
    w.agent.start();
    try {
      await waitFor('reported failed', () => w.status()?.state === 'failed', 5000, 10);
      expect(w.status()?.cause).toMatch(/disappeared/);
      await new Promise((r) => setTimeout(r, 300));
      expect(w.starts()).toBe(0);
    } finally {
      w.agent.stop();
    }
  });

  it('after a restart, a job task that succeeded keeps its exit and is not started again', async () => {
    const w = world({ status: { state: 'exited', exitCode: 0 } });
    w.agent.start();
    try {
      await new Promise((r) => setTimeout(r, 400));
      expect(w.starts()).toBe(0);
      expect(w.status()).toMatchObject({ state: 'exited', exitCode: 0 });
    } finally {
      w.agent.stop();
    }
  });

  it('a job task that never started (status pending) starts normally', async () => {
    const w = world({ status: { state: 'pending', startedAtMs: 0 } });
    w.agent.start();
    try {
      await waitFor('the task to start', () => w.driver.running().includes('batch-1'), 5000, 10);
    } finally {
      w.agent.stop();
    }
  });

  it('an exclusive job task stopped for a lapsed lease ends failed and does not start again when the quorum is back', async () => {
    const w = world({ exclusive: true });
    w.agent.start();
    try {
      await waitFor('the task to start', () => w.driver.running().includes('batch-1'), 5000, 10);
      w.setQuorum(false);
      await waitFor('the task to stop once the lease lapsed', () => !w.driver.running().includes('batch-1'), 5000, 10);
      w.setQuorum(true);
      await waitFor('reported failed', () => w.status()?.state === 'failed', 5000, 10);
      expect(w.status()?.cause).toMatch(/lease lapsed/);
      w.agent.kick();
      await new Promise((r) => setTimeout(r, LEASE_MS));
      expect(w.starts()).toBe(1);
    } finally {
      w.agent.stop();
    }
  });
});
