// The orchestrator's decision for one app, as a pure function (Nomad's "evaluation"): given
// the app record, its specs, its tasks and their observed status, and the cluster's nodes and
// allocations, return the writes that move the app toward its spec. The leader wraps them in
// one kv.txn guarded by the scheduling epoch, so a plan built on stale state is refused and
// recomputed, never applied twice or over-committing a node.
import { globalNodeIds, globalReplicas, SchedulerState, type SchedNode, type SchedTask } from './scheduler.js';
import { EXCLUSIVE_LEASE_MS, type AppSpec } from './spec.js';
import { summarizeFailures } from './failure.js';
import { MAX_JOB_ATTEMPTS, MAX_JOB_RUNS, type JobAttempt, type JobOutcome, type JobRecord } from './model.js';
import { DEFAULT_JOB, MAX_HISTORY_LIMIT, type CronSpec, type JobSpec } from './spec.js';
import { decideFire, nextFireAfter, scheduledJobSpec } from './cron.js';
import type { CronRecord, CronRunStatus, CronRunSummary } from './model.js';
import { MAX_RECENT_FAILURES, causeOf, isServing, isStable, isTerminal, withEvent, type AppRecord, type TaskRecord, type TaskStatusRecord } from './model.js';

/** New placements per app per round (bounds one transaction's size). */
export const MAX_PLACEMENTS_PER_ROUND = 200;
/** Stopped, finished tasks kept per app for `omni inspect` history. */
export const KEEP_STOPPED_TASKS = 6;
/** Finished tasks kept per job (their statuses hold exit codes and last output for `omni inspect`). */
export const KEEP_JOB_TASKS = 10;
/** The stop reason of a job task that exited 0: it is never started again. */
export const JOB_SUCCEEDED = 'succeeded';
/** Runs of one schedule in progress at once (concurrencyPolicy allow): beyond, a fire is skipped (bounds the app record). */
export const MAX_ACTIVE_CRON_RUNS = 20;
/** Missed scheduled times listed one by one per round in a schedule's history (all are counted). */
export const MAX_MISSED_RECORDED = 5;
/** For specs stored before reschedule existed. */
export const DEFAULT_RESCHEDULE: AppSpec['reschedule'] = { attempts: 5, delayMs: 1000, maxDelayMs: 60_000 };

/** How long the n-th consecutive replacement of a failed task waits: delayMs·2^(n-1), capped. */
export function rescheduleDelayMs(failures: number, r: AppSpec['reschedule']): number {
  if (failures <= 0) return 0;
  return Math.min(r.maxDelayMs, r.delayMs * 2 ** Math.min(failures - 1, 40));
}

export interface ReconcileInput {
  app: AppRecord;
  specs: ReadonlyMap<number, AppSpec>;
  tasks: readonly TaskRecord[];
  statuses: ReadonlyMap<string, TaskStatusRecord>;
  /** Shared by every app reconciled in one round, so they see each other's placements. */
  scheduler: SchedulerState;
  nodes: readonly SchedNode[];
  /** Node each persistent volume of this app is pinned to. */
  volumePins: ReadonlyMap<string, string>;
  nowMs: number;
  /**
   * How long the deciding leader has known a task, on a clock that never steps (default: nowMs
   * minus the task's createdAtMs). Health deadlines use it, so a wall clock stepped on the
   * leader, or a new leader whose clock differs, does not fail (and roll back) a deployment.
   */
  taskAgeMs?: (t: TaskRecord) => number;
  newTaskId: () => string;
  /** Nodes this app's new tasks would rather run on (a soft preference, e.g. a warm build cache). */
  preferNodeIds?: (spec: AppSpec) => ReadonlySet<string> | undefined;
  /**
   * How long the deciding leader is sure it has not heard from a node (any Raft message; counted
   * from when it became leader at most). An exclusive task on a node silent for twice
   * EXCLUSIVE_LEASE_MS has stopped: its node's lease lapsed. Default: 0 (never assumed).
   */
  silentForMs?: (nodeId: string) => number;
  /** The exclusive lease the agents hold (default EXCLUSIVE_LEASE_MS). */
  exclusiveLeaseMs?: number;
}

export interface ReconcileOutput {
  app: AppRecord;
  upserts: TaskRecord[];
  /** Task ids whose task and status keys are deleted. */
  deletes: string[];
  newPins: { volume: string; nodeId: string }[];
  /** The app was being removed and nothing of it is left: delete its records. */
  removeApp: boolean;
  changed: boolean;
  /** A schedule's next fire time (leader clock): the orchestrator wakes then (absent: no schedule ON). */
  wakeAtMs?: number;
}

export function reconcileApp(given: ReconcileInput): ReconcileOutput {
  // A global app: as many replicas as it has nodes now (protocol/apps/scheduler.ts globalReplicas).
  const input = [...given.specs.values()].some((s) => s.mode === 'global')
    ? { ...given, specs: new Map([...given.specs].map(([v, s]) => [v, s.mode === 'global' ? { ...s, replicas: globalReplicas(given.nodes, s), antiAffinity: true } : s])) }
    : given;
  const spec = input.specs.get(input.app.version);
  // A service with a schedule (or one that had one: its runs finish or stop): two parts on one
  // record. The service's own tasks are reconciled as a service; the run tasks (task.run set) as
  // the schedule's job, whose spec is derived from the service's (scheduledJobSpec).
  const scheduled = spec?.type !== 'cron' && spec?.type !== 'job' && (spec?.cron !== undefined || input.app.cron !== undefined || input.tasks.some((t) => t.run !== undefined));
  if (!scheduled) {
    const r = new Reconciler(input);
    r.run();
    return r.output();
  }
  const svc = new Reconciler({ ...input, tasks: input.tasks.filter((t) => t.run === undefined) });
  svc.run();
  const a = svc.output();
  const derived = new Map([...input.specs].map(([v, s]) => [v, scheduledJobSpec(s)]));
  const sch = new Reconciler({ ...input, app: a.app, specs: derived, tasks: input.tasks.filter((t) => t.run !== undefined) }, true);
  sch.run();
  const b = sch.output();
  return {
    app: b.app,
    upserts: [...a.upserts, ...b.upserts],
    deletes: [...a.deletes, ...b.deletes],
    newPins: [...a.newPins, ...b.newPins.filter((p) => !a.newPins.some((q) => q.volume === p.volume))],
    removeApp: a.removeApp && b.removeApp,
    changed: a.changed || b.changed,
    ...(b.wakeAtMs !== undefined ? { wakeAtMs: b.wakeAtMs } : {}),
  };
}

