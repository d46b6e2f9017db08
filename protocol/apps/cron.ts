// Cron schedules, pure: the cron expression (parsed by croner, never by hand), when a schedule
// fires next, and the leader's decision for one round — which scheduled time to fire now, which
// were missed — from the last scheduled time stored in the app record and the leader's clock.
// The reconciler (reconcile.ts) turns a fire into a job run, written in the same kv.txn as the
// new lastScheduledMs, so a scheduled time fires at most once across leader changes.
import type { Cron } from 'croner';
import { parseCron } from './cron-expr.js';
import type { AppSpec, CronSpec } from './spec.js';
import type { AppRecord, CronRecord, TaskRecord } from './model.js';

export { MAX_CRON_EXPRESSION_CHARS, canonicalTimeZone, parseCron } from './cron-expr.js';
/** Scheduled times counted one by one when a schedule is behind (beyond: the count says "at least"). */
export const MAX_MISSED_COUNTED = 1000;

function cronOf(c: Pick<CronSpec, 'schedule' | 'timeZone'>): Cron {
  const p = parseCron(c.schedule, c.timeZone);
  if (!p.ok) throw new Error(`schedule '${c.schedule}': ${p.error}`); // validated at deploy: not reached
  return p.cron;
}

/** The first scheduled time strictly after afterMs (null: none). */
export function nextFireAfter(c: Pick<CronSpec, 'schedule' | 'timeZone'>, afterMs: number): number | null {
  // croner strips milliseconds and looks strictly after its reference second.
  return cronOf(c).nextRun(new Date(afterMs))?.getTime() ?? null;
}

/** The next n scheduled times strictly after afterMs. */
export function nextFires(c: Pick<CronSpec, 'schedule' | 'timeZone'>, afterMs: number, n: number): number[] {
  const out: number[] = [];
  let at = afterMs;
  for (let i = 0; i < n; i++) {
    const next = nextFireAfter(c, at);
    if (next === null) break;
    out.push(next);
    at = next;
  }
  return out;
}

/** The newest scheduled time at or before nowMs and strictly after afterMs (null: none). */
export function latestDue(c: Pick<CronSpec, 'schedule' | 'timeZone'>, afterMs: number, nowMs: number): number | null {
  const first = nextFireAfter(c, afterMs);
  if (first === null || first > nowMs) return null;
  const prev = cronOf(c).previousRuns(1, new Date(nowMs))[0]?.getTime();
  // previousRuns counts a run earlier in nowMs's second; keep to at or before nowMs.
  if (prev !== undefined && prev > afterMs && prev <= nowMs) return prev;
  // Fall back to walking forward (never reached for valid schedules, kept for safety).
  let at = first;
  for (let i = 0; i < MAX_MISSED_COUNTED * 10; i++) {
    const n = nextFireAfter(c, at);
    if (n === null || n > nowMs) break;
    at = n;
  }
  return at;
}

export interface FireDecision {
  /** Fire a run for this scheduled time now (absent: nothing to fire). */
  fireMs?: number;
  /** Scheduled times that will never run, oldest first (at most MAX_MISSED_COUNTED are listed; missedCount counts all up to that cap). */
  missedMs: number[];
  missedCount: number;
  /** The new last scheduled time (unchanged when nothing was due). */
  lastScheduledMs: number;
  /** When to look again: the first scheduled time after lastScheduledMs (null: never). */
  nextFireMs: number | null;
}

/**
 * The leader's decision for a schedule at nowMs (its clock). Every scheduled time after
 * max(lastScheduledMs, sinceMs) up to now is due. Like Kubernetes' CronJob, at most one run
 * fires for all of them — the newest — and the older ones are missed; if even the newest is older
 * than startingDeadlineSeconds, it is missed too and nothing fires. The caller persists
 * lastScheduledMs in the same transaction as the run it creates, so the same time never fires twice.
 */
export function decideFire(c: CronSpec, lastScheduledMs: number, sinceMs: number, nowMs: number): FireDecision {
  const base = Math.max(lastScheduledMs, sinceMs);
  const latest = latestDue(c, base, nowMs);
  if (latest === null) return { missedMs: [], missedCount: 0, lastScheduledMs, nextFireMs: nextFireAfter(c, base) };
  const missedMs: number[] = [];
  let count = 0;
  for (let at = nextFireAfter(c, base); at !== null && at < latest; at = nextFireAfter(c, at)) {
    count++;
    if (count >= MAX_MISSED_COUNTED) break;
    missedMs.push(at);
  }
  const next = nextFireAfter(c, latest);
  const late = c.startingDeadlineSeconds !== undefined && nowMs - latest > c.startingDeadlineSeconds * 1000;
  if (late) return { missedMs: [...missedMs, latest], missedCount: count + 1, lastScheduledMs: latest, nextFireMs: next };
  return { fireMs: latest, missedMs, missedCount: count, lastScheduledMs: latest, nextFireMs: next };
}

/**
 * The job a service's schedule runs: the service's image or process, env, volumes, resources and
 * constraints, with the schedule's command, one task per run, no ports, no health check, never
 * restarted in place (a failure is retried as a new task, as for a job). A cron app's spec is its
 * own job spec.
 */
