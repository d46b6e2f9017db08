// How apps and tasks live in the replicated key space (pure data + codecs). The leader's
// orchestrator writes app records and desired tasks; each node's agent writes the observed
// status of its own tasks under a separate key, so the two never contend for one version.
import type { AppSpec } from './spec.js';

export const APP_PREFIX = 'apps/';
export const SPEC_PREFIX = 'appspecs/';
export const TASK_PREFIX = 'tasks/';
export const STATUS_PREFIX = 'taskstatus/';
export const VOLUME_PREFIX = 'volumes/';
/**
 * Per node, bumped by every scheduling transaction that places a task there: a plan guards each
 * node it places on with this key's version, so a plan built on an older view of that node is
 * refused and redone, while plans of different apps on different nodes never conflict.
 */
export const SCHED_NODE_PREFIX = 'sched/nodes/';
export const schedNodeKey = (nodeId: string) => `${SCHED_NODE_PREFIX}${nodeId}`;
/** Events kept per app (newest last). */
export const MAX_APP_EVENTS = 40;

/** 'failed' is terminal: tasks kept failing past reschedule.attempts; `omni start` or a new version resets it. */
export type AppState = 'running' | 'stopped' | 'removing' | 'failed';
export type DeployStatus = 'stable' | 'deploying' | 'rolled-back' | 'failed';

export interface AppEvent {
  atMs: number;
  message: string;
}

export interface AppRecord {
  name: string;
  /** The spec version tasks should run. */
  version: number;
  /** The version before the last deploy (0: none): what a rollback returns to. */
  previousVersion: number;
  /** Highest version ever written (versions are never reused). */
  latestVersion: number;
  state: AppState;
  deploy: { status: DeployStatus; fromVersion: number; startedAtMs: number; message: string };
  /** Why some replicas are not placed ('' when all are). */
  pending: string;
  events: AppEvent[];
  /** Consecutive failed tasks since the app last ran stable (absent: none). Drives the replacement backoff. */
  failures?: AppFailures;
  /** Why the app is 'failed' (e.g. "command not found: foo on n1, n2, n3"). */
  failedReason?: string;
  /** Jobs (spec.type 'job'): the current run and the history of earlier ones. Absent for services. */
  job?: JobRecord;
  /** Cron apps and services with a schedule: the fire bookkeeping and run history (protocol/apps/cron.ts). */
  cron?: CronRecord;
}

/** A run of a job: 'running' until every replica succeeded ('succeeded') or failures passed retries ('failed'). */
export type JobStatus = 'running' | 'succeeded' | 'failed';
/** How one task of a job ended: 'lost' (its node went down) counts as a failure, like Kubernetes' backoffLimit. */
export type JobOutcome = 'succeeded' | 'failed' | 'lost';

export interface JobAttempt {
  run: number;
  taskId: string;
  node: string;
  outcome: JobOutcome;
  exitCode: number | null;
  cause: string;
  startedAtMs: number;
  finishedAtMs: number;
}

export interface JobRunSummary {
  run: number;
  version: number;
  status: JobStatus | 'replaced';
  succeeded: number;
  failures: number;
  attempts: number;
  startedAtMs: number;
  finishedAtMs: number;
  reason: string;
}

/**
 * Written by the leader in the same transaction that places or retires the tasks it counts, so a
 * leader change neither resets nor repeats an attempt, a success or a backoff.
 */
export interface JobRecord {
  /** The spec version this run runs; a different app.version (or 0: `omni start` of a finished job) starts a new run. */
  version: number;
  /** 1, 2, …: a new version or `omni start` of a finished job starts the next run. */
  run: number;
  status: JobStatus;
  /** Tasks of this run that exited 0. */
  succeeded: number;
  /** Tasks of this run that failed or were lost. The run fails once this passes spec.job.retries. */
  failures: number;
  /** Tasks placed in this run (at most replicas + retries). */
  attempts: number;
  /** No retry is placed before this time (leader clock). */
  notBeforeMs: number;
  startedAtMs: number;
  finishedAtMs: number;
  /**
   * Where activeDeadlineSeconds counts from when not the run's start: its last `omni start` after
   * an `omni stop` in the middle of the run (a resumed Kubernetes Job's timer starts again).
   */
  activeSinceMs?: number;
  /** Set (leader clock) while the app is stopped in the middle of this run. */
  stoppedAtMs?: number;
  /** Why the run failed ('' otherwise). */
  reason: string;
  /** The newest finished tasks (at most MAX_JOB_ATTEMPTS), oldest first, across runs. */
  history: JobAttempt[];
  /** The newest finished runs (at most MAX_JOB_RUNS), oldest first. */
  runs: JobRunSummary[];
}