class Reconciler {
  private app: AppRecord;
  private readonly tasks = new Map<string, TaskRecord>();
  private readonly upserts = new Map<string, TaskRecord>();
  private readonly deletes: string[] = [];
  private readonly newPins: { volume: string; nodeId: string }[] = [];
  private removeApp = false;
  private appChanged = false;
  private wakeAtMs: number | undefined;
  /** The schedule part of a service's reconcile: its pending reason goes to app.cron.pending. */
  private schedPending = '';

  constructor(private readonly input: ReconcileInput, private readonly schedulePart = false) {
    this.app = input.app;
    for (const t of input.tasks) this.tasks.set(t.id, t);
  }

  /** A global app's nodes now (those globalReplicas counts). */
  private globalNodes(spec: AppSpec): Set<string> {
    return new Set(globalNodeIds(this.input.nodes, spec));
  }

  output(): ReconcileOutput {
    const changed = this.appChanged || this.upserts.size > 0 || this.deletes.length > 0 || this.removeApp;
    return { app: this.app, upserts: [...this.upserts.values()], deletes: this.deletes, newPins: this.newPins, removeApp: this.removeApp, changed, ...(this.wakeAtMs !== undefined ? { wakeAtMs: this.wakeAtMs } : {}) };
  }

  run(): void {
    if (this.app.state === 'stopped' || this.app.state === 'removing') {
      for (const t of this.live()) this.stop(t, this.app.state === 'removing' ? 'app removed' : 'app stopped');
      if (this.app.state === 'stopped') this.closeCronRuns('app stopped');
      // A job stopped in the middle of its run: its deadline starts again when it is started again.
      const job = this.app.job;
      if (this.app.state === 'stopped' && job?.status === 'running' && job.stoppedAtMs === undefined) {
        this.app = { ...this.app, job: { ...job, stoppedAtMs: this.input.nowMs } };
        this.appChanged = true;
      }
      this.setPending('');
      this.collectGarbage(this.app.state === 'removing' ? 0 : KEEP_STOPPED_TASKS);
      if (this.app.state === 'removing' && this.tasks.size === 0) this.removeApp = true;
      return;
    }
    const spec = this.input.specs.get(this.app.version);
    if (!spec) {
      this.setPending(`spec version ${this.app.version} is missing`);
      return;
    }
    if (this.schedulePart) {
      if (spec.cron) this.cronRound(spec);
      else {
        // The new version has no schedule: its runs in progress stop, the history stays.
        for (const t of this.live()) this.stop(t, `version ${this.app.version} has no schedule`);
        if (this.app.cron && this.app.cron.active.length > 0) this.closeCronRuns(`version ${this.app.version} has no schedule`);
      }
      this.collectGarbage(KEEP_JOB_TASKS);
      return;
    }
    if (spec.type === 'cron' && spec.cron) {
      this.cronRound(spec);
      this.collectGarbage(KEEP_JOB_TASKS);
      return;
    }
    if (spec.type === 'job') {
      this.jobRound(spec);
      this.collectGarbage(KEEP_JOB_TASKS);
      return;
    }
    this.stopLostAndFailed(spec);
    if (this.app.state === 'failed') {
      // Terminal: nothing is placed or replaced; tasks that still serve are left alone.
      this.setPending('');
      this.collectGarbage(KEEP_STOPPED_TASKS);
      return;
    }
    const onDraining = (t: TaskRecord) => this.input.nodes.some((n) => n.id === t.nodeId && n.draining === true);
    const live = this.live();
    const current = live.filter((t) => t.version === this.app.version && !onDraining(t));
    const draining = live.filter((t) => t.version === this.app.version && onDraining(t));
    const old = live.filter((t) => t.version !== this.app.version);
    if (old.length > 0) this.rollingUpdate(spec, current, old, draining);
    else if (draining.length > 0) this.migrate(spec, current, draining);
    else this.steadyState(spec, current);
    this.collectGarbage(KEEP_STOPPED_TASKS);
  }

  private live(): TaskRecord[] {
    return [...this.tasks.values()].filter((t) => t.desired === 'run').sort((a, b) => a.createdAtMs - b.createdAtMs || (a.id < b.id ? -1 : 1));
  }

  /** Every replica at most once (spec.exclusive on the current version or a version still running). */
  private get exclusive(): boolean {
    return [this.app.version, ...this.live().map((t) => t.version)].some((v) => this.input.specs.get(v)?.exclusive === true);
  }

  /**
   * A stopped task that may still run: its node has not reported it released (stopped for good)
   * and has not been silent long enough for its lease to have lapsed. An exclusive app counts
   * these against its replicas: no replacement runs beside them.
   */
  private unreleased(): TaskRecord[] {
    const silent = this.input.silentForMs;
    return [...this.tasks.values()].filter(
      (t) => t.desired === 'stop' && this.input.statuses.get(t.id)?.released !== true && !(silent && silent(t.nodeId) >= 2 * this.leaseMs),
    );
  }

