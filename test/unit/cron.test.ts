// Cron apps (issue 16), pure parts: the cron expression (croner), the leader's fire decision on a
// fake clock (time zones, DST, missed deadlines, one catch-up after an outage), and the reconciler's
// cron round — runs as job runs, concurrency policies, a leader change between fire and record,
// schedule OFF/ON, and a service's schedule beside its replicas.
import { describe, expect, it } from 'vitest';
import { MAX_ACTIVE_CRON_RUNS, reconcileApp, type ReconcileInput } from '../../protocol/apps/reconcile.js';
import { SchedulerState, type SchedNode } from '../../protocol/apps/scheduler.js';
import { validateAppSpec, type AppSpec } from '../../protocol/apps/spec.js';
import { decideFire, nextFireAfter, scheduledJobSpec, scheduleView, taskSpec, withSchedule, withTrigger } from '../../protocol/apps/cron.js';
import type { AppRecord, TaskRecord, TaskStatusRecord } from '../../protocol/apps/model.js';

const GiB = 1024 ** 3;
const nodes: SchedNode[] = ['a', 'b', 'c'].map((id) => ({ id, name: id, status: 'up', arch: 'amd64', labels: {}, cpu: 4, memoryBytes: 8 * GiB, gpus: 0 }));
const T0 = Date.UTC(2026, 5, 1, 12, 0, 0); // a whole minute

function spec(over: Record<string, unknown> = {}): AppSpec {
  const r = validateAppSpec({ name: 'tick', command: ['sh', '-c', 'exit 0'], type: 'cron', schedule: '*/10 * * * * *', ...over });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.spec;
}
function errors(input: Record<string, unknown>): { field: string; message: string }[] {
  const r = validateAppSpec({ name: 'x', command: ['true'], ...input });
  return r.ok ? [] : r.errors;
}
function app(over: Partial<AppRecord> = {}): AppRecord {
  return { name: 'tick', version: 1, previousVersion: 0, latestVersion: 1, state: 'running', deploy: { status: 'stable', fromVersion: 0, startedAtMs: 0, message: '' }, pending: '', events: [], ...over };
}
const exited = (id: string, exitCode: number): TaskStatusRecord => ({ id, state: exitCode === 0 ? 'exited' : 'failed', health: 'none', exitCode, reason: '', restarts: 0, startedAtMs: 1, updatedAtMs: 0, ...(exitCode !== 0 ? { cause: `exited with code ${exitCode}` } : {}) });
const running = (id: string): TaskStatusRecord => ({ id, state: 'running', health: 'none', exitCode: null, reason: '', restarts: 0, startedAtMs: 1, updatedAtMs: 0 });

let seq = 0;
/** The replicated state as the orchestrator's transactions leave it; round() is one leader's round at nowMs. */
class World {
  tasks = new Map<string, TaskRecord>();
  statuses = new Map<string, TaskStatusRecord>();
  constructor(public specs: Map<number, AppSpec>, public app: AppRecord) {}
  input(nowMs: number): ReconcileInput {
    return { app: this.app, specs: this.specs, tasks: [...this.tasks.values()], statuses: new Map(this.statuses), scheduler: new SchedulerState(nodes, []), nodes, volumePins: new Map(), nowMs, newTaskId: () => `t${++seq}` };
  }
  /** Plans a round without committing it (a leader that dies before its transaction commits). */
  plan(nowMs: number) {
    return reconcileApp(this.input(nowMs));
  }
  commit(out: ReturnType<typeof reconcileApp>) {
    this.app = out.app;
    for (const t of out.upserts) this.tasks.set(t.id, t);
    for (const id of out.deletes) {
      this.tasks.delete(id);
      this.statuses.delete(id);
    }
    return out;
  }
  round(nowMs: number) {
    return this.commit(this.plan(nowMs));
  }
  live(): TaskRecord[] {
    return [...this.tasks.values()].filter((t) => t.desired === 'run');
  }
  finishAll(code = 0) {
    for (const t of this.live()) this.statuses.set(t.id, exited(t.id, code));
  }
}
const iso = (ms: number) => new Date(ms).toISOString();