export const MAX_JOB_ATTEMPTS = 20;

/** How a scheduled time ended: it ran (succeeded / failed / replaced / stopped), or never ran. */
export type CronRunStatus = 'succeeded' | 'failed' | 'replaced' | 'stopped' | 'missed' | 'skipped';

export interface CronRunSummary {
  /** 0 for a scheduled time that never ran (missed, skipped). */
  run: number;
  /** The scheduled time (ms since the epoch) this run is for. */
  scheduledMs: number;
  /** When the leader fired it (its clock; 0: never fired). */
  firedAtMs: number;
  finishedAtMs: number;
  status: CronRunStatus;
  version: number;
  attempts: number;
  failures: number;
  exitCodes: (number | null)[];
  reason: string;
}

/**
 * The schedule's state, written by the leader in the same kv.txn that creates (or retires) the
 * tasks of the runs it counts: a leader that fires scheduled time T writes lastScheduledMs = T
 * with the run's tasks, so a new leader computes the next fire after T and never fires T again.
 */
export interface CronRecord {
  /** The newest scheduled time decided (fired, skipped by the concurrency policy or missed); 0: none yet. */
  lastScheduledMs: number;
  /** Times at or before this are never fired (set, on the leader's clock, when scheduling starts or resumes). */
  sinceMs: number;
  /** Run numbers given so far (the next fire is run lastRun + 1). */
  lastRun: number;
  /** Schedule OFF (`omni schedule disable`, or spec suspend): nothing fires; running runs finish. */
  off: boolean;
  /** The spec version whose `suspend` last set `off` (a new version's suspend applies again). */
  offFromVersion: number;
  /** Set by `omni schedule enable` and `omni stop`: the next round restarts sinceMs at the leader's now (no catch-up of what passed while off). */
  resume?: boolean;
  /**
   * A run asked for now (`omni schedule trigger`), whatever the schedule says, ON or OFF: the
   * leader's next round fires it as its own run and clears this in the same record write, so it
   * fires once. The concurrency policy applies as to a scheduled fire.
   */
  trigger?: { requestedAtMs: number };
  /** Runs in progress (each a job run: retries, backoff, attempts), oldest first. */
  active: (JobRecord & { scheduledMs: number; firedAtMs: number })[];
  /** Finished runs and scheduled times that never ran, newest last, pruned by the spec's history limits. */
  runs: CronRunSummary[];
  /** Scheduled times never run: past startingDeadlineSeconds, or collapsed into one catch-up run. */
  missed: number;
  /** Scheduled times skipped because a run was still going (concurrencyPolicy forbid). */
  skipped: number;
  /** A service's schedule: why its run is not placed (a type cron app uses the app's pending). */
  pending?: string;
}

export const MAX_JOB_RUNS = 10;

/** What a person sees for a job: CREATED (nothing started yet), RUNNING, STOPPED (with its outcome). */
export type JobPhase = 'CREATED' | 'RUNNING' | 'STOPPED';
export function jobPhase(app: AppRecord, liveStatuses: readonly (TaskStatusRecord | undefined)[]): { phase: JobPhase; outcome: JobStatus | 'stopped' | '' } {
  const j = app.job;
  if (j && j.status !== 'running' && j.version === app.version) return { phase: 'STOPPED', outcome: j.status };
  if (app.state === 'stopped' || app.state === 'removing') return { phase: 'STOPPED', outcome: 'stopped' };
  const started = (j && j.version === app.version && (j.succeeded > 0 || j.failures > 0)) || liveStatuses.some((s) => s !== undefined && s.state !== 'pending' && s.startedAtMs > 0);
  return { phase: started ? 'RUNNING' : 'CREATED', outcome: '' };
}

export interface TaskFailure {
  nodeId: string;
  node: string;
  cause: string;
  atMs: number;
}

export interface AppFailures {
  count: number;
  /** No replacement is placed before this time (leader clock). */
  notBeforeMs: number;
  /** The newest failures (at most MAX_RECENT_FAILURES), oldest first. */
  recent: TaskFailure[];
}

export const LAST_OUTPUT_LINES = 5;
export const LAST_OUTPUT_LINE_CHARS = 200;

/** Failures remembered per app (for the reason and for avoiding the nodes they happened on). */
export const MAX_RECENT_FAILURES = 10;

export type TaskDesired = 'run' | 'stop';

