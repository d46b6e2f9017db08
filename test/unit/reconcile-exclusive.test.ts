// Exclusive apps (spec.exclusive, at most once): a replacement is placed only once the task it
// replaces is released by its node or that node has been silent for twice the lease; updates
// and drains are stop-first; a stopped task is never garbage-collected while it may still run.
import { describe, expect, it } from 'vitest';
import { reconcileApp, type ReconcileInput } from '../../protocol/apps/reconcile.js';
import { SchedulerState, type SchedNode } from '../../protocol/apps/scheduler.js';
import { EXCLUSIVE_LEASE_MS, validateAppSpec, type AppSpec } from '../../protocol/apps/spec.js';
import type { AppRecord, TaskRecord, TaskStatusRecord } from '../../protocol/apps/model.js';

const GiB = 1024 ** 3;
const up: SchedNode[] = ['a', 'b', 'c'].map((id) => ({ id, name: id, status: 'up', arch: 'amd64', labels: {}, cpu: 4, memoryBytes: 8 * GiB, gpus: 0 }));
const aDown = up.map((n) => (n.id === 'a' ? { ...n, status: 'down' as const } : n));

function spec(over: Record<string, unknown> = {}): AppSpec {
  const r = validateAppSpec({ name: 'job', command: ['work'], replicas: 1, exclusive: true, ...over });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.spec;
}
const app = (over: Partial<AppRecord> = {}): AppRecord => ({ name: 'job', version: 1, previousVersion: 0, latestVersion: 1, state: 'running', deploy: { status: 'stable', fromVersion: 0, startedAtMs: 0, message: '' }, pending: '', events: [], ...over });
const task = (id: string, nodeId: string, over: Partial<TaskRecord> = {}): TaskRecord => ({ id, app: 'job', version: 1, nodeId, hostPorts: [], desired: 'run', createdAtMs: 0, stopReason: '', ...over });
const status = (id: string, over: Partial<TaskStatusRecord> = {}): TaskStatusRecord => ({ id, state: 'running', health: 'none', exitCode: null, reason: '', restarts: 0, startedAtMs: 0, updatedAtMs: 0, stable: true, ...over });

let seq = 0;
function input(a: AppRecord, specs: Map<number, AppSpec>, tasks: TaskRecord[], statuses: TaskStatusRecord[], nodes: SchedNode[], silentForMs: (id: string) => number): ReconcileInput {
  return { app: a, specs, tasks, statuses: new Map(statuses.map((s) => [s.id, s])), scheduler: new SchedulerState(nodes, []), nodes, volumePins: new Map(), nowMs: 10_000, newTaskId: () => `t${++seq}`, silentForMs };
}
const placed = (out: ReturnType<typeof reconcileApp>) => out.upserts.filter((t) => t.desired === 'run');