export function scheduledJobSpec(spec: AppSpec): AppSpec {
  if (spec.type === 'cron' || !spec.cron?.command) return spec;
  const { healthCheck: _h, ...rest } = spec;
  const job: AppSpec = {
    ...rest,
    type: 'job',
    job: spec.job ?? { retries: 3, backoffMs: 1000, maxBackoffMs: 60_000 },
    replicas: 1,
    ports: [],
    antiAffinity: false,
    exclusive: false,
    restart: { policy: 'never', maxRestarts: 0, delayMs: 0 },
  };
  // An image runs the command as its arguments (the image's entrypoint stays); a process runs it.
  if (spec.image !== undefined) job.args = spec.cron.command;
  else {
    job.command = spec.cron.command;
    job.args = [];
  }
  return job;
}

/** The spec a task runs: a service's scheduled run runs the schedule's job, any other task its app's spec. */
export function taskSpec(spec: AppSpec | undefined, t: Pick<TaskRecord, 'run'>): AppSpec | undefined {
  return spec && t.run !== undefined ? scheduledJobSpec(spec) : spec;
}

/** A job, a cron run or a service's scheduled run: runs to completion once, never restarted or re-run by the agent. */
export function runsToCompletion(spec: AppSpec | undefined): boolean {
  return spec?.type === 'job' || spec?.type === 'cron';
}

/** What a person sees of a schedule (omni ps / inspect / GET /v1/apps): ON or OFF, last and next fires, runs. */
export interface ScheduleView {
  state: 'ON' | 'OFF';
  cron: string;
  timeZone: string;
  concurrencyPolicy: string;
  startingDeadlineSeconds: number | null;
  /** A service's schedule: the command each fire runs. */
  command: string[] | null;
  /** The newest scheduled time fired (0: none yet) and when the leader fired it. */
  lastScheduledMs: number;
  lastFiredAtMs: number;
  lastRun: number;
  /** The outcome of the newest finished run ('' if none). */
  lastStatus: string;
  /** The next scheduled time (null: OFF, or never). */
  nextFireMs: number | null;
  /** Runs in progress. */
  active: { run: number; scheduledMs: number; firedAtMs: number; attempts: number; failures: number }[];
  missed: number;
  skipped: number;
  pending: string;
}

export function scheduleView(spec: AppSpec, app: AppRecord, nowMs: number): ScheduleView | undefined {
  const c = spec.cron;
  if (!c) return undefined;
  const r = app.cron;
  const off = r ? r.off : c.suspend;
  const base = !r || r.resume ? nowMs : Math.max(r.lastScheduledMs, r.sinceMs);
  const fired = r ? [...r.active, ...r.runs.filter((x) => x.run > 0)].sort((a, b) => b.run - a.run)[0] : undefined;
  const finished = r?.runs.filter((x) => x.run > 0).at(-1);
  return {
    state: off || app.state === 'stopped' || app.state === 'removing' ? 'OFF' : 'ON',
    cron: c.schedule,
    timeZone: c.timeZone,
    concurrencyPolicy: c.concurrencyPolicy,
    startingDeadlineSeconds: c.startingDeadlineSeconds ?? null,
    command: c.command ?? null,
    lastScheduledMs: fired?.scheduledMs ?? 0,
    lastFiredAtMs: fired?.firedAtMs ?? 0,
    lastRun: r?.lastRun ?? 0,
    lastStatus: finished?.status ?? '',
    nextFireMs: off || app.state !== 'running' && app.state !== 'failed' ? null : nextFireAfter(c, base),
    active: (r?.active ?? []).map((x) => ({ run: x.run, scheduledMs: x.scheduledMs, firedAtMs: x.firedAtMs, attempts: x.attempts, failures: x.failures })),
    missed: r?.missed ?? 0,
    skipped: r?.skipped ?? 0,
    pending: spec.type === 'cron' ? '' : (r?.pending ?? ''),
  };
}

/**
 * `omni schedule enable|disable`: the app record with the schedule ON or OFF (undefined: already
 * so). Enabling asks the leader to restart the schedule at its own now (resume): times that
 * passed while OFF are not caught up.
 */
/** The app record with a run asked for now (omni schedule trigger); undefined when one is already asked for and not fired yet. */
export function withTrigger(app: AppRecord, spec: AppSpec, nowMs: number): AppRecord | undefined {
  const r: CronRecord = app.cron ?? { lastScheduledMs: 0, sinceMs: 0, lastRun: 0, off: spec.cron?.suspend ?? false, offFromVersion: app.version, active: [], runs: [], missed: 0, skipped: 0, resume: true };
  if (r.trigger) return undefined;
  return { ...app, cron: { ...r, trigger: { requestedAtMs: nowMs } } };
}

export function withSchedule(app: AppRecord, spec: AppSpec, on: boolean): AppRecord | undefined {
  const r: CronRecord = app.cron ?? { lastScheduledMs: 0, sinceMs: 0, lastRun: 0, off: spec.cron?.suspend ?? false, offFromVersion: app.version, active: [], runs: [], missed: 0, skipped: 0, resume: true };
  if (r.off === !on) return undefined;
  const next: CronRecord = { ...r, off: !on, offFromVersion: app.version };
  if (on && (r.off || !app.cron)) next.resume = true;
  return { ...app, cron: next };
}