export interface TaskRecord {
  id: string;
  app: string;
  version: number;
  nodeId: string;
  hostPorts: number[];
  desired: TaskDesired;
  createdAtMs: number;
  /** Why the orchestrator stopped it ('' while desired run). */
  stopReason: string;
  /**
   * The cron run this task belongs to (cron apps and a service's schedule); absent for a service's
   * own tasks and a job's. A service's agent runs such a task with the schedule's command.
   */
  run?: number;
  /** A cron run's scheduled time (ms since the epoch); the task sees it as OMNI_CRON_SCHEDULED_MS. */
  scheduledMs?: number;
}

export type TaskState = 'pending' | 'starting' | 'running' | 'exited' | 'failed';
export type TaskHealth = 'none' | 'starting' | 'healthy' | 'unhealthy';

export interface TaskStatusRecord {
  id: string;
  state: TaskState;
  health: TaskHealth;
  exitCode: number | null;
  reason: string;
  restarts: number;
  startedAtMs: number;
  updatedAtMs: number;
  /**
   * Short cause of the last failure of this task ('' or absent: none), kept across the restart
   * and the stop it leads to: "command not found: foo", "port 20001 is already in use on this
   * host", "health check got HTTP 404 on /healthz", "out of memory (OOMKilled)". Cleared once
   * the task runs stable again.
   */
  cause?: string;
  /** Serving (running, health passing) for at least update.minHealthyMs without a restart. */
  stable?: boolean;
  /** Host ports the agent found bound by another process: the scheduler avoids them on this host. */
  portsInUse?: number[];
  /**
   * The last lines the task printed before its last failed exit (at most LAST_OUTPUT_LINES), so
   * `omni inspect` and `omni run` can show what a crash said even once its run's log is gone.
   */
  lastOutput?: string[];
  /**
   * The task's last failing health check results (at most HEALTH_LOG_ENTRIES, oldest first):
   * "exit 1: <its output>" / "timed out after 1000 ms" — what `omni compose up` shows for a
   * dependency that never gets healthy. Cleared once the check passes.
   */
  healthLog?: string[];
  /**
   * Written by the task's node once the task is desired 'stop' and not running there: it will
   * never start again. An exclusive app's replacement waits for this (or for its node's silence).
   */
  released?: boolean;
  /**
   * The task's synced workspace (node/sync/task-workspace.ts) as its node last measured it:
   * its bytes, and (when over the app's disk size) why it is over. The task is not stopped for
   * it; a read-back of an over-size workspace fails naming both sizes.
   */
  workspace?: { bytes: number; overLimit?: string };
  /** A lab's notebook kernels (all, and those computing) as its node last counted them while it ran. */
  kernels?: { total: number; busy: number };
}

export const HEALTH_LOG_ENTRIES = 5;
export const HEALTH_LOG_ENTRY_CHARS = 300;

export const appKey = (name: string) => `${APP_PREFIX}${name}`;
export const specKey = (name: string, version: number) => `${SPEC_PREFIX}${name}/${String(version).padStart(8, '0')}`;
export const taskKey = (id: string) => `${TASK_PREFIX}${id}`;
export const statusKey = (id: string) => `${STATUS_PREFIX}${id}`;
export const volumeKey = (app: string, volume: string) => `${VOLUME_PREFIX}${app}/${volume}`;

/** Parses a stored JSON record; undefined for anything malformed (never throws). */
export function parseRecord<T>(value: string | undefined): T | undefined {
  if (value === undefined) return undefined;
  try {
    const v = JSON.parse(value) as unknown;
    return v !== null && typeof v === 'object' ? (v as T) : undefined;
  } catch {
    return undefined;
  }
}

export function withEvent(app: AppRecord, atMs: number, message: string): AppRecord {
  const events = [...app.events, { atMs, message }];
  return { ...app, events: events.slice(-MAX_APP_EVENTS) };
}

/** A task serves traffic when it runs and its health check (if any) passes. */
export function isServing(s: TaskStatusRecord | undefined): boolean {
  return s !== undefined && s.state === 'running' && (s.health === 'healthy' || s.health === 'none');
}

/** Serving long enough to count as up (rolling updates, `omni run`, reschedule counter reset). */
export function isStable(s: TaskStatusRecord | undefined): boolean {
  return isServing(s) && s!.stable === true;
}

/** The best short explanation of a task's state: its failure cause, else its reason. */
export function causeOf(s: TaskStatusRecord | undefined): string {
  return s?.cause || s?.reason || '';
}

export function isTerminal(s: TaskStatusRecord | undefined): boolean {
  return s !== undefined && (s.state === 'exited' || s.state === 'failed');
}

export type { AppSpec };