  /** Pending reason while an exclusive app's replacement waits for stopped tasks to be released. */
  private waitingFor(unreleased: TaskRecord[]): string {
    const t = unreleased[0];
    const silentMs = this.input.silentForMs?.(t.nodeId) ?? 0;
    const node = this.nodeName(t.nodeId);
    const rest = unreleased.length > 1 ? ` (and ${unreleased.length - 1} more)` : '';
    if (silentMs > 0 && !this.nodeUp(t.nodeId)) {
      const leftS = Math.max(1, Math.ceil((2 * this.leaseMs - silentMs) / 1000));
      return `exclusive: waiting for task ${t.id} on ${node}${rest} to stop; its node is silent, its lease lapses in ${leftS}s`;
    }
    return `exclusive: waiting for task ${t.id} on ${node}${rest} to stop`;
  }

  private get leaseMs(): number {
    return this.input.exclusiveLeaseMs ?? EXCLUSIVE_LEASE_MS;
  }

  private nodeUp(id: string): boolean {
    return this.input.nodes.some((n) => n.id === id && n.status === 'up');
  }

  private nodeName(id: string): string {
    return this.input.nodes.find((n) => n.id === id)?.name ?? id.slice(0, 12);
  }

  /**
   * Tasks on nodes that are down are lost; tasks the agent gave up on have failed. Both are
   * replaced; each failure (not a lost node, not a port another process holds) counts toward
   * the app's reschedule backoff, and past reschedule.attempts the app turns 'failed'.
   */
  private stopLostAndFailed(spec: AppSpec): void {
    for (const t of this.live()) {
      const s = this.input.statuses.get(t.id);
      if (!this.nodeUp(t.nodeId)) this.stop(t, `node ${this.nodeName(t.nodeId)} is down`);
      else if (s?.state === 'failed') {
        const cause = causeOf(s) || 'gave up restarting';
        this.stop(t, `failed: ${cause}`);
        // Only the current version's failures count: an old version failing during a rollout is not the new one's fault.
        if (this.app.state === 'running' && t.version === this.app.version && !(s.portsInUse && s.portsInUse.length > 0)) this.recordFailure(t, cause);
      }
    }
    const r = spec.reschedule ?? DEFAULT_RESCHEDULE;
    const f = this.app.failures;
    if (this.app.state === 'running' && f && f.count > r.attempts) {
      const why = summarizeFailures(f.recent);
      this.app = withEvent({ ...this.app, state: 'failed', failedReason: why }, this.input.nowMs, `app failed after ${f.count} failed task${f.count === 1 ? '' : 's'} (reschedule.attempts ${r.attempts}): ${why}; omni start or a new version retries`);
      this.appChanged = true;
    }
  }

  private recordFailure(t: TaskRecord, cause: string): void {
    const spec = this.input.specs.get(this.app.version);
    const r = spec?.reschedule ?? DEFAULT_RESCHEDULE;
    const prev = this.app.failures ?? { count: 0, notBeforeMs: 0, recent: [] };
    const count = prev.count + 1;
    const recent = [...prev.recent, { nodeId: t.nodeId, node: this.nodeName(t.nodeId), cause, atMs: this.input.nowMs }].slice(-MAX_RECENT_FAILURES);
    this.app = { ...this.app, failures: { count, notBeforeMs: this.input.nowMs + rescheduleDelayMs(count, r), recent } };
    this.appChanged = true;
  }

  /**
   * A job: each of spec.replicas tasks runs to completion once. A task that exited 0 is retired
   * as succeeded (desired 'stop', so no agent starts it again) and counted; one that failed, or
   * whose node went down, is retired and counted as a failure, and a new task is placed after
   * the backoff. Counts, backoff and history live in app.job, written in the same transaction
   * that retires or places the tasks, so a new leader continues exactly where the old one was.
   * Failures past spec.job.retries fail the run (its other tasks are stopped); all replicas
   * succeeded: the run succeeded. Both are terminal until a new version or `omni start`.
   */
  private jobRound(spec: AppSpec): void {
    const now = this.input.nowMs;
    const js = spec.job ?? DEFAULT_JOB;
    let job = this.app.job;
    if (!job || job.version !== this.app.version) {
      // A new version (or `omni start` of a finished job): a new run, no rolling update.
      for (const t of this.live()) this.stop(t, `replaced by a new run of version ${this.app.version}`);
      const runs = job ? (job.status === 'running' ? this.pushRun(job, 'replaced', 'replaced by a new run') : job.runs) : [];
      job = { version: this.app.version, run: (job?.run ?? 0) + 1, status: 'running', succeeded: 0, failures: 0, attempts: 0, notBeforeMs: 0, startedAtMs: now, finishedAtMs: 0, reason: '', history: job?.history ?? [], runs };
      this.app = withEvent({ ...this.app, job }, now, `job run ${job.run} of version ${this.app.version} started (${spec.replicas} task${spec.replicas === 1 ? '' : 's'}, retries ${js.retries})`);
      this.appChanged = true;
    }
    if (job.status !== 'running') {
      this.setPending('');
      this.expireFinished(js, job);
      return;
    }
    if (job.stoppedAtMs !== undefined) {
      // Started again after a stop in the middle of the run: the same run goes on, its deadline from now.
      const { stoppedAtMs: _stopped, ...rest } = job;
      job = { ...rest, activeSinceMs: now };
      this.app = withEvent({ ...this.app, job }, now, `job run ${job.run} resumed${js.deadlineMs !== undefined ? ` (its ${js.deadlineMs / 1000} s deadline counts from now)` : ''}`);
      this.appChanged = true;
    }
    for (const t of this.live()) if (t.version !== this.app.version) this.stop(t, `replaced by a new run of version ${this.app.version}`);
    const { j, changed } = this.stepRun(spec, job, this.live(), undefined);
    if (j.status !== 'running') j.runs = this.pushRun(j, j.status, j.reason);
    if (changed) {
      this.app = { ...this.app, job: j };
      this.appChanged = true;
    }
  }

