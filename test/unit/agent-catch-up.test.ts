// An agent that starts (or restarts) does not act on its replica before a read barrier has
// made it catch up with the leader: until then it starts, stops and reports nothing.
import { describe, expect, it } from 'vitest';
import { Agent } from '../../node/apps/agent.js';
import { MockDriver } from '../../node/apps/drivers/mock.js';
import { silentLogger } from '../../node/logger.js';
import { waitFor } from '../../node/local-cluster.js';
import { ClusterState, encodeCommand } from '../../protocol/cluster/state.js';
import { specKey, taskKey, type TaskRecord } from '../../protocol/apps/model.js';
import { validateAppSpec } from '../../protocol/apps/spec.js';

function stateWithTaskOn(nodeId: string): ClusterState {
  const s = new ClusterState();
  const v = validateAppSpec({ name: 'web', image: 'x/web:1', driver: 'mock', replicas: 1 });
  if (!v.ok) throw new Error('bad spec');
  const task: TaskRecord = { id: 'web-1', app: 'web', version: 1, nodeId, hostPorts: [], desired: 'run', createdAtMs: 0, stopReason: '' };
  s.apply(1, encodeCommand({ type: 'kv.put', key: specKey('web', 1), value: JSON.stringify(v.spec) }));
  s.apply(2, encodeCommand({ type: 'kv.put', key: taskKey('web-1'), value: JSON.stringify(task) }));
  return s;
}

describe('agent start-up', () => {
  it('waits for the read barrier before its first round, then runs what is placed here', async () => {
    const state = stateWithTaskOn('self');
    const driver = new MockDriver();
    let release!: () => void;
    const barrier = new Promise<void>((r) => (release = r));
    const reports: unknown[] = [];
    const agent = new Agent(
      { id: 'self', log: silentLogger, raft: { state }, dataDir: '/nonexistent', proposeOk: async (cmd) => void reports.push(cmd), readBarrier: () => barrier },
      { mock: driver, process: driver, docker: driver },
    );
    agent.start();
    await new Promise((r) => setTimeout(r, 300));
    agent.kick();
    await new Promise((r) => setTimeout(r, 100));
    expect(driver.calls).toEqual([]);
    expect(reports).toEqual([]);
    release();
    await waitFor('the task to start after the barrier', () => driver.running().includes('web-1'), 5000, 20);
    agent.stop();
  });

  it('a barrier that fails (no quorum) leaves everything alone and is tried again', async () => {
    const state = stateWithTaskOn('self');
    const driver = new MockDriver();
    let attempts = 0;
    const agent = new Agent(
      { id: 'self', log: silentLogger, raft: { state }, dataDir: '/nonexistent', proposeOk: async () => undefined, readBarrier: async () => {
        attempts++;
        if (attempts < 3) throw new Error('no quorum');
      } },
      { mock: driver, process: driver, docker: driver },
    );
    agent.start();
    await waitFor('the task to start once a barrier succeeds', () => driver.running().includes('web-1'), 10_000, 50);
    expect(attempts).toBeGreaterThanOrEqual(3);
    expect(driver.calls.filter((c) => c.startsWith('start'))).toEqual(['start web-1']);
    agent.stop();
  });
});
