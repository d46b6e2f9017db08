import { describe, expect, it } from 'vitest';
import { reconcileApp, type ReconcileInput } from '../../protocol/apps/reconcile.js';
import { SchedulerState, type SchedNode } from '../../protocol/apps/scheduler.js';
import { validateAppSpec, type AppSpec } from '../../protocol/apps/spec.js';
import type { AppRecord, TaskRecord, TaskStatusRecord } from '../../protocol/apps/model.js';

const GiB = 1024 ** 3;
const nodes: SchedNode[] = ['a', 'b', 'c'].map((id) => ({ id, name: id, status: 'up', arch: 'amd64', labels: {}, cpu: 4, memoryBytes: 8 * GiB, gpus: 0 }));

function spec(over: Record<string, unknown> = {}): AppSpec {
  const r = validateAppSpec({ name: 'web', command: ['srv'], ports: [{ name: 'http', port: 80 }], replicas: 3, antiAffinity: true, healthCheck: { type: 'http', port: 'http' }, ...over });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.spec;
}

function app(over: Partial<AppRecord> = {}): AppRecord {
  return { name: 'web', version: 1, previousVersion: 0, latestVersion: 1, state: 'running', deploy: { status: 'stable', fromVersion: 0, startedAtMs: 0, message: '' }, pending: '', events: [], ...over };
}

let seq = 0;
function input(a: AppRecord, specs: Map<number, AppSpec>, tasks: TaskRecord[], statuses: TaskStatusRecord[] = [], nodeList = nodes, nowMs = 10_000): ReconcileInput {
  return { app: a, specs, tasks, statuses: new Map(statuses.map((s) => [s.id, s])), scheduler: new SchedulerState(nodeList, []), nodes: nodeList, volumePins: new Map(), nowMs, newTaskId: () => `t${++seq}` };
}

function task(id: string, nodeId: string, version = 1, over: Partial<TaskRecord> = {}): TaskRecord {
  return { id, app: 'web', version, nodeId, hostPorts: [20000], desired: 'run', createdAtMs: 0, stopReason: '', ...over };
}

function status(id: string, over: Partial<TaskStatusRecord> = {}): TaskStatusRecord {
  return { id, state: 'running', health: 'healthy', exitCode: null, reason: '', restarts: 0, startedAtMs: 0, updatedAtMs: 0, ...over };
}

describe('reconcileApp', () => {
  it('places missing replicas one per node with anti-affinity', () => {
    const out = reconcileApp(input(app(), new Map([[1, spec()]]), []));
    expect(out.upserts.map((t) => t.nodeId).sort()).toEqual(['a', 'b', 'c']);
    expect(out.app.pending).toBe('');
  });

  it('replaces the tasks of a node that is down', () => {
    const down = nodes.map((n) => (n.id === 'c' ? { ...n, status: 'down' as const } : n));
    const tasks = [task('x', 'a'), task('y', 'b'), task('z', 'c')];
    const out = reconcileApp(input(app({}), new Map([[1, spec({ antiAffinity: false })]]), tasks, tasks.map((t) => status(t.id)), down));
    expect(out.upserts.find((t) => t.id === 'z')).toMatchObject({ desired: 'stop', stopReason: 'node c is down' });
    const placed = out.upserts.filter((t) => t.desired === 'run');
    expect(placed).toHaveLength(1);
    expect(placed[0].nodeId).not.toBe('c');
  });

  it('rolls forward: one new task at a time, an old one stops for each healthy new one', () => {
    const specs = new Map([[1, spec()], [2, spec({ env: { V: '2' } })]]);
    const old = [task('o1', 'a'), task('o2', 'b'), task('o3', 'c')];
    const a = app({ version: 2, previousVersion: 1, latestVersion: 2 });
    const first = reconcileApp(input(a, specs, old, old.map((t) => status(t.id))));
    expect(first.app.deploy.status).toBe('deploying');
    const placed = first.upserts.filter((t) => t.version === 2 && t.desired === 'run');
    expect(placed).toHaveLength(1); // parallel: 1
    expect(first.upserts.filter((t) => t.desired === 'stop')).toEqual([]); // nothing new is healthy yet
    // Next round: the new task is healthy → one old task stops and the next new one is placed.
    const tasks2 = [...old, ...placed];
    const second = reconcileApp(input(first.app, specs, tasks2, [...old.map((t) => status(t.id)), status(placed[0].id)]));
    expect(second.upserts.filter((t) => t.desired === 'stop')).toHaveLength(1);
    expect(second.upserts.filter((t) => t.desired === 'run' && t.version === 2)).toHaveLength(1);
  });

  it('rolls back when a new task fails its health check', () => {
    const specs = new Map([[1, spec()], [2, spec({ env: { V: '2' } })]]);
    const tasks = [task('o1', 'a'), task('o2', 'b'), task('o3', 'c'), task('n1', 'a', 2, { createdAtMs: 9000 })];
    const statuses = [status('o1'), status('o2'), status('o3'), status('n1', { health: 'unhealthy', reason: 'HTTP 500' })];
    const out = reconcileApp(input(app({ version: 2, previousVersion: 1, latestVersion: 2, deploy: { status: 'deploying', fromVersion: 1, startedAtMs: 0, message: '' } }), specs, tasks, statuses));
    expect(out.app.version).toBe(1);
    expect(out.app.deploy.status).toBe('rolled-back');
    expect(out.app.deploy.message).toMatch(/health check/);
    expect(out.upserts.find((t) => t.id === 'n1')?.desired).toBe('stop');
    expect(out.upserts.filter((t) => t.id.startsWith('o'))).toEqual([]);
  });

  it('leaves replicas pending with the scheduler reason', () => {
    const out = reconcileApp(input(app(), new Map([[1, spec({ resources: { cpu: 0.1, memoryMB: 64, gpus: 4 } })]]), []));
    expect(out.upserts).toEqual([]);
    expect(out.app.pending).toMatch(/4 GPU/);
  });

  it('stops everything when the app is stopped, and deletes its records once removed', () => {
    const tasks = [task('x', 'a')];
    const stopped = reconcileApp(input(app({ state: 'stopped' }), new Map([[1, spec()]]), tasks, [status('x')]));
    expect(stopped.upserts).toMatchObject([{ id: 'x', desired: 'stop' }]);
    const removed = reconcileApp(input(app({ state: 'removing' }), new Map([[1, spec()]]), [task('x', 'a', 1, { desired: 'stop' })], [status('x', { state: 'exited' })]));
    expect(removed.deletes).toEqual(['x']);
    expect(removed.removeApp).toBe(true);
  });
});