  /**
   * ttlSecondsAfterFinished: a job whose run finished that long ago is removed (its tasks and
   * records go as for `omni rm`), as Kubernetes' TTL controller does; until then the leader is
   * woken at that time. A new version or `omni start` before it starts a new run instead.
   */
  private expireFinished(js: JobSpec, job: JobRecord): void {
    if (js.ttlMs === undefined || job.finishedAtMs <= 0) return;
    const at = job.finishedAtMs + js.ttlMs;
    if (this.input.nowMs < at) {
      this.wakeAtMs = Math.min(this.wakeAtMs ?? Infinity, at);
      return;
    }
    this.app = withEvent({ ...this.app, state: 'removing' }, this.input.nowMs, `removed: run ${job.run} ${job.status} ${Math.round((this.input.nowMs - job.finishedAtMs) / 1000)} s ago (ttlSecondsAfterFinished ${js.ttlMs / 1000})`);
    this.appChanged = true;
  }

  /**
   * One round of one job run (a job's run, or one run of a cron schedule): retires its finished
   * tasks (exit 0: succeeded; failed or node down: a failure, retried after the backoff), ends
   * the run once all replicas succeeded or failures passed the retries, else places what is
   * missing. `live` are the run's tasks desired 'run'; `run` tags new tasks (cron runs).
   */
  private stepRun(spec: AppSpec, job: JobRecord & { scheduledMs?: number }, live0: TaskRecord[], run: number | undefined): { j: JobRecord; changed: boolean } {
    const now = this.input.nowMs;
    const js = spec.job ?? DEFAULT_JOB;
    const what = run === undefined ? 'job run' : 'cron run';
    const j: JobRecord = { ...job, history: [...job.history] };
    let changed = false;
    const finish = (t: TaskRecord, outcome: JobOutcome, cause: string) => {
      const s = this.input.statuses.get(t.id);
      const a: JobAttempt = { run: j.run, taskId: t.id, node: this.nodeName(t.nodeId), outcome, exitCode: s?.exitCode ?? null, cause: cause.slice(0, 200), startedAtMs: s?.startedAtMs ?? 0, finishedAtMs: now };
      j.history = [...j.history, a].slice(-MAX_JOB_ATTEMPTS);
      if (outcome === 'succeeded') j.succeeded++;
      else {
        j.failures++;
        j.notBeforeMs = now + rescheduleDelayMs(j.failures, { attempts: js.retries, delayMs: js.backoffMs, maxDelayMs: js.maxBackoffMs });
      }
      changed = true;
    };
    for (const t of live0) {
      const s = this.input.statuses.get(t.id);
      if (s?.state === 'exited' && s.exitCode === 0) {
        this.stop(t, JOB_SUCCEEDED);
        finish(t, 'succeeded', '');
      } else if (isTerminal(s)) {
        const cause = causeOf(s) || (s!.exitCode !== null ? `exited with code ${s!.exitCode}` : 'failed');
        this.stop(t, `failed: ${cause}`);
        finish(t, 'failed', cause);
      } else if (!this.nodeUp(t.nodeId)) {
        const cause = `node ${this.nodeName(t.nodeId)} is down`;
        this.stop(t, cause);
        finish(t, 'lost', cause);
      }
    }
    const live = live0.filter((t) => this.tasks.get(t.id)?.desired === 'run');
    if (j.succeeded >= spec.replicas) {
      j.status = 'succeeded';
      j.finishedAtMs = now;
      this.app = withEvent(this.app, now, `${what} ${j.run} succeeded (${j.attempts} task${j.attempts === 1 ? '' : 's'}, ${j.failures} failure${j.failures === 1 ? '' : 's'})`);
      this.appChanged = true;
      this.setPending('');
      return { j, changed: true };
    }
    if (j.failures > js.retries) {
      const failed = j.history.filter((a) => a.run === j.run && a.outcome !== 'succeeded');
      j.reason = summarizeFailures(failed.slice(-MAX_RECENT_FAILURES).map((a) => ({ node: a.node, cause: a.cause })));
      j.status = 'failed';
      j.finishedAtMs = now;
      for (const t of live) this.stop(t, `${run === undefined ? 'job' : 'cron run'} failed`);
      this.app = withEvent(this.app, now, `${what} ${j.run} failed after ${j.failures} failure${j.failures === 1 ? '' : 's'} (retries ${js.retries}): ${j.reason}`);
      this.appChanged = true;
      this.setPending('');
      return { j, changed: true };
    }
    if (js.deadlineMs !== undefined && now - (j.activeSinceMs ?? j.startedAtMs) >= js.deadlineMs) {
      j.reason = `did not finish within activeDeadlineSeconds (${js.deadlineMs / 1000} s)`;
      j.status = 'failed';
      j.finishedAtMs = now;
      for (const t of live) this.stop(t, `${what} ${j.run} passed its deadline (activeDeadlineSeconds ${js.deadlineMs / 1000})`);
      this.app = withEvent(this.app, now, `${what} ${j.run} failed: ${j.reason}`);
      this.appChanged = true;
      this.setPending('');
      return { j, changed: true };
    }
    // At most once (exclusive): a retired task that may still run holds its slot until released.
    const unreleased = this.exclusive ? this.unreleased().filter((t) => t.stopReason !== JOB_SUCCEEDED && t.run === run) : [];
    // parallelism: at most that many of the run's tasks at once (those still running, or not released)
    const want = Math.min(spec.replicas - j.succeeded, js.parallelism ?? Number.POSITIVE_INFINITY) - live.length - unreleased.length;
    if (want > 0 && now < j.notBeforeMs) {
      const last = j.history.at(-1);
      this.setPending(`retrying a failed ${run === undefined ? 'job' : `cron run ${run}`} task after a ${Math.ceil((j.notBeforeMs - now) / 1000)}s backoff (failure ${j.failures} of at most ${js.retries} retries${last?.cause ? `: ${last.cause}` : ''})`);
    } else if (want > 0) {
      const placed = this.place(spec, want, run === undefined ? undefined : { version: j.version, run, scheduledMs: job.scheduledMs });
      if (placed > 0) {
        j.attempts += placed;
        changed = true;
      }
    } else if (unreleased.length > 0 && live.length + j.succeeded < spec.replicas) this.setPending(this.waitingFor(unreleased));
    else this.setPending('');
    return { j, changed };
  }

