// One app with one task placed on node `self`, applied straight into a ClusterState, and a real
// Agent driving a MockDriver: the harness of the agent's unit tests (jobs, exclusive leases).
import { Agent } from '../../node/apps/agent.js';
import { MockDriver } from '../../node/apps/drivers/mock.js';
import { silentLogger } from '../../node/logger.js';
import { ClusterState, encodeCommand, type Command } from '../../protocol/cluster/state.js';
import { parseRecord, specKey, statusKey, taskKey, type TaskRecord, type TaskStatusRecord } from '../../protocol/apps/model.js';
import { validateAppSpec } from '../../protocol/apps/spec.js';

export interface AgentWorldOptions {
  /** The app's name; its one task is `<app>-1`. */
  app: string;
  /** Spec fields beyond name/command/driver (type, replicas, exclusive…). */
  spec?: Record<string, unknown>;
  /** A status already recorded for the task (as after a restart of omnid). */
  status?: Partial<TaskStatusRecord>;
  leaseMs: number;
  /** GPUs of this node ('self') in its registration (none: the node is not registered). */
  nodeGpus?: number;
  /** Tasks of the app: `<app>-1` … `<app>-N` (default 1). */
  tasks?: number;
}

export function agentWorld(opts: AgentWorldOptions) {
  const state = new ClusterState();
  let index = 0;
  const apply = (cmd: Command) => state.apply(++index, encodeCommand(cmd));
  const v = validateAppSpec({ name: opts.app, command: ['work'], driver: 'mock', ...opts.spec });
  if (!v.ok) throw new Error(`bad spec: ${JSON.stringify(v)}`);
  apply({ type: 'kv.put', key: specKey(opts.app, 1), value: JSON.stringify(v.spec) });
  if (opts.nodeGpus !== undefined) {
    const gpus = Array.from({ length: opts.nodeGpus }, () => ({ model: 'test', memoryBytes: 2 ** 30 }));
    apply({ type: 'node.register', node: { id: 'self', name: 'self', addrs: [], apiUrl: 'http://127.0.0.1:1', resources: { cpuCores: 4, memoryBytes: 2 ** 33, diskBytes: 2 ** 36, arch: 'amd64', gpus }, labels: {} } });
  }
  const taskId = `${opts.app}-1`;
  const task: TaskRecord = { id: taskId, app: opts.app, version: 1, nodeId: 'self', hostPorts: [], desired: 'run', createdAtMs: 0, stopReason: '' };
  for (let i = 1; i <= (opts.tasks ?? 1); i++) apply({ type: 'kv.put', key: taskKey(`${opts.app}-${i}`), value: JSON.stringify({ ...task, id: `${opts.app}-${i}` }) });
  if (opts.status) {
    const status = { id: taskId, state: 'running', health: 'none', exitCode: null, reason: '', restarts: 0, startedAtMs: 5, updatedAtMs: 6, ...opts.status };
    apply({ type: 'kv.put', key: statusKey(taskId), value: JSON.stringify(status) });
  }
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
      exclusiveLeaseMs: opts.leaseMs,
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
  return {
    state,
    driver,
    agent,
    leases,
    taskId,
    status: () => parseRecord<TaskStatusRecord>(state.kvGet(statusKey(taskId))?.value),
    starts: () => driver.calls.filter((c) => c === `start ${taskId}`).length,
    setQuorum: (q: boolean) => (quorum = q),
    barriers: () => barriers,
    stopTask: () => apply({ type: 'kv.put', key: taskKey(taskId), value: JSON.stringify({ ...task, desired: 'stop', stopReason: 'test' }) }),
    stopTaskById: (id: string) => apply({ type: 'kv.put', key: taskKey(id), value: JSON.stringify({ ...task, id, desired: 'stop', stopReason: 'test' }) }),
    statusOf: (id: string) => parseRecord<TaskStatusRecord>(state.kvGet(statusKey(id))?.value),
  };
}
