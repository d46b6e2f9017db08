import { describe, expect, it } from 'vitest';
import { JOB_SUCCEEDED, reconcileApp, type ReconcileInput } from '../../protocol/apps/reconcile.js';
import { SchedulerState, type SchedNode } from '../../protocol/apps/scheduler.js';
import { validateAppSpec, type AppSpec } from '../../protocol/apps/spec.js';
import { jobPhase, type AppRecord, type TaskRecord, type TaskStatusRecord } from '../../protocol/apps/model.js';

const GiB = 1024 ** 3;
const nodes: SchedNode[] = ['a', 'b', 'c'].map((id) => ({ id, name: id, status: 'up', arch: 'amd64', labels: {}, cpu: 4, memoryBytes: 8 * GiB, gpus: 0 }));

function spec(over: Record<string, unknown> = {}): AppSpec {
  const r = validateAppSpec({ name: 'batch', command: ['sh', '-c', 'exit 0'], type: 'job', ...over });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.spec;
}

function app(over: Partial<AppRecord> = {}): AppRecord {
  return { name: 'batch', version: 1, previousVersion: 0, latestVersion: 1, state: 'running', deploy: { status: 'stable', fromVersion: 0, startedAtMs: 0, message: '' }, pending: '', events: [], ...over };
}

let seq = 0;
function input(a: AppRecord, specs: Map<number, AppSpec>, tasks: TaskRecord[], statuses: TaskStatusRecord[] = [], nowMs = 10_000, nodeList = nodes): ReconcileInput {
  return { app: a, specs, tasks, statuses: new Map(statuses.map((s) => [s.id, s])), scheduler: new SchedulerState(nodeList, []), nodes: nodeList, volumePins: new Map(), nowMs, newTaskId: () => `t${++seq}` };
}

function exited(id: string, exitCode: number | null): TaskStatusRecord {
  return { id, state: exitCode === 0 ? 'exited' : 'failed', health: 'none', exitCode, reason: '', restarts: 0, startedAtMs: 1, updatedAtMs: 0, ...(exitCode !== 0 ? { cause: `exited with code ${exitCode}` } : {}) };
}
function running(id: string): TaskStatusRecord {
  return { id, state: 'running', health: 'none', exitCode: null, reason: '', restarts: 0, startedAtMs: 1, updatedAtMs: 0 };
}

/** Applies a round's output to the world, as the orchestrator's transaction does. */
class World {
  app: AppRecord;
  tasks = new Map<string, TaskRecord>();
  statuses = new Map<string, TaskStatusRecord>();
  constructor(public specs: Map<number, AppSpec>, a = app()) {
    this.app = a;
  }
  round(nowMs: number, nodeList = nodes) {
    const out = reconcileApp(input(this.app, this.specs, [...this.tasks.values()], [...this.statuses.values()], nowMs, nodeList));
    this.app = out.app;
    for (const t of out.upserts) this.tasks.set(t.id, t);
    for (const id of out.deletes) {
      this.tasks.delete(id);
      this.statuses.delete(id);
    }
    return out;
  }
  running(): TaskRecord[] {
    return [...this.tasks.values()].filter((t) => t.desired === 'run');
  }
}

describe('validateAppSpec: type job', () => {
  it('defaults to service; stored service specs are unchanged (no type, no job fields)', () => {
    const r = validateAppSpec({ name: 'web', command: ['srv'] });
    expect(r.ok && r.spec.type).toBe(undefined);
    expect(r.ok && 'job' in r.spec).toBe(false);
  });

  it('a job gets retries 3 and a 1s..60s backoff by default, and is never restarted in place', () => {
    const s = spec();
    expect(s.type).toBe('job');
    expect(s.job).toEqual({ retries: 3, backoffMs: 1000, maxBackoffMs: 60_000 });
    expect(s.restart.policy).toBe('never');
    expect(spec({ retries: 0, backoff: { delayMs: 10, maxDelayMs: 20 } }).job).toEqual({ retries: 0, backoffMs: 10, maxBackoffMs: 20 });
  });

  it('refuses what does not apply to a job, naming the field and why', () => {
    const r = validateAppSpec({ name: 'j', command: ['x'], type: 'job', ports: [80], healthCheck: { type: 'command', command: ['true'] }, restart: { policy: 'always' }, replicas: 0, retries: -1 });
    expect(r.ok).toBe(false);
    const fields = r.ok ? [] : r.errors.map((e) => e.field);
    expect(fields).toEqual(expect.arrayContaining(['ports', 'healthCheck', 'restart', 'replicas', 'retries']));
    const msg = r.ok ? '' : r.errors.find((e) => e.field === 'ports')!.message;
    expect(msg).toMatch(/job has no ports/);
    const svc = validateAppSpec({ name: 'w', command: ['x'], retries: 2 });
    expect(svc.ok ? '' : svc.errors[0]).toMatchObject({ field: 'retries', message: expect.stringMatching(/only for type job/) });
    expect(validateAppSpec({ name: 'w', command: ['x'], type: 'cron' }).ok).toBe(false);
    expect(validateAppSpec({ name: 'w', command: ['x'], type: 'job', backoff: { delayMs: 5000, maxDelayMs: 10 } }).ok).toBe(false);
  });

  it('exclusive jobs are allowed', () => {
    expect(spec({ exclusive: true }).exclusive).toBe(true);
  });
});