  /**
   * A schedule (a cron app, or a service's schedule on its run tasks): first each run in progress
   * takes its job round; then, if the schedule is ON, the leader's clock decides whether a
   * scheduled time is due (cron.ts decideFire). A fire becomes a new run — its tasks placed in this
   * same round — and lastScheduledMs moves to the fired time in the same app record write, so the
   * orchestrator's one kv.txn holds both: a new leader never fires that time again, and a leader
   * that lost its write before commit left nothing behind. forbid skips a fire while a run goes on
   * (recorded as skipped), replace stops the running ones, allow runs them side by side.
   */
  /**
   * Fires a run for time `at` now, as the concurrency policy allows (forbid: skipped and recorded
   * while a run goes on; replace: the running ones stop; allow: side by side, up to
   * MAX_ACTIVE_CRON_RUNS). `why` is added to the events (a manual trigger). Returns the record.
   */
  private fireCronRun(spec: AppSpec, cr0: CronRecord, at: number, why: string): CronRecord {
    const c = spec.cron!;
    const now = this.input.nowMs;
    const cr = { ...cr0, active: [...cr0.active], runs: [...cr0.runs] };
    const full = cr.active.length >= MAX_ACTIVE_CRON_RUNS && c.concurrencyPolicy === 'allow';
    if ((cr.active.length > 0 && c.concurrencyPolicy === 'forbid') || full) {
      const reason = full ? `${cr.active.length} runs still running (at most ${MAX_ACTIVE_CRON_RUNS} at once with concurrencyPolicy allow)` : `run ${cr.active.map((r) => r.run).join(', ')} still running (concurrencyPolicy forbid)`;
      cr.skipped++;
      cr.runs = this.pushCronRun(cr.runs, undefined, 'skipped', reason, c, at);
      this.app = withEvent(this.app, now, `skipped the run scheduled at ${new Date(at).toISOString()}${why}: ${reason}`);
      return cr;
    }
    if (c.concurrencyPolicy === 'replace') {
      for (const r of cr.active) {
        for (const t of this.live()) if (t.run === r.run) this.stop(t, `replaced by the run scheduled at ${new Date(at).toISOString()}`);
        cr.runs = this.pushCronRun(cr.runs, { ...r, finishedAtMs: now }, 'replaced', 'replaced by a newer run (concurrencyPolicy replace)', c);
      }
      cr.active = [];
    }
    const run = cr.lastRun + 1;
    cr.lastRun = run;
    const fresh = { version: this.app.version, run, status: 'running' as const, succeeded: 0, failures: 0, attempts: 0, notBeforeMs: 0, startedAtMs: now, finishedAtMs: 0, reason: '', history: [], runs: [], scheduledMs: at, firedAtMs: now };
    this.app = withEvent(this.app, now, `cron run ${run} fired for ${new Date(at).toISOString()}${now - at >= 1000 ? ` (${Math.round((now - at) / 1000)}s late)` : ''}${why}`);
    const { j } = this.stepRun(spec, fresh, [], run);
    const r = { ...fresh, ...j };
    if (r.status === 'running') cr.active.push(r);
    else cr.runs = this.pushCronRun(cr.runs, r, r.status, r.reason, c);
    return cr;
  }

  private cronRound(spec: AppSpec): void {
    const c = spec.cron!;
    const now = this.input.nowMs;
    const prev = this.app.cron;
    let cr: CronRecord = prev
      ? { ...prev, active: [...prev.active], runs: [...prev.runs] }
      : { lastScheduledMs: 0, sinceMs: now, lastRun: 0, off: c.suspend, offFromVersion: this.app.version, active: [], runs: [], missed: 0, skipped: 0 };
    let changed = !prev;
    if (prev && prev.offFromVersion !== this.app.version) {
      // A new version: its suspend applies (ON → OFF or OFF → ON without a catch-up of what passed).
      if (cr.off && !c.suspend) cr.resume = true;
      cr.off = c.suspend;
      cr.offFromVersion = this.app.version;
      changed = true;
    }
    if (cr.resume) {
      cr.sinceMs = Math.max(now, cr.lastScheduledMs);
      delete cr.resume;
      changed = true;
    }
    const specOf = (version: number) => {
      const s = this.input.specs.get(version);
      return s && (s.type === 'job' || s.type === 'cron') ? s : spec;
    };
    // 1. Runs in progress.
    const stillActive: CronRecord['active'] = [];
    for (const run of cr.active) {
      const live = this.live().filter((t) => t.run === run.run);
      const { j, changed: ch } = this.stepRun(specOf(run.version), run, live, run.run);
      const r = { ...run, ...j };
      if (ch) changed = true;
      if (r.status === 'running') stillActive.push(r);
      else cr.runs = this.pushCronRun(cr.runs, r, r.status, r.reason, c);
    }
    cr.active = stillActive;
    // Tasks of runs no longer tracked (e.g. a record lost to a removed schedule) are stopped.
    for (const t of this.live()) if (t.run === undefined || !cr.active.some((r) => r.run === t.run)) this.stop(t, 'not part of a run in progress');
    // 2. Fire.
    if (!cr.off) {
      const d = decideFire(c, cr.lastScheduledMs, cr.sinceMs, now);
      for (const at of d.missedMs.slice(-MAX_MISSED_RECORDED)) {
        cr.runs = this.pushCronRun(cr.runs, undefined, 'missed', `not fired: ${at === d.missedMs.at(-1) && d.fireMs === undefined ? `more than startingDeadlineSeconds (${c.startingDeadlineSeconds}) late` : 'a newer scheduled time was due (one catch-up run at most)'}`, c, at);
      }
      if (d.missedCount > 0) {
        cr.missed += d.missedCount;
        this.app = withEvent(this.app, now, `missed ${d.missedCount} scheduled time${d.missedCount === 1 ? '' : 's'} (newest ${new Date(d.missedMs.at(-1) ?? d.lastScheduledMs).toISOString()})`);
        changed = true;
      }
      if (d.lastScheduledMs !== cr.lastScheduledMs) {
        cr.lastScheduledMs = d.lastScheduledMs;
        changed = true;
      }
      if (d.fireMs !== undefined) {
        cr = this.fireCronRun(spec, cr, d.fireMs, '');
        changed = true;
      }
    }
    // 3. A run asked for by omni schedule trigger: fired once (the request is cleared in this write).
    if (cr.trigger) {
      const at = cr.trigger.requestedAtMs;
      delete cr.trigger;
      cr = this.fireCronRun(spec, cr, at, ' (asked for by omni schedule trigger)');
      changed = true;
    }
    if (cr.active.length === 0) this.setPending('');
    if (this.schedulePart && (cr.pending ?? '') !== this.schedPending) {
      cr.pending = this.schedPending;
      changed = true;
    }
    if (changed) {
      this.app = { ...this.app, cron: cr };
      this.appChanged = true;
    }
    this.wakeAtMs = cr.off ? undefined : (nextFireAfter(c, Math.max(cr.lastScheduledMs, cr.sinceMs)) ?? undefined);
  }

