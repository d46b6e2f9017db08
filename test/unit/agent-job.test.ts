// The agent's side of jobs: a job task runs once on its node. It is never restarted in place
// (exit 0 or not), and a job task that already ran is never started again — not after omnid
// restarts with its process gone, not after an exclusive job's lease lapsed.
import { describe, expect, it } from 'vitest';
import { waitFor } from '../../node/local-cluster.js';
import type { TaskStatusRecord } from '../../protocol/apps/model.js';
import { agentWorld } from '../support/agent-world.js';

const LEASE_MS = 600;

function world(opts: { exclusive?: boolean; status?: Partial<TaskStatusRecord> } = {}) {
  return agentWorld({ app: 'batch', spec: { type: 'job', exclusive: opts.exclusive === true }, status: opts.status, leaseMs: LEASE_MS });
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

  it("a task is stopped with its spec's stopTimeoutMs (Compose's stop_grace_period), else 5 s", async () => {
    for (const [spec, want] of [[{ stopTimeoutMs: 42_000 }, 42_000], [{}, 5000]] as const) {
      const w = agentWorld({ app: 'svc', spec, leaseMs: LEASE_MS });
      w.agent.start();
      try {
        await waitFor('the task to start', () => w.driver.running().includes('svc-1'), 5000, 10);
        w.stopTask();
        w.agent.kick();
        await waitFor('the task stopped', () => w.driver.stopTimeouts.has('svc-1'), 5000, 10);
        expect(w.driver.stopTimeouts.get('svc-1')).toBe(want);
      } finally {
        w.agent.stop();
      }
    }
  });
});