describe('exclusive apps: at most once', () => {
  it('validates the flag', () => {
    expect(spec().exclusive).toBe(true);
    expect(spec({ exclusive: false }).exclusive).toBeUndefined();
    const bad = validateAppSpec({ name: 'job', command: ['x'], exclusive: 'yes' });
    expect(bad.ok).toBe(false);
    if (!bad.ok) expect(bad.errors[0]).toMatchObject({ field: 'exclusive' });
  });

  it('a task on a node that went down is stopped, but its replacement waits for the node to be silent two leases', () => {
    const specs = new Map([[1, spec()]]);
    const t = task('old', 'a');
    const first = reconcileApp(input(app(), specs, [t], [status('old')], aDown, () => 3000));
    expect(first.upserts.find((x) => x.id === 'old')).toMatchObject({ desired: 'stop' });
    expect(placed(first)).toEqual([]);
    expect(first.app.pending).toMatch(/exclusive: waiting for task old on a to stop; its node is silent, its lease lapses in 17s/);
    const stopped = { ...t, desired: 'stop' as const, stopReason: 'node a is down' };
    // Not yet two leases: still nothing; and the stopped task is kept (not garbage-collected).
    const second = reconcileApp(input(first.app, specs, [stopped], [status('old')], aDown, () => 2 * EXCLUSIVE_LEASE_MS - 1));
    expect(placed(second)).toEqual([]);
    expect(second.deletes).toEqual([]);
    // Two leases of silence: the old task has stopped (its node's lease lapsed): replace it.
    const third = reconcileApp(input(second.app, specs, [stopped], [status('old')], aDown, () => 2 * EXCLUSIVE_LEASE_MS));
    expect(placed(third)).toHaveLength(1);
    expect(placed(third)[0].nodeId).not.toBe('a');
  });

  it('a task its node reports released is replaced at once', () => {
    const specs = new Map([[1, spec()]]);
    const stopped = task('old', 'a', { desired: 'stop', stopReason: 'failed: boom' });
    const notYet = reconcileApp(input(app(), specs, [stopped], [status('old', { state: 'failed' })], up, () => 0));
    expect(placed(notYet)).toEqual([]); // failed but not released: the agent has not seen the stop yet
    const released = reconcileApp(input(app(), specs, [stopped], [status('old', { state: 'failed', released: true })], up, () => 0));
    expect(placed(released)).toHaveLength(1);
  });

  it('without the leader knowing silences (silentForMs absent) only a release frees the slot', () => {
    const specs = new Map([[1, spec()]]);
    const stopped = task('old', 'a', { desired: 'stop', stopReason: 'node a is down' });
    const out = reconcileApp({ ...input(app(), specs, [stopped], [status('old')], aDown, () => 0), silentForMs: undefined });
    expect(placed(out)).toEqual([]);
  });

  it('a new version rolls stop-first: the old task stops, the new one starts once the old is released', () => {
    const specs = new Map([[1, spec()], [2, spec({ env: { V: '2' } })]]);
    const a = app({ version: 2, previousVersion: 1, latestVersion: 2 });
    const old = task('old', 'a');
    const first = reconcileApp(input(a, specs, [old], [status('old')], up, () => 0));
    expect(first.upserts.find((x) => x.id === 'old')).toMatchObject({ desired: 'stop', stopReason: 'replaced by version 2' });
    expect(placed(first)).toEqual([]);
    const stopped = { ...old, desired: 'stop' as const };
    const waiting = reconcileApp(input(first.app, specs, [stopped], [status('old', { state: 'exited' })], up, () => 0));
    expect(placed(waiting)).toEqual([]);
    const go = reconcileApp(input(first.app, specs, [stopped], [status('old', { state: 'exited', released: true })], up, () => 0));
    expect(placed(go)).toHaveLength(1);
    expect(placed(go)[0].version).toBe(2);
  });

  it('a non-exclusive app keeps replacing at once (start-first)', () => {
    const specs = new Map([[1, spec({ exclusive: false })]]);
    const out = reconcileApp(input(app(), specs, [task('old', 'a')], [status('old')], aDown, () => 0));
    expect(placed(out)).toHaveLength(1);
  });

  it('a draining node hands its exclusive task over stop-first', () => {
    const specs = new Map([[1, spec()]]);
    const draining = up.map((n) => (n.id === 'a' ? { ...n, draining: true, eligible: false } : n));
    const first = reconcileApp(input(app(), specs, [task('old', 'a')], [status('old')], draining, () => 0));
    expect(first.upserts.find((x) => x.id === 'old')).toMatchObject({ desired: 'stop' });
    expect(placed(first)).toEqual([]);
    const stopped = task('old', 'a', { desired: 'stop' });
    const go = reconcileApp(input(first.app, specs, [stopped], [status('old', { state: 'exited', released: true })], draining, () => 0));
    expect(placed(go)).toHaveLength(1);
    expect(placed(go)[0].nodeId).not.toBe('a');
  });

  it('an app being removed keeps its record until every task is released', () => {
    const specs = new Map([[1, spec()]]);
    const stopped = task('old', 'a', { desired: 'stop' });
    const waiting = reconcileApp(input(app({ state: 'removing' }), specs, [stopped], [status('old')], aDown, () => 0));
    expect(waiting.removeApp).toBe(false);
    const gone = reconcileApp(input(app({ state: 'removing' }), specs, [stopped], [status('old')], aDown, () => 2 * EXCLUSIVE_LEASE_MS));
    expect(gone.removeApp).toBe(true);
  });
});