  /** Appends a finished run (or a time that never ran) and prunes by the history limits: successful ones, failed/missed/skipped ones. */
  private pushCronRun(runs: CronRunSummary[], r: (JobRecord & { scheduledMs: number; firedAtMs: number }) | undefined, status: CronRunStatus, reason: string, c: CronSpec, scheduledMs = r?.scheduledMs ?? 0): CronRunSummary[] {
    const sum: CronRunSummary = {
      run: r?.run ?? 0,
      scheduledMs,
      firedAtMs: r?.firedAtMs ?? 0,
      finishedAtMs: r ? r.finishedAtMs || this.input.nowMs : this.input.nowMs,
      status,
      version: r?.version ?? this.app.version,
      attempts: r?.attempts ?? 0,
      failures: r?.failures ?? 0,
      exitCodes: r ? r.history.filter((a) => a.run === r.run).map((a) => a.exitCode) : [],
      reason: reason.slice(0, 300),
    };
    const all = [...runs, sum];
    const ok = all.filter((x) => x.status === 'succeeded');
    const bad = all.filter((x) => x.status !== 'succeeded');
    const keep = new Set([...ok.slice(ok.length - Math.min(ok.length, c.historyLimit.successful)), ...bad.slice(bad.length - Math.min(bad.length, c.historyLimit.failed))]);
    return all.filter((x) => keep.has(x));
  }

  /** The app stopped or is being removed: its runs in progress end as stopped, and the schedule resumes afresh on start. */
  private closeCronRuns(why: string): void {
    const cr = this.app.cron;
    if (!cr || (cr.active.length === 0 && cr.resume)) return;
    const c = this.input.specs.get(this.app.version)?.cron ?? { historyLimit: { successful: MAX_HISTORY_LIMIT, failed: MAX_HISTORY_LIMIT } } as CronSpec;
    let runs = cr.runs;
    for (const r of cr.active) runs = this.pushCronRun(runs, { ...r, finishedAtMs: this.input.nowMs }, 'stopped', why, c);
    this.app = { ...this.app, cron: { ...cr, active: [], runs, resume: true } };
    this.appChanged = true;
  }

  private pushRun(j: JobRecord, status: JobRecord['runs'][number]['status'], reason: string): JobRecord['runs'] {
    const sum = { run: j.run, version: j.version, status, succeeded: j.succeeded, failures: j.failures, attempts: j.attempts, startedAtMs: j.startedAtMs, finishedAtMs: this.input.nowMs, reason };
    return [...j.runs, sum].slice(-MAX_JOB_RUNS);
  }

  /** The app runs as specified, every task stable: the failure streak is over. */
  private clearFailuresIfStable(spec: AppSpec, current: TaskRecord[]): void {
    if (!this.app.failures) return;
    if (current.length !== spec.replicas || !current.every((t) => isStable(this.input.statuses.get(t.id)))) return;
    const { failures: _, ...rest } = this.app;
    this.app = rest;
    this.appChanged = true;
  }

  /** While a failed task's replacement is backing off: true, with a pending reason that says why. */
  private backingOff(): boolean {
    const f = this.app.failures;
    if (!f || this.input.nowMs >= f.notBeforeMs) return false;
    const last = f.recent.at(-1);
    const delayS = Math.ceil((f.notBeforeMs - (last?.atMs ?? this.input.nowMs)) / 1000);
    this.setPending(`replacing a failed task after a ${delayS}s backoff (${f.count} failed in a row: ${summarizeFailures(f.recent)})`);
    return true;
  }

  private finishDeploy(): void {
    if (this.app.deploy.status !== 'deploying') return;
    this.app = withEvent({ ...this.app, deploy: { ...this.app.deploy, status: 'stable', message: `version ${this.app.version} deployed` } }, this.input.nowMs, `deployment of version ${this.app.version} complete`);
    this.appChanged = true;
  }