describe('reconcileApp: jobs', () => {
  it('a task that exits 0 is succeeded: retired (never restarted, never replaced) and the job succeeded', () => {
    const w = new World(new Map([[1, spec()]]));
    w.round(1000);
    const [t] = w.running();
    expect(w.app.job).toMatchObject({ run: 1, status: 'running', attempts: 1 });
    expect(jobPhase(w.app, [undefined]).phase).toBe('CREATED');
    w.statuses.set(t.id, running(t.id));
    expect(jobPhase(w.app, [w.statuses.get(t.id)]).phase).toBe('RUNNING');
    w.statuses.set(t.id, exited(t.id, 0));
    w.round(2000);
    expect(w.tasks.get(t.id)).toMatchObject({ desired: 'stop', stopReason: JOB_SUCCEEDED });
    expect(w.app.job).toMatchObject({ status: 'succeeded', succeeded: 1, failures: 0, attempts: 1 });
    expect(w.app.job!.history).toEqual([expect.objectContaining({ taskId: t.id, outcome: 'succeeded', exitCode: 0 })]);
    expect(jobPhase(w.app, [])).toEqual({ phase: 'STOPPED', outcome: 'succeeded' });
    // Many later rounds (any leader): nothing is placed again.
    for (let i = 0; i < 5; i++) expect(w.round(3000 + i * 100_000).upserts.filter((x) => x.desired === 'run')).toEqual([]);
    expect(w.app.job!.attempts).toBe(1);
  });

  it('activeDeadlineSeconds: a run still going at its deadline fails and its tasks stop; only for jobs and cron', () => {
    expect(spec({ activeDeadlineSeconds: 60 }).job).toMatchObject({ deadlineMs: 60_000 });
    expect(validateAppSpec({ name: 'web', command: ['srv'], activeDeadlineSeconds: 60 })).toMatchObject({ ok: false, errors: [{ field: 'activeDeadlineSeconds', message: expect.stringMatching(/only for type job or cron/) }] });
    expect(validateAppSpec({ name: 'b', command: ['x'], type: 'job', activeDeadlineSeconds: 0 })).toMatchObject({ ok: false, errors: [{ field: 'activeDeadlineSeconds' }] });
    const w = new World(new Map([[1, spec({ activeDeadlineSeconds: 60, replicas: 2 })]]));
    w.round(1000);
    const tasks = w.running();
    expect(tasks).toHaveLength(2);
    for (const t of tasks) w.statuses.set(t.id, running(t.id));
    w.statuses.set(tasks[0].id, exited(tasks[0].id, 0)); // one finished in time, one is still going
    w.round(60_999);
    expect(w.app.job).toMatchObject({ status: 'running', succeeded: 1 });
    w.round(61_000);
    expect(w.app.job).toMatchObject({ status: 'failed', reason: 'did not finish within activeDeadlineSeconds (60 s)', finishedAtMs: 61_000 });
    expect(w.tasks.get(tasks[1].id)).toMatchObject({ desired: 'stop', stopReason: expect.stringMatching(/passed its deadline/) });
    expect(w.running()).toEqual([]);
    expect(jobPhase(w.app, [])).toEqual({ phase: 'STOPPED', outcome: 'failed' });
    expect(w.round(200_000).upserts.filter((x) => x.desired === 'run')).toEqual([]); // never placed again
  });

  it('activeDeadlineSeconds counts again from a start after a stop in the middle of the run (the same run goes on)', () => {
    const w = new World(new Map([[1, spec({ activeDeadlineSeconds: 60 })]]));
    w.round(1000);
    const [t] = w.running();
    w.statuses.set(t.id, running(t.id));
    w.round(30_000);
    w.app = { ...w.app, state: 'stopped' }; // omni stop at 30 s
    w.round(31_000);
    expect(w.tasks.get(t.id)).toMatchObject({ desired: 'stop', stopReason: 'app stopped' });
    expect(w.app.job).toMatchObject({ status: 'running', run: 1, stoppedAtMs: 31_000 });
    w.statuses.set(t.id, exited(t.id, null));
    w.round(90_000); // still stopped: nothing fails, nothing is placed
    expect(w.app.job).toMatchObject({ status: 'running', stoppedAtMs: 31_000 });
    w.app = { ...w.app, state: 'running' }; // omni start at 100 s: 100 - 1 > 60, but the timer starts again
    w.round(100_000);
    expect(w.app.job).toMatchObject({ status: 'running', run: 1, activeSinceMs: 100_000 });
    expect(w.app.job!.stoppedAtMs).toBeUndefined();
    expect(w.app.events.map((e) => e.message)).toContain('job run 1 resumed (its 60 s deadline counts from now)');
    expect(w.app.job).toMatchObject({ failures: 0 }); // the stop is no failure
    const [t2] = w.running();
    expect(t2.id).not.toBe(t.id); // the stopped task is replaced by a new one of the same run
    w.statuses.set(t2.id, running(t2.id));
    w.round(159_999);
    expect(w.app.job).toMatchObject({ status: 'running' });
    w.round(160_000);
    expect(w.app.job).toMatchObject({ status: 'failed', reason: 'did not finish within activeDeadlineSeconds (60 s)' });
  });

  it('ttlSecondsAfterFinished: a finished job is removed that long after it finished (woken for it); only for jobs', () => {
    expect(spec({ ttlSecondsAfterFinished: 30 }).job).toMatchObject({ ttlMs: 30_000 });
    expect(validateAppSpec({ name: 'web', command: ['srv'], ttlSecondsAfterFinished: 30 })).toMatchObject({ ok: false, errors: [{ field: 'ttlSecondsAfterFinished', message: expect.stringMatching(/only for type job/) }] });
    expect(validateAppSpec({ name: 'c', command: ['x'], type: 'cron', schedule: '* * * * *', ttlSecondsAfterFinished: 30 })).toMatchObject({ ok: false, errors: [{ field: 'ttlSecondsAfterFinished' }] });
    expect(validateAppSpec({ name: 'b', command: ['x'], type: 'job', ttlSecondsAfterFinished: -1 })).toMatchObject({ ok: false, errors: [{ field: 'ttlSecondsAfterFinished' }] });
    const w = new World(new Map([[1, spec({ ttlSecondsAfterFinished: 30 })]]));
    w.round(1000);
    const [t] = w.running();
    w.statuses.set(t.id, running(t.id));
    expect(w.round(2000).wakeAtMs).toBeUndefined(); // still running: no removal planned
    w.statuses.set(t.id, exited(t.id, 0));
    w.round(5000);
    expect(w.app.job).toMatchObject({ status: 'succeeded', finishedAtMs: 5000 });
    const waiting = w.round(6000);
    expect(waiting.wakeAtMs).toBe(35_000);
    expect(w.app.state).toBe('running');
    w.round(35_000);
    expect(w.app.state).toBe('removing');
    expect(w.app.events.at(-1)?.message).toBe('removed: run 1 succeeded 30 s ago (ttlSecondsAfterFinished 30)');
    // the removal then goes as omni rm's: the finished task is collected and the app goes
    let out = w.round(36_000);
    for (let i = 0; i < 5 && !out.removeApp; i++) out = w.round(37_000 + i);
    expect(out.removeApp).toBe(true);
    // without a TTL a finished job stays
    const keep = new World(new Map([[1, spec()]]));
    keep.round(1000);
    const [k] = keep.running();
    keep.statuses.set(k.id, exited(k.id, 0));
    keep.round(2000);
    keep.round(10_000_000);
    expect(keep.app.state).toBe('running');
  });

  it('parallelism: at most that many of a run\'s tasks at once, until every replica succeeded', () => {
    expect(validateAppSpec({ name: 'web', command: ['srv'], parallelism: 2 })).toMatchObject({ ok: false, errors: [{ field: 'parallelism' }] });
    const w = new World(new Map([[1, spec({ replicas: 5, parallelism: 2 })]]));
    w.round(1000);
    expect(w.running()).toHaveLength(2);
    let t = 2000;
    const seen = new Set<string>();
    while (w.app.job!.status === 'running' && t < 20_000) {
      const live = w.running();
      expect(live.length).toBeLessThanOrEqual(2);
      for (const x of live) seen.add(x.id);
      w.statuses.set(live[0].id, exited(live[0].id, 0)); // one finishes per round
      w.round((t += 1000));
    }
    expect(w.app.job).toMatchObject({ status: 'succeeded', succeeded: 5, attempts: 5 });
    expect(seen.size).toBe(5);
  });

  it('a failure is retried as a new task after an exponential backoff recorded in the app record; past retries the job failed', () => {
    const w = new World(new Map([[1, spec({ retries: 2, backoff: { delayMs: 1000, maxDelayMs: 1500 } })]]));
    w.round(0);
    let [t] = w.running();
    w.statuses.set(t.id, exited(t.id, 3));
    const r1 = w.round(10_000);
    expect(w.tasks.get(t.id)).toMatchObject({ desired: 'stop', stopReason: 'failed: exited with code 3' });
    expect(r1.upserts.filter((x) => x.desired === 'run')).toEqual([]); // backing off
    expect(w.app.job).toMatchObject({ failures: 1, notBeforeMs: 11_000, status: 'running' });
    expect(w.app.pending).toMatch(/backoff/);
    // A new leader reads the record: still within the backoff, nothing placed.
    expect(w.round(10_500).upserts.filter((x) => x.desired === 'run')).toEqual([]);
    w.round(11_000);
    [t] = w.running();
    expect(w.app.job).toMatchObject({ attempts: 2 });
    w.statuses.set(t.id, exited(t.id, 1));
    w.round(12_000);
    expect(w.app.job!.notBeforeMs).toBe(12_000 + 1500); // 2000 capped at maxDelayMs
    w.round(13_500);
    [t] = w.running();
    w.statuses.set(t.id, exited(t.id, 1));
    w.round(14_000);
    expect(w.app.job).toMatchObject({ status: 'failed', failures: 3, attempts: 3 });
    expect(w.app.job!.reason).toMatch(/exited with code 1/);
    expect(w.app.job!.history.map((a) => a.exitCode)).toEqual([3, 1, 1]);
    expect(jobPhase(w.app, [])).toEqual({ phase: 'STOPPED', outcome: 'failed' });
    for (let i = 0; i < 3; i++) expect(w.round(1e6 + i).upserts.filter((x) => x.desired === 'run')).toEqual([]);
  });

  it('fails twice then succeeds: 3 attempts, succeeded', () => {
    const w = new World(new Map([[1, spec({ backoff: { delayMs: 0, maxDelayMs: 0 } })]]));
    for (const code of [1, 1, 0]) {
      w.round(seq * 10);
      const [t] = w.running();
      w.statuses.set(t.id, exited(t.id, code));
    }
    w.round(1e5);
    expect(w.app.job).toMatchObject({ status: 'succeeded', attempts: 3, failures: 2, succeeded: 1 });
  });

  it('replicas: each runs to completion once; successes are never re-placed while others retry', () => {
    const w = new World(new Map([[1, spec({ replicas: 3, backoff: { delayMs: 0, maxDelayMs: 0 } })]]));
    w.round(0);
    const [a, b, c] = w.running();
    w.statuses.set(a.id, exited(a.id, 0));
    w.statuses.set(b.id, exited(b.id, 2));
    w.statuses.set(c.id, running(c.id));
    w.round(100);
    expect(w.running().map((t) => t.id)).toContain(c.id);
    expect(w.running()).toHaveLength(2); // c and b's retry; a is done
    expect(w.app.job).toMatchObject({ succeeded: 1, failures: 1, attempts: 4 });
    for (const t of w.running()) w.statuses.set(t.id, exited(t.id, 0));
    w.round(200);
    expect(w.app.job).toMatchObject({ status: 'succeeded', succeeded: 3, attempts: 4 });
  });

  it('a task on a node that went down is lost: replaced, and counted as a failed attempt', () => {
    const w = new World(new Map([[1, spec({ backoff: { delayMs: 0, maxDelayMs: 0 } })]]));
    w.round(0);
    const [t] = w.running();
    w.statuses.set(t.id, running(t.id));
    const down = nodes.map((n) => (n.id === t.nodeId ? { ...n, status: 'down' as const } : n));
    w.round(100, down);
    expect(w.tasks.get(t.id)!.desired).toBe('stop');
    expect(w.app.job).toMatchObject({ failures: 1, attempts: 2 });
    expect(w.app.job!.history[0]).toMatchObject({ outcome: 'lost' });
    expect(w.running()[0].nodeId).not.toBe(t.nodeId);
  });

  it('an exclusive job waits for a lost task to be released (or its node silent past the lease) before retrying', () => {
    const w = new World(new Map([[1, spec({ exclusive: true, backoff: { delayMs: 0, maxDelayMs: 0 } })]]));
    w.round(0);
    const [t] = w.running();
    w.statuses.set(t.id, running(t.id));
    const down = nodes.map((n) => (n.id === t.nodeId ? { ...n, status: 'down' as const } : n));
    w.round(100, down);
    expect(w.running()).toEqual([]);
    expect(w.app.pending).toMatch(/exclusive: waiting/);
    w.statuses.set(t.id, { ...running(t.id), state: 'exited', released: true });
    w.round(200, down);
    expect(w.running()).toHaveLength(1);
  });

  it('an exclusive job does not wait for its succeeded task to be released', () => {
    const w = new World(new Map([[1, spec({ exclusive: true, replicas: 2 })]]));
    w.round(0);
    const [a, b] = w.running();
    w.statuses.set(a.id, exited(a.id, 0));
    w.statuses.set(b.id, exited(b.id, 0));
    w.round(100);
    expect(w.app.job!.status).toBe('succeeded');
  });

  it('a new version of a finished job starts a new run; the old run stays in the history', () => {
    const w = new World(new Map([[1, spec()]]));
    w.round(0);
    const [t] = w.running();
    w.statuses.set(t.id, exited(t.id, 0));
    w.round(100);
    expect(w.app.job!.status).toBe('succeeded');
    w.specs.set(2, spec({ env: { V: '2' } }));
    w.app = { ...w.app, version: 2, previousVersion: 1, latestVersion: 2 };
    w.round(200);
    expect(w.app.job).toMatchObject({ run: 2, version: 2, status: 'running', attempts: 1 });
    expect(w.app.job!.runs).toEqual([expect.objectContaining({ run: 1, status: 'succeeded' })]);
    expect(w.running()[0].version).toBe(2);
  });

  it('a new version of a running job stops the old run (no rolling update) and starts a new one', () => {
    const w = new World(new Map([[1, spec()]]));
    w.round(0);
    const [t] = w.running();
    w.statuses.set(t.id, running(t.id));
    w.specs.set(2, spec({ env: { V: '2' } }));
    w.app = { ...w.app, version: 2, previousVersion: 1, latestVersion: 2 };
    w.round(100);
    expect(w.tasks.get(t.id)!.desired).toBe('stop');
    expect(w.app.job!.runs).toEqual([expect.objectContaining({ run: 1, status: 'replaced' })]);
    expect(w.running().map((x) => x.version)).toEqual([2]);
  });

  it('a stopped job is STOPPED; started again it resumes the run without counting the stop as a failure', () => {
    const w = new World(new Map([[1, spec()]]));
    w.round(0);
    const [t] = w.running();
    w.statuses.set(t.id, running(t.id));
    w.app = { ...w.app, state: 'stopped' };
    w.round(100);
    expect(jobPhase(w.app, [])).toEqual({ phase: 'STOPPED', outcome: 'stopped' });
    w.statuses.set(t.id, { ...exited(t.id, null), state: 'exited' });
    w.app = { ...w.app, state: 'running' };
    w.round(200);
    expect(w.app.job).toMatchObject({ failures: 0, attempts: 2, status: 'running' });
  });

  it('history is bounded', () => {
    const w = new World(new Map([[1, spec({ retries: 50, backoff: { delayMs: 0, maxDelayMs: 0 } })]]));
    for (let i = 0; i < 40; i++) {
      w.round(i);
      const [t] = w.running();
      w.statuses.set(t.id, exited(t.id, 1));
    }
    w.round(100);
    expect(w.app.job!.history.length).toBe(20);
    expect(w.tasks.size).toBeLessThanOrEqual(11);
  });
});
