import { describe, expect, it } from 'vitest';
import { reconcileApp, rescheduleDelayMs, type ReconcileInput } from '../../protocol/apps/reconcile.js';
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
  return { id, state: 'running', health: 'healthy', exitCode: null, reason: '', restarts: 0, startedAtMs: 0, updatedAtMs: 0, stable: true, ...over };
}

describe('reconcileApp', () => {
  it('places missing replicas one per node with anti-affinity', () => {
    const out = reconcileApp(input(app(), new Map([[1, spec()]]), []));
    expect(out.upserts.map((t) => t.nodeId).sort()).toEqual(['a', 'b', 'c']);
    expect(out.app.pending).toBe('');
  });

  it('global: one task on every node that is up and fits; a node going down takes its task along, a new node gets one', () => {
    const g = (over: Record<string, unknown> = {}) => {
      const { replicas: _r, antiAffinity: _a, ...rest } = { replicas: 0, antiAffinity: false, ...over };
      const r = validateAppSpec({ name: 'web', command: ['srv'], ports: [{ name: 'http', port: 80 }], mode: 'global', healthCheck: { type: 'http', port: 'http' }, ...rest });
      if (!r.ok) throw new Error(JSON.stringify(r.errors));
      return r.spec;
    };
    expect(g()).toMatchObject({ mode: 'global', antiAffinity: true });
    const first = reconcileApp(input(app(), new Map([[1, g()]]), []));
    expect(first.upserts.map((t) => t.nodeId).sort()).toEqual(['a', 'b', 'c']);
    // c goes down: its task stops, nothing replaces it, the others stay
    const tasks = [task('x', 'a'), task('y', 'b'), task('z', 'c')];
    const down = nodes.map((n) => (n.id === 'c' ? { ...n, status: 'down' as const } : n));
    const out = reconcileApp(input(app(), new Map([[1, g()]]), tasks, tasks.map((t) => status(t.id)), down));
    expect(out.upserts.map((t) => [t.id, t.desired])).toEqual([['z', 'stop']]);
    // a fourth node joins: it gets one
    const more = [...nodes, { ...nodes[0], id: 'd', name: 'd' }];
    const held = tasks.map((t) => ({ id: t.id, app: t.app, version: t.version, nodeId: t.nodeId, cpu: 0.1, memoryBytes: 64 * 1024 ** 2, gpus: 0, hostPorts: t.hostPorts }));
    const grown = reconcileApp({ ...input(app(), new Map([[1, g()]]), tasks, tasks.map((t) => status(t.id)), more), scheduler: new SchedulerState(more, held) });
    expect(grown.upserts.map((t) => [t.nodeId, t.desired])).toEqual([['d', 'run']]);
    // a node made ineligible: its task is the one stopped, not a task of a node that stays
    const inel = nodes.map((n) => (n.id === 'a' ? { ...n, eligible: false } : n));
    const newer = tasks.map((t) => ({ ...t, createdAtMs: t.nodeId === 'a' ? 1 : 5 }));
    const shrunk = reconcileApp(input(app(), new Map([[1, g()]]), newer, newer.map((t) => status(t.id)), inel));
    expect(shrunk.upserts.map((t) => [t.nodeId, t.desired])).toEqual([['a', 'stop']]);
    // constraints pick the nodes; a draining or ineligible node has none
    const labelled = nodes.map((n) => ({ ...n, labels: { gpu: n.id === 'c' ? 'no' : 'yes' }, ...(n.id === 'b' ? { draining: true } : {}) }));
    const some = reconcileApp(input(app(), new Map([[1, g({ constraints: ['label.gpu==yes'] })]]), [], [], labelled));
    expect(some.upserts.map((t) => t.nodeId)).toEqual(['a']);
    expect(validateAppSpec({ name: 'w', command: ['x'], mode: 'global', replicas: 2 })).toMatchObject({ ok: false, errors: [{ field: 'replicas' }] });
    expect(validateAppSpec({ name: 'w', command: ['x'], mode: 'global', type: 'job' })).toMatchObject({ ok: false, errors: [{ field: 'mode' }] });
    expect(validateAppSpec({ name: 'w', command: ['x'], mode: 'global', volumes: [{ name: 'data', path: '/data' }] })).toMatchObject({ ok: false, errors: [{ field: 'volumes' }] });
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

  it('a health deadline counts the time the leader has known the task, not wall-clock differences (a stepped clock rolls nothing back)', () => {
    const specs = new Map([[1, spec()], [2, spec({ env: { V: '2' } })]]);
    // The new task was placed at wall time 9,000 by a leader; this leader's clock reads 60 s later.
    const tasks = [task('o1', 'a'), task('o2', 'b'), task('o3', 'c'), task('n1', 'a', 2, { createdAtMs: 9000 })];
    const statuses = [status('o1'), status('o2'), status('o3'), status('n1', { stable: false, health: 'starting' })];
    const deploying = app({ version: 2, previousVersion: 1, latestVersion: 2, deploy: { status: 'deploying', fromVersion: 1, startedAtMs: 0, message: '' } });
    const stepped = { ...input(deploying, specs, tasks, statuses), nowMs: 69_000 };
    expect(reconcileApp(stepped).app.deploy.status).toBe('rolled-back'); // by wall clocks alone: "late"
    const known5s = reconcileApp({ ...stepped, taskAgeMs: () => 5_000 });
    expect(known5s.app.version).toBe(2);
    expect(known5s.app.deploy.status).toBe('deploying');
    const known31s = reconcileApp({ ...stepped, taskAgeMs: () => 31_000 });
    expect(known31s.app.deploy.status).toBe('rolled-back'); // really late: still rolled back
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

  it('a new task that serves but is not yet stable (update.minHealthyMs) replaces no old task', () => {
    const specs = new Map([[1, spec()], [2, spec({ env: { V: '2' } })]]);
    const old = [task('o1', 'a'), task('o2', 'b'), task('o3', 'c')];
    const a = app({ version: 2, previousVersion: 1, latestVersion: 2, deploy: { status: 'deploying', fromVersion: 1, startedAtMs: 0, message: '' } });
    const fresh = task('n1', 'a', 2, { createdAtMs: 9000 });
    const out = reconcileApp(input(a, specs, [...old, fresh], [...old.map((t) => status(t.id)), status('n1', { stable: false })]));
    expect(out.upserts.filter((t) => t.desired === 'stop')).toEqual([]);
    expect(out.upserts.filter((t) => t.desired === 'run')).toEqual([]); // parallel 1: n1 is still in flight
  });

  it('rolls back with the first failure cause (the health check), not the SIGTERM that followed', () => {
    const specs = new Map([[1, spec()], [2, spec({ env: { V: '2' } })]]);
    const tasks = [task('o1', 'a'), task('o2', 'b'), task('o3', 'c'), task('n1', 'a', 2, { createdAtMs: 9000 })];
    const killed = status('n1', { state: 'exited', health: 'none', reason: 'ended (signal SIGTERM); restarting in 1000 ms', cause: 'health check got HTTP 404 on /healthz', stable: false });
    const out = reconcileApp(input(app({ version: 2, previousVersion: 1, latestVersion: 2, deploy: { status: 'deploying', fromVersion: 1, startedAtMs: 0, message: '' } }), specs, tasks, [status('o1'), status('o2'), status('o3'), killed]));
    expect(out.app.deploy.status).toBe('rolled-back');
    expect(out.app.deploy.message).toBe('task n1 on a: health check got HTTP 404 on /healthz');
    expect(out.app.events.at(-1)!.message).toMatch(/rolled back to version 1: task n1 on a: health check got HTTP 404 on \/healthz$/);
    expect(out.upserts.find((t) => t.id === 'n1')?.stopReason).toMatch(/health check got HTTP 404/);
    expect(JSON.stringify(out.app)).not.toMatch(/SIGTERM/);
  });

  describe('replacing failed tasks: backoff and the terminal failed state', () => {
    const resched = { attempts: 2, delayMs: 1000, maxDelayMs: 60_000 };
    const one = () => new Map([[1, spec({ replicas: 1, reschedule: resched })]]);
    const notFound = (id: string) => status(id, { state: 'failed', health: 'none', reason: 'command not found: foo; not restarted on this node', cause: 'command not found: foo', stable: false });

    it('the delay doubles per consecutive failure, capped at maxDelayMs', () => {
      const r = { attempts: 10, delayMs: 1000, maxDelayMs: 5000 };
      expect([0, 1, 2, 3, 4, 5, 60].map((n) => rescheduleDelayMs(n, r))).toEqual([0, 1000, 2000, 4000, 5000, 5000, 5000]);
    });

    it('a failed task is stopped, and its replacement waits out the backoff on another node', () => {
      const t1 = task('x', 'a');
      const first = reconcileApp(input(app(), one(), [t1], [notFound('x')], nodes, 10_000));
      expect(first.upserts).toMatchObject([{ id: 'x', desired: 'stop', stopReason: 'failed: command not found: foo' }]);
      expect(first.app.failures).toMatchObject({ count: 1, notBeforeMs: 11_000, recent: [{ nodeId: 'a', cause: 'command not found: foo' }] });
      expect(first.app.pending).toMatch(/after a 1s backoff .*command not found: foo on a/);
      const stopped = first.upserts;
      const early = reconcileApp(input(first.app, one(), stopped, [notFound('x')], nodes, 10_500));
      expect(early.upserts.filter((t) => t.desired === 'run')).toEqual([]);
      const later = reconcileApp(input(first.app, one(), stopped, [notFound('x')], nodes, 11_000));
      const placed = later.upserts.filter((t) => t.desired === 'run');
      expect(placed).toHaveLength(1);
      expect(placed[0].nodeId).not.toBe('a'); // where it just failed
    });

    it('past reschedule.attempts the app turns failed, naming the cause and the nodes, and places nothing more', () => {
      let a = app();
      let tasks: TaskRecord[] = [];
      const statuses: TaskStatusRecord[] = [];
      let now = 10_000;
      const nodesTried: string[] = [];
      for (let round = 0; round < 20 && a.state === 'running'; round++) {
        const out = reconcileApp(input(a, one(), tasks, statuses, nodes, now));
        a = out.app;
        tasks = [...tasks.filter((t) => !out.upserts.some((u) => u.id === t.id)), ...out.upserts];
        for (const t of out.upserts.filter((u) => u.desired === 'run')) {
          nodesTried.push(t.nodeId);
          statuses.push(notFound(t.id)); // every placement fails to start
        }
        now += 60_000;
      }
      expect(a.state).toBe('failed');
      expect(a.failedReason).toBe('command not found: foo on a, b, c');
      expect(nodesTried.sort()).toEqual(['a', 'b', 'c']); // 1 + attempts tasks in all, each on another node
      expect(a.events.some((e) => /app failed after 3 failed tasks .*command not found: foo on a, b, c/.test(e.message))).toBe(true);
      const after = reconcileApp(input(a, one(), tasks, statuses, nodes, now + 3_600_000));
      expect(after.upserts.filter((t) => t.desired === 'run')).toEqual([]);
      expect(after.app.state).toBe('failed');
    });

    it('a failed app leaves its tasks that still serve running', () => {
      const tasks = [task('x', 'a'), task('y', 'b')];
      const out = reconcileApp(input(app({ state: 'failed', failedReason: 'x' }), new Map([[1, spec({ replicas: 2 })]]), tasks, [status('x'), notFound('y')]));
      expect(out.upserts).toMatchObject([{ id: 'y', desired: 'stop' }]);
      expect(out.app.failures).toBeUndefined(); // failures after giving up are not counted again
    });

    it('the streak ends once every replica runs stable', () => {
      const a = app({ failures: { count: 2, notBeforeMs: 0, recent: [{ nodeId: 'a', node: 'a', cause: 'x', atMs: 0 }] } });
      const running = reconcileApp(input(a, one(), [task('x', 'b')], [status('x', { stable: false })]));
      expect(running.app.failures?.count).toBe(2);
      const stable = reconcileApp(input(a, one(), [task('x', 'b')], [status('x')]));
      expect(stable.app.failures).toBeUndefined();
    });

    it('a task that could not start because another process holds its port is replaced without counting as a failure', () => {
      const busy = status('x', { state: 'failed', health: 'none', cause: 'port 20000 is already in use on this host', portsInUse: [20000], stable: false });
      const out = reconcileApp(input(app(), one(), [task('x', 'a')], [busy]));
      expect(out.app.failures).toBeUndefined();
      expect(out.upserts.filter((t) => t.desired === 'run')).toHaveLength(1);
    });
  });

  describe('node eligibility', () => {
    it('places nothing on an ineligible node', () => {
      const list = nodes.map((n) => (n.id === 'c' ? { ...n, eligible: false } : n));
      const out = reconcileApp(input(app(), new Map([[1, spec()]]), [], [], list));
      expect(out.upserts.map((t) => t.nodeId).sort()).toEqual(['a', 'b']);
      expect(out.app.pending).toMatch(/1 replica\(s\) pending: .*not eligible/);
    });

    it('moves the tasks off a draining node start-first: the old one stops once its replacement is stable', () => {
      const list = nodes.map((n) => (n.id === 'c' ? { ...n, eligible: false, draining: true } : n));
      const specs = new Map([[1, spec({ antiAffinity: false })]]);
      const tasks = [task('x', 'a'), task('y', 'b'), task('z', 'c')];
      const first = reconcileApp(input(app(), specs, tasks, tasks.map((t) => status(t.id)), list));
      expect(first.upserts.filter((t) => t.desired === 'stop')).toEqual([]);
      const placed = first.upserts.filter((t) => t.desired === 'run');
      expect(placed).toHaveLength(1);
      expect(placed[0].nodeId).not.toBe('c');
      const all = [...tasks, ...placed];
      const notYet = reconcileApp(input(first.app, specs, all, [...tasks.map((t) => status(t.id)), status(placed[0].id, { stable: false })], list));
      expect(notYet.upserts).toEqual([]);
      const done = reconcileApp(input(first.app, specs, all, all.map((t) => status(t.id)), list));
      expect(done.upserts).toMatchObject([{ id: 'z', desired: 'stop', stopReason: 'node c is draining' }]);
    });
  });
});