  private steadyState(spec: AppSpec, current: TaskRecord[]): void {
    this.finishDeploy();
    this.clearFailuresIfStable(spec, current);
    const unreleased = this.exclusive ? this.unreleased() : [];
    const missing = spec.replicas - current.length;
    if (missing > 0 && unreleased.length > 0 && missing - unreleased.length <= 0) {
      this.setPending(this.waitingFor(unreleased));
    } else if (missing > 0) {
      if (!this.backingOff()) this.place(spec, missing - unreleased.length);
    } else {
      this.setPending('');
      if (missing === 0) return;
      // Scale down: a global app's tasks on nodes it no longer runs on first (ineligible, a
      // constraint no longer matched), then the tasks that serve least (not yet healthy first), newest first.
      const serving = (t: TaskRecord) => Number(isServing(this.input.statuses.get(t.id)));
      const offGlobal = (t: TaskRecord) => Number(spec.mode === 'global' && !this.globalNodes(spec).has(t.nodeId));
      const extras = [...current].sort((a, b) => offGlobal(b) - offGlobal(a) || serving(a) - serving(b) || b.createdAtMs - a.createdAtMs);
      for (const t of extras.slice(0, -missing)) this.stop(t, `scaled to ${spec.replicas}`);
    }
  }

  /**
   * Tasks on a draining node move off, start-first like a rolling update: a replacement is
   * placed elsewhere (`update.parallel` at a time) and a draining task stops for each
   * replacement that runs stable. One that fits nowhere keeps running (the app says pending).
   */
  private migrate(spec: AppSpec, current: TaskRecord[], draining: TaskRecord[]): void {
    this.finishDeploy();
    if (this.exclusive) return this.migrateStopFirst(spec, current, draining);
    const stable = current.filter((t) => isStable(this.input.statuses.get(t.id))).length;
    const stopN = Math.max(0, draining.length + stable - spec.replicas);
    for (const t of draining.slice(0, stopN)) this.stop(t, `node ${this.nodeName(t.nodeId)} is draining`);
    const missing = spec.replicas - current.length;
    const want = Math.min(missing, spec.update.parallel - (current.length - stable));
    if (want > 0) {
      if (!this.backingOff()) this.place(spec, want);
    } else this.setPending('');
  }

  /**
   * Exclusive apps move stop-first: up to `update.parallel` draining tasks stop at a time, and each
   * replacement is placed once the task it replaces is released.
   */
  private migrateStopFirst(spec: AppSpec, current: TaskRecord[], draining: TaskRecord[]): void {
    const stable = current.filter((t) => isStable(this.input.statuses.get(t.id))).length;
    const unreleased = this.unreleased();
    const stopN = Math.max(0, spec.update.parallel - unreleased.length - (current.length - stable));
    for (const t of draining.slice(0, stopN)) this.stop(t, `node ${this.nodeName(t.nodeId)} is draining`);
    this.placeFreeSlots(spec, current.length + draining.length - Math.min(stopN, draining.length), spec.update.parallel - (current.length - stable));
  }

  /** Exclusive apps: places into the slots that neither live nor unreleased tasks hold (at most `limit`). */
  private placeFreeSlots(spec: AppSpec, liveCount: number, limit: number): void {
    const unreleased = this.unreleased();
    const free = spec.replicas - liveCount - unreleased.length;
    const want = Math.min(free, limit);
    if (want > 0) {
      if (!this.backingOff()) this.place(spec, want);
    } else if (unreleased.length > 0 && liveCount < spec.replicas) this.setPending(this.waitingFor(unreleased));
    else this.setPending('');
  }

  /** Start-first rolling update: new tasks up to `parallel` in flight; an old task stops for each new one that runs stable. */
  private rollingUpdate(spec: AppSpec, current: TaskRecord[], oldVersion: TaskRecord[], draining: TaskRecord[]): void {
    const now = this.input.nowMs;
    if (this.app.deploy.status !== 'deploying') {
      this.app = withEvent({ ...this.app, deploy: { status: 'deploying', fromVersion: oldVersion[0].version, startedAtMs: now, message: '' } }, now, `rolling update to version ${this.app.version} (${spec.update.parallel} at a time)`);
      this.appChanged = true;
    }
    const old = [...draining, ...oldVersion];
    const failed = current.find((t) => {
      const s = this.input.statuses.get(t.id);
      const ageMs = this.input.taskAgeMs ? this.input.taskAgeMs(t) : now - t.createdAtMs;
      const late = !isStable(s) && ageMs > spec.update.healthyTimeoutMs;
      return late || s?.health === 'unhealthy' || isTerminal(s);
    });
    const replacedFailure = this.replacedThisRound(this.app.version);
    if (failed || replacedFailure) {
      const why = failed ? this.failureReason(failed, spec) : this.replacedFailureReason(this.app.version);
      if (spec.update.autoRollback && this.app.previousVersion > 0) return this.rollback(why);
      if (this.app.deploy.status !== 'failed') {
        this.app = withEvent({ ...this.app, deploy: { ...this.app.deploy, status: 'failed', message: why } }, now, `deployment of version ${this.app.version} failed: ${why}; not rolling back (autoRollback is off)`);
        this.appChanged = true;
      }
      return;
    }
    if (this.app.deploy.status === 'failed') return;
    const serving = current.filter((t) => isStable(this.input.statuses.get(t.id))).length;
    if (this.exclusive) {
      // Stop-first: an old task stops (up to `parallel` at a time), its replacement starts once it is released.
      const inFlightNew = current.length - serving;
      const stopN = Math.max(0, Math.min(old.length, spec.update.parallel - inFlightNew - this.unreleased().length));
      for (const t of old.slice(0, stopN)) this.stop(t, `replaced by version ${this.app.version}`);
      return this.placeFreeSlots(spec, current.length + old.length - stopN, spec.update.parallel - inFlightNew);
    }
    const stopOld = Math.max(0, old.length + serving - spec.replicas);
    for (const t of old.slice(0, stopOld)) this.stop(t, `replaced by version ${this.app.version}`);
    const inFlight = current.length - serving;
    const want = Math.min(spec.replicas - current.length, spec.update.parallel - inFlight);
    if (want > 0) this.place(spec, want);
  }