describe('validateAppSpec: type cron and a service schedule', () => {
  it('a cron app: 5 or 6 fields, UTC, forbid, history 3/1, ON, job retries; never restarted in place', () => {
    const s = spec({ schedule: '0 3 * * *' });
    expect(s.type).toBe('cron');
    expect(s.cron).toEqual({ schedule: '0 3 * * *', timeZone: 'UTC', concurrencyPolicy: 'forbid', historyLimit: { successful: 3, failed: 1 }, suspend: false });
    expect(s.job).toEqual({ retries: 3, backoffMs: 1000, maxBackoffMs: 60_000 });
    expect(s.restart.policy).toBe('never');
    const full = spec({ schedule: '*/5 * * * * *', timeZone: 'Europe/Paris', concurrencyPolicy: 'replace', startingDeadlineSeconds: 30, historyLimit: { successful: 5, failed: 2 }, suspend: true, retries: 0 });
    expect(full.cron).toEqual({ schedule: '*/5 * * * * *', timeZone: 'Europe/Paris', concurrencyPolicy: 'replace', startingDeadlineSeconds: 30, historyLimit: { successful: 5, failed: 2 }, suspend: true });
    expect(spec({ historyLimit: 0 }).cron!.historyLimit).toEqual({ successful: 0, failed: 0 });
  });

  it('refuses bad schedules, time zones and policies, naming the field', () => {
    expect(errors({ type: 'cron' })).toEqual([{ field: 'schedule', message: expect.stringMatching(/required for type cron/) }]);
    expect(errors({ type: 'cron', schedule: '61 * * * *' })[0]).toMatchObject({ field: 'schedule', message: expect.stringMatching(/not a valid cron expression/) });
    expect(errors({ type: 'cron', schedule: '* * * * * * *' })[0].message).toMatch(/5 fields .* or 6 .* got 7/);
    expect(errors({ type: 'cron', schedule: '0 0 30 2 *' })[0].message).toMatch(/never fires/);
    expect(errors({ type: 'cron', schedule: '* * * * *', timeZone: 'Mars/Olympus' })).toEqual([{ field: 'timeZone', message: expect.stringMatching(/IANA time zone/) }]);
    expect(errors({ type: 'cron', schedule: '* * * * *', concurrencyPolicy: 'queue' })[0].field).toBe('concurrencyPolicy');
    expect(errors({ type: 'cron', schedule: '* * * * *', startingDeadlineSeconds: 0 })[0].field).toBe('startingDeadlineSeconds');
    expect(errors({ type: 'cron', schedule: '* * * * *', historyLimit: { successful: 1, kept: 2 } })[0].field).toBe('historyLimit.kept');
    expect(errors({ type: 'cron', schedule: '* * * * *', ports: [80] })).toEqual([{ field: 'ports', message: expect.stringMatching(/a cron run has no ports/) }]);
    expect(errors({ type: 'cron', schedule: { cron: '* * * * *', command: 'x' } })[0].message).toMatch(/service's schedule/);
    expect(errors({ type: 'job', schedule: '* * * * *' })[0]).toMatchObject({ field: 'schedule', message: expect.stringMatching(/use type cron/) });
    expect(errors({ timeZone: 'UTC' })[0]).toMatchObject({ field: 'timeZone', message: expect.stringMatching(/inside schedule/) });
  });

  it('a service schedule: {cron, command} with the schedule fields inside; the job shares image, env and volumes', () => {
    const r = validateAppSpec({ name: 'api', image: 'reg/api:1', ports: [8080], env: { DB: 'x' }, volumes: [{ name: 'data', path: '/data' }], schedule: { cron: '0 2 * * *', command: 'python nightly.py', timeZone: 'America/New_York' } });
    expect(r.ok).toBe(true);
    const s = (r as { spec: AppSpec }).spec;
    expect(s.type).toBe(undefined);
    expect(s.cron).toMatchObject({ schedule: '0 2 * * *', timeZone: 'America/New_York', command: ['sh', '-c', 'python nightly.py'] });
    const job = scheduledJobSpec(s);
    expect(job).toMatchObject({ type: 'job', image: 'reg/api:1', args: ['sh', '-c', 'python nightly.py'], env: { DB: 'x' }, volumes: [{ name: 'data', path: '/data' }], ports: [], replicas: 1, restart: { policy: 'never' } });
    expect(job.healthCheck).toBe(undefined);
    expect(taskSpec(s, { run: 3 })).toEqual(job);
    expect(taskSpec(s, {})).toBe(s);
    const proc = validateAppSpec({ name: 'p', command: ['srv'], schedule: { cron: '* * * * *', command: ['echo', 'hi'] } });
    expect(proc.ok && scheduledJobSpec(proc.spec)).toMatchObject({ command: ['echo', 'hi'], args: [] });
    expect(errors({ schedule: { cron: '* * * * *' } })[0]).toMatchObject({ field: 'schedule.command' });
    expect(errors({ schedule: { cron: 'nope', command: 'x' } })[0]).toMatchObject({ field: 'schedule.cron' });
    expect(errors({ schedule: { cron: '* * * * *', command: 'x', every: 1 } })[0]).toMatchObject({ field: 'schedule.every' });
  });
});

describe('decideFire (leader clock)', () => {
  const c = spec({ schedule: '*/5 * * * * *' }).cron!;

  it('fires at each scheduled time, never before it, and never the same time twice', () => {
    expect(decideFire(c, 0, T0, T0 + 4_999)).toEqual({ missedMs: [], missedCount: 0, lastScheduledMs: 0, nextFireMs: T0 + 5_000 });
    const d = decideFire(c, 0, T0, T0 + 5_000);
    expect(d).toMatchObject({ fireMs: T0 + 5_000, missedCount: 0, lastScheduledMs: T0 + 5_000, nextFireMs: T0 + 10_000 });
    // The same time, decided again from the stored lastScheduledMs: nothing.
    expect(decideFire(c, d.lastScheduledMs, T0, T0 + 5_900).fireMs).toBe(undefined);
    // sinceMs: a time at or before the schedule started is not fired.
    expect(decideFire(c, 0, T0 + 5_000, T0 + 5_500).fireMs).toBe(undefined);
  });

  it('after an outage: one catch-up run (the newest time), the others missed', () => {
    const d = decideFire(c, T0, T0, T0 + 60_200);
    expect(d.fireMs).toBe(T0 + 60_000);
    expect(d.missedCount).toBe(11);
    expect(d.missedMs[0]).toBe(T0 + 5_000);
    expect(d.nextFireMs).toBe(T0 + 65_000);
  });

  it('past startingDeadlineSeconds: missed, not fired, and not fired later either', () => {
    const late = { ...c, startingDeadlineSeconds: 2 };
    expect(decideFire(late, T0, T0, T0 + 6_900).fireMs).toBe(T0 + 5_000); // 1.9 s late: within
    const d = decideFire(late, T0, T0, T0 + 7_100);
    expect(d).toMatchObject({ missedCount: 1, missedMs: [T0 + 5_000], lastScheduledMs: T0 + 5_000, nextFireMs: T0 + 10_000 });
    expect(d.fireMs).toBe(undefined);
    expect(decideFire(late, d.lastScheduledMs, T0, T0 + 7_200).fireMs).toBe(undefined);
  });

  /** Steps a fake clock by 5 minutes over [fromMs, toMs), as successive leader rounds, collecting the fires. */
  function fires(cs: typeof c, fromMs: number, toMs: number, stepMs = 5 * 60_000): number[] {
    const out: number[] = [];
    let last = 0;
    for (let now = fromMs; now < toMs; now += stepMs) {
      const d = decideFire(cs, last, fromMs, now);
      if (d.fireMs !== undefined) out.push(d.fireMs);
      last = d.lastScheduledMs;
    }
    return out;
  }

  it('reads the expression in its time zone, and DST neither skips nor doubles a day', () => {
    const paris = spec({ schedule: '0 9 * * *', timeZone: 'Europe/Paris' }).cron!;
    expect(iso(nextFireAfter(paris, Date.UTC(2026, 0, 10))!)).toBe('2026-01-10T08:00:00.000Z'); // CET
    expect(iso(nextFireAfter(paris, Date.UTC(2026, 6, 10))!)).toBe('2026-07-10T07:00:00.000Z'); // CEST
    // New York springs forward on 2026-03-08 (02:00 → 03:00): 02:30 does not exist that day; it fires once, at 03:00 EDT.
    const ny = spec({ schedule: '30 2 * * *', timeZone: 'America/New_York' }).cron!;
    expect(fires(ny, Date.UTC(2026, 2, 7, 12), Date.UTC(2026, 2, 10, 12)).map(iso)).toEqual(['2026-03-08T07:00:00.000Z', '2026-03-09T06:30:00.000Z', '2026-03-10T06:30:00.000Z']);
    // It falls back on 2026-11-01 (02:00 → 01:00): 01:30 happens twice that night; it fires once.
    const nyFall = spec({ schedule: '30 1 * * *', timeZone: 'America/New_York' }).cron!;
    expect(fires(nyFall, Date.UTC(2026, 9, 31, 12), Date.UTC(2026, 10, 3, 12)).map(iso)).toEqual(['2026-11-01T05:30:00.000Z', '2026-11-02T06:30:00.000Z', '2026-11-03T06:30:00.000Z']);
  });
});

describe('reconcile: cron runs', () => {
  const w0 = (over: Record<string, unknown> = {}) => new World(new Map([[1, spec(over)]]), app());

  it('creates its record on the first round, fires at the scheduled time a run whose tasks carry the run number, in the same write', () => {
    const w = w0();
    const first = w.round(T0 + 1);
    expect(first.changed).toBe(true);
    expect(w.app.cron).toMatchObject({ lastScheduledMs: 0, sinceMs: T0 + 1, lastRun: 0, off: false, active: [] });
    expect(first.wakeAtMs).toBe(T0 + 10_000);
    expect(w.round(T0 + 9_999).changed).toBe(false);
    const fire = w.round(T0 + 10_010);
    expect(fire.upserts).toEqual([expect.objectContaining({ run: 1, scheduledMs: T0 + 10_000, desired: 'run', version: 1 })]);
    expect(fire.app.cron).toMatchObject({ lastScheduledMs: T0 + 10_000, lastRun: 1, active: [{ run: 1, scheduledMs: T0 + 10_000, firedAtMs: T0 + 10_010, attempts: 1 }] });
    expect(fire.wakeAtMs).toBe(T0 + 20_000);
    w.finishAll(0);
    w.round(T0 + 12_000);
    expect(w.app.cron!.active).toEqual([]);
    expect(w.app.cron!.runs).toEqual([expect.objectContaining({ run: 1, status: 'succeeded', scheduledMs: T0 + 10_000, exitCodes: [0] })]);
    w.round(T0 + 20_000);
    expect(w.app.cron!.active.map((r) => r.run)).toEqual([2]);
    expect(w.live().map((t) => t.run)).toEqual([2]);
  });

  it('a leader that dies between fire and commit: its successor fires that time once; after a commit, never again', () => {
    const w = w0();
    w.round(T0);
    const lost = w.plan(T0 + 10_000); // leader A decided to fire T0+10s, its kv.txn never committed
    expect(lost.upserts).toHaveLength(1);
    const b = w.round(T0 + 12_500); // leader B, from the state A left
    expect(b.upserts).toEqual([expect.objectContaining({ run: 1 })]);
    expect(w.app.cron).toMatchObject({ lastScheduledMs: T0 + 10_000, lastRun: 1 });
    // A third leader, and B again, later in the same period: nothing fires for T0+10s again.
    expect(w.round(T0 + 13_000).upserts.filter((t) => t.desired === 'run')).toEqual([]);
    expect(w.round(T0 + 19_999).upserts.filter((t) => t.desired === 'run')).toEqual([]);
    expect(w.app.cron!.lastRun).toBe(1);
  });

  it('forbid: a fire while the run goes on is skipped and recorded', () => {
    const w = w0({ historyLimit: { successful: 3, failed: 3 } });
    w.round(T0);
    w.round(T0 + 10_000);
    for (const t of w.live()) w.statuses.set(t.id, running(t.id));
    const out = w.round(T0 + 20_000);
    expect(out.upserts).toEqual([]);
    expect(w.app.cron).toMatchObject({ skipped: 1, lastScheduledMs: T0 + 20_000, active: [{ run: 1 }] });
    expect(w.app.cron!.runs).toEqual([expect.objectContaining({ run: 0, status: 'skipped', scheduledMs: T0 + 20_000, reason: expect.stringMatching(/forbid/) })]);
  });

  it('allow: runs side by side; replace: the old run is stopped and recorded replaced', () => {
    const a = w0({ concurrencyPolicy: 'allow' });
    a.round(T0);
    a.round(T0 + 10_000);
    for (const t of a.live()) a.statuses.set(t.id, running(t.id));
    a.round(T0 + 20_000);
    expect(a.live().map((t) => t.run).sort()).toEqual([1, 2]);
    expect(a.app.cron!.active.map((r) => r.run)).toEqual([1, 2]);
    // At most MAX_ACTIVE_CRON_RUNS at once: beyond, a fire is skipped.
    for (let i = 3; i <= MAX_ACTIVE_CRON_RUNS + 2; i++) {
      a.round(T0 + i * 10_000);
      for (const t of a.live()) a.statuses.set(t.id, running(t.id));
    }
    expect(a.app.cron!.active).toHaveLength(MAX_ACTIVE_CRON_RUNS);
    expect(a.app.cron!.skipped).toBe(2);
    expect(a.app.cron!.runs.at(-1)).toMatchObject({ status: 'skipped', reason: expect.stringMatching(/at most 20 at once/) });

    const r = w0({ concurrencyPolicy: 'replace' });
    r.round(T0);
    r.round(T0 + 10_000);
    const old = r.live()[0];
    r.statuses.set(old.id, running(old.id));
    r.round(T0 + 20_000);
    expect(r.tasks.get(old.id)).toMatchObject({ desired: 'stop', stopReason: expect.stringMatching(/replaced by the run scheduled at/) });
    expect(r.live().map((t) => t.run)).toEqual([2]);
    expect(r.app.cron!.runs).toEqual([expect.objectContaining({ run: 1, status: 'replaced' })]);
  });

  it('each run is a job run: a failure is retried after the backoff, past the retries the run fails; history limits prune', () => {
    const w = w0({ retries: 1, backoff: { delayMs: 1000, maxDelayMs: 1000 }, historyLimit: { successful: 1, failed: 1 }, schedule: '0 * * * * *' });
    w.round(T0 - 1);
    w.round(T0);
    w.finishAll(3);
    w.round(T0 + 100);
    expect(w.live()).toEqual([]);
    expect(w.app.pending).toMatch(/retrying a failed cron run 1 task after a 1s backoff/);
    w.round(T0 + 1_200);
    expect(w.live().map((t) => t.run)).toEqual([1]);
    w.finishAll(3);
    w.round(T0 + 1_300);
    expect(w.app.cron!.active).toEqual([]);
    expect(w.app.cron!.runs).toEqual([expect.objectContaining({ run: 1, status: 'failed', attempts: 2, failures: 2, exitCodes: [3, 3] })]);
    // Two successful runs: only the newest is kept (historyLimit.successful 1); the failed one stays (failed 1).
    for (const at of [60_000, 120_000]) {
      w.round(T0 + at);
      w.finishAll(0);
      w.round(T0 + at + 100);
    }
    expect(w.app.cron!.runs.map((r) => `${r.run}:${r.status}`)).toEqual(['1:failed', '3:succeeded']);
  });

  it('a long leader outage: one catch-up run at most, the rest recorded missed; a starting deadline misses it too', () => {
    const w = w0();
    w.round(T0);
    const out = w.round(T0 + 65_000); // six scheduled times passed
    expect(out.upserts.filter((t) => t.desired === 'run')).toHaveLength(1);
    expect(w.app.cron).toMatchObject({ lastRun: 1, missed: 5, lastScheduledMs: T0 + 60_000, active: [{ scheduledMs: T0 + 60_000 }] });

    const d = w0({ startingDeadlineSeconds: 3 });
    d.round(T0);
    expect(d.round(T0 + 65_000).upserts).toEqual([]);
    expect(d.app.cron).toMatchObject({ lastRun: 0, missed: 6, lastScheduledMs: T0 + 60_000 });
    expect(d.app.cron!.runs.at(-1)).toMatchObject({ status: 'missed', scheduledMs: T0 + 60_000, reason: expect.stringMatching(/startingDeadlineSeconds \(3\)/) });
  });

  it('schedule OFF: nothing fires, a run in progress finishes; ON again: no catch-up of the time OFF', () => {
    const w = w0();
    w.round(T0);
    w.round(T0 + 10_000);
    w.app = withSchedule(w.app, w.specs.get(1)!, false)!;
    expect(withSchedule(w.app, w.specs.get(1)!, false)).toBe(undefined); // idempotent
    expect(scheduleView(w.specs.get(1)!, w.app, T0 + 10_500)).toMatchObject({ state: 'OFF', nextFireMs: null, lastRun: 1 });
    w.finishAll(0);
    const off = w.round(T0 + 40_000);
    expect(off.wakeAtMs).toBe(undefined);
    expect(w.app.cron!.runs).toEqual([expect.objectContaining({ run: 1, status: 'succeeded' })]);
    expect(w.live()).toEqual([]);
    w.app = withSchedule(w.app, w.specs.get(1)!, true)!;
    w.round(T0 + 45_000);
    expect(w.live()).toEqual([]); // 20s, 30s and 40s passed while OFF: not caught up
    expect(w.app.cron).toMatchObject({ sinceMs: T0 + 45_000, missed: 0 });
    w.round(T0 + 50_000);
    expect(w.live().map((t) => t.run)).toEqual([2]);
    expect(scheduleView(w.specs.get(1)!, w.app, T0 + 50_001)).toMatchObject({ state: 'ON', lastScheduledMs: T0 + 50_000, nextFireMs: T0 + 60_000, active: [{ run: 2 }] });
  });

  it('omni schedule trigger: one run now, once, ON or OFF; forbid skips it while a run goes on', () => {
    const w = w0({ schedule: '0 0 1 1 *' }); // once a year: nothing fires by itself here
    w.round(T0);
    w.app = withTrigger(w.app, w.specs.get(1)!, T0 + 500)!;
    expect(withTrigger(w.app, w.specs.get(1)!, T0 + 600)).toBe(undefined); // already asked for
    const fired = w.round(T0 + 700);
    expect(fired.upserts).toEqual([expect.objectContaining({ run: 1, scheduledMs: T0 + 500, desired: 'run' })]);
    expect(w.app.cron).toMatchObject({ lastRun: 1, lastScheduledMs: 0, active: [{ run: 1, scheduledMs: T0 + 500, firedAtMs: T0 + 700 }] });
    expect(w.app.cron!.trigger).toBe(undefined);
    expect(w.app.events.map((e) => e.message)).toContainEqual(expect.stringMatching(/^cron run 1 fired .*asked for by omni schedule trigger/));
    expect(w.round(T0 + 800).upserts).toEqual([]); // once
    // forbid: asked for while run 1 goes on → skipped and recorded
    for (const t of w.live()) w.statuses.set(t.id, running(t.id));
    w.app = withTrigger(w.app, w.specs.get(1)!, T0 + 900)!;
    expect(w.round(T0 + 1000).upserts).toEqual([]);
    expect(w.app.cron).toMatchObject({ skipped: 1, active: [{ run: 1 }] });
    expect(w.app.cron!.runs.at(-1)).toMatchObject({ status: 'skipped', scheduledMs: T0 + 900, reason: expect.stringMatching(/forbid/) });
    // OFF: the schedule fires nothing, a trigger still runs
    w.finishAll(0);
    w.round(T0 + 1100);
    w.app = withSchedule(w.app, w.specs.get(1)!, false)!;
    w.app = withTrigger(w.app, w.specs.get(1)!, T0 + 1200)!;
    w.round(T0 + 1300);
    expect(w.live().map((t) => t.run)).toEqual([2]);
    expect(w.app.cron).toMatchObject({ off: true, lastRun: 2 });
  });

  it('suspend in the spec: created OFF; omni stop ends the runs in progress as stopped', () => {
    const w = w0({ suspend: true });
    w.round(T0);
    expect(w.round(T0 + 30_000).upserts).toEqual([]);
    expect(w.app.cron!.off).toBe(true);
    const on = w0();
    on.round(T0);
    on.round(T0 + 10_000);
    on.app = { ...on.app, state: 'stopped' };
    on.round(T0 + 11_000);
    expect(on.live()).toEqual([]);
    expect(on.app.cron).toMatchObject({ active: [], resume: true, runs: [expect.objectContaining({ run: 1, status: 'stopped' })] });
  });
});

describe('reconcile: a service with a schedule', () => {
  const svc = (): AppSpec => {
    const r = validateAppSpec({ name: 'api', command: ['srv'], replicas: 2, ports: [{ name: 'http', port: 8080 }], schedule: { cron: '*/10 * * * * *', command: 'nightly' } });
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.spec;
  };

  it('its replicas and its scheduled runs are separate: runs are tagged, one task each, the replicas untouched', () => {
    const w = new World(new Map([[1, svc()]]), app({ name: 'api' }));
    w.round(T0);
    expect(w.live()).toHaveLength(2);
    expect(w.live().every((t) => t.run === undefined && t.hostPorts.length === 1)).toBe(true);
    for (const t of w.live()) w.statuses.set(t.id, { ...running(t.id), health: 'healthy', stable: true });
    w.round(T0 + 10_000);
    const runs = w.live().filter((t) => t.run !== undefined);
    expect(runs).toEqual([expect.objectContaining({ run: 1, hostPorts: [] })]);
    expect(w.live()).toHaveLength(3);
    // The run fails: retried as a run task, never as a replica; the service's failure counters untouched.
    w.statuses.set(runs[0].id, exited(runs[0].id, 1));
    w.round(T0 + 10_100);
    expect(w.app.failures).toBe(undefined);
    expect(w.app.cron!.pending).toMatch(/retrying a failed cron run 1/);
    expect(w.app.pending).toBe('');
    expect(w.live().filter((t) => t.run === undefined)).toHaveLength(2);
  });

  it('a new version without a schedule stops its runs in progress and keeps the history', () => {
    const w = new World(new Map([[1, svc()]]), app({ name: 'api' }));
    w.round(T0);
    w.round(T0 + 10_000);
    const { cron: _c, ...plain } = svc();
    w.specs.set(2, plain);
    w.app = { ...w.app, version: 2, latestVersion: 2, previousVersion: 1 };
    w.round(T0 + 11_000);
    expect(w.live().filter((t) => t.run !== undefined)).toEqual([]);
    expect(w.app.cron!.runs).toEqual([expect.objectContaining({ run: 1, status: 'stopped', reason: expect.stringMatching(/no schedule/) })]);
  });
});
