// GPUs: the scheduler reserves a count per node; the node's agent gives each task devices no other
// task of the node holds (lowest indices first), passes them to the driver, and frees them when
// the task ends. Without enough free devices the task does not start, with the reason.
import { describe, expect, it } from 'vitest';
import { waitFor } from '../../node/local-cluster.js';
import { assignGpus } from '../../protocol/apps/gpu-assign.js';
import { agentWorld } from '../support/agent-world.js';

describe('assignGpus', () => {
  it('lowest free indices; undefined when too few are free', () => {
    expect(assignGpus(1, 2, [])).toEqual([0]);
    expect(assignGpus(2, 4, [0, 2])).toEqual([1, 3]);
    expect(assignGpus(1, 2, [0, 1])).toBeUndefined();
    expect(assignGpus(3, 2, [])).toBeUndefined();
    expect(assignGpus(0, 0, [])).toEqual([]);
  });
});

describe('agent: GPUs', () => {
  it('tasks of one node get different GPUs; one more than the node has waits with the reason', async () => {
    const w = agentWorld({ app: 'train', spec: { resources: { gpus: 1 } }, leaseMs: 600, nodeGpus: 2, tasks: 3 });
    w.agent.start();
    try {
      await waitFor('two tasks running', () => (w.driver.running().length === 2 ? true : undefined), 5000, 10);
      const held = w.driver.running().map((id) => w.driver.config(id)?.gpus);
      expect(held.sort()).toEqual([[0], [1]]);
      const waiting = ['train-1', 'train-2', 'train-3'].find((id) => !w.driver.running().includes(id))!;
      await waitFor('the third reports why', () => (w.statusOf(waiting)?.reason.includes('GPU') ? true : undefined), 5000, 10);
      expect(w.statusOf(waiting)).toMatchObject({ state: 'pending', restarts: 0 });
      expect(w.statusOf(waiting)?.reason).toMatch(/waiting for GPUs: needs 1 GPU\(s\), 2 on this node, 2 held by other tasks/);
      // one ends: its GPU goes to the waiting task
      const first = w.driver.running()[0];
      const freed = w.driver.config(first)!.gpus!;
      w.driver.crash(first, 0);
      w.stopTaskById(first);
      w.agent.kick();
      await waitFor('the third starts', () => (w.driver.running().includes(waiting) ? true : undefined), 10_000, 10);
      expect(w.driver.config(waiting)?.gpus).toEqual(freed);
    } finally {
      w.agent.stop();
    }
  });

  it('a node without GPUs does not start a task that needs one', async () => {
    const w = agentWorld({ app: 'train', spec: { resources: { gpus: 1 } }, leaseMs: 600 });
    w.agent.start();
    try {
      await waitFor('the reason', () => (w.status()?.reason.includes('GPU') ? true : undefined), 5000, 10);
      expect(w.status()?.reason).toMatch(/waiting for GPUs: needs 1 GPU\(s\), 0 on this node/);
      expect(w.starts()).toBe(0);
    } finally {
      w.agent.stop();
    }
  });
});