  /** The first cause the agent recorded (e.g. the health check result), not the stop it led to. */
  private failureReason(t: TaskRecord, spec: AppSpec): string {
    const s = this.input.statuses.get(t.id);
    const where = `task ${t.id} on ${this.nodeName(t.nodeId)}`;
    if (s?.cause) return `${where}: ${s.cause}`;
    if (s?.health === 'unhealthy') return `${where} failed its health check${s.reason ? ` (${s.reason})` : ''}`;
    if (isTerminal(s)) return `${where} ${s!.state}${s!.exitCode !== null ? ` with exit code ${s!.exitCode}` : ''}${s!.reason ? `: ${s!.reason}` : ''}`;
    const minS = Math.round((spec.update.minHealthyMs ?? 0) / 1000);
    return `${where} was not ${minS > 0 ? `healthy for ${minS}s` : 'healthy'} within ${Math.round(spec.update.healthyTimeoutMs / 1000)}s`;
  }

  private replacedFailureReason(version: number): string {
    const t = [...this.upserts.values()].find((x) => x.version === version && x.desired === 'stop' && x.stopReason.startsWith('failed'));
    return t ? `task ${t.id} on ${this.nodeName(t.nodeId)} ${t.stopReason}` : 'a new task failed';
  }

  private replacedThisRound(version: number): boolean {
    return [...this.upserts.values()].some((t) => t.version === version && t.desired === 'stop' && t.stopReason.startsWith('failed'));
  }

  private rollback(why: string): void {
    const failedVersion = this.app.version;
    const back = this.app.previousVersion;
    for (const t of this.live()) if (t.version === failedVersion) this.stop(t, `rolled back: ${why}`);
    const { failures: _, ...rest } = this.app; // the failures were the new version's
    this.app = withEvent(
      { ...rest, version: back, previousVersion: 0, deploy: { status: 'rolled-back', fromVersion: failedVersion, startedAtMs: this.input.nowMs, message: why } },
      this.input.nowMs,
      `version ${failedVersion} rolled back to version ${back}: ${why}`,
    );
    this.appChanged = true;
  }

  /** Places up to count tasks of spec; tag: a cron run's version and number. Returns how many were placed. */
  private place(spec: AppSpec, count: number, tag?: { version: number; run: number; scheduledMs?: number }): number {
    const n = Math.min(count, MAX_PLACEMENTS_PER_ROUND);
    const version = tag?.version ?? this.app.version;
    let pinnedNodeId: string | undefined;
    for (const v of spec.volumes) {
      const pin = this.input.volumePins.get(v.name);
      if (pin) pinnedNodeId = pin;
    }
    if (pinnedNodeId && !this.nodeUp(pinnedNodeId)) {
      this.setPending(`volume pinned to node ${this.nodeName(pinnedNodeId)}, which is down`);
      return 0;
    }
    const avoidNodeIds = new Set((this.app.failures?.recent ?? []).map((f) => f.nodeId));
    const preferNodeIds = this.input.preferNodeIds?.(spec);
    const plan = this.input.scheduler.place({ app: this.app.name, version, count: n, spec, pinnedNodeId, avoidNodeIds, ...(preferNodeIds ? { preferNodeIds } : {}) });
    for (const p of plan.placements) {
      const t: TaskRecord = { id: this.input.newTaskId(), app: this.app.name, version, nodeId: p.nodeId, hostPorts: p.hostPorts, desired: 'run', createdAtMs: this.input.nowMs, stopReason: '' };
      if (tag) {
        t.run = tag.run;
        if (tag.scheduledMs !== undefined) t.scheduledMs = tag.scheduledMs;
      }
      this.tasks.set(t.id, t);
      this.upserts.set(t.id, t);
      this.app = withEvent(this.app, this.input.nowMs, `placed ${t.id} on ${this.nodeName(p.nodeId)}`);
      this.appChanged = true;
      if (!pinnedNodeId && spec.volumes.length > 0) {
        pinnedNodeId = p.nodeId;
        for (const v of spec.volumes) this.newPins.push({ volume: v.name, nodeId: p.nodeId });
      }
    }
    this.setPending(plan.unplaced > 0 ? `${plan.unplaced} ${tag ? `task(s) of cron run ${tag.run}` : 'replica(s)'} pending: ${plan.reason}` : '');
    return plan.placements.length;
  }

  private stop(t: TaskRecord, reason: string): void {
    const stopped: TaskRecord = { ...t, desired: 'stop', stopReason: reason };
    this.tasks.set(t.id, stopped);
    this.upserts.set(t.id, stopped);
    this.app = withEvent(this.app, this.input.nowMs, `stopping ${t.id}: ${reason}`);
    this.appChanged = true;
  }

  /** Deletes stopped tasks that finished (or whose node is gone), keeping the newest few for history. */
  private collectGarbage(keep: number): void {
    // An exclusive app keeps a stopped task until it is released: deleting it would free its slot.
    const unreleased = new Set(this.exclusive ? this.unreleased().map((t) => t.id) : []);
    const done = [...this.tasks.values()]
      .filter((t) => t.desired === 'stop' && !unreleased.has(t.id) && (isTerminal(this.input.statuses.get(t.id)) || !this.nodeUp(t.nodeId) || !this.input.statuses.has(t.id) || this.input.statuses.get(t.id)?.released === true))
      .sort((a, b) => b.createdAtMs - a.createdAtMs || (a.id < b.id ? -1 : 1));
    for (const t of done.slice(keep)) {
      this.tasks.delete(t.id);
      this.upserts.delete(t.id);
      this.deletes.push(t.id);
    }
  }

  private setPending(reason: string): void {
    if (this.schedulePart) {
      this.schedPending = reason;
      return;
    }
    if (this.app.pending === reason) return;
    this.app = { ...this.app, pending: reason };
    if (reason) this.app = withEvent(this.app, this.input.nowMs, reason);
    this.appChanged = true;
  }
}

export type { SchedNode, SchedTask };
