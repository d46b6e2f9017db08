// The agent's side of exclusive apps: an exclusive task starts only while the node holds a lease
// (a read barrier a quorum answered, less than a lease ago), stops once the lease lapses, starts
// again once it is renewed, and a stopped task is reported `released` once it cannot run again.
import { describe, expect, it } from 'vitest';
import { waitFor } from '../../node/local-cluster.js';
import { taskKey } from '../../protocol/apps/model.js';
import { agentWorld } from '../support/agent-world.js';

const LEASE_MS = 600;

function world(exclusive: boolean) {
  return agentWorld({ app: 'job', spec: { replicas: 1, exclusive }, leaseMs: LEASE_MS });
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
