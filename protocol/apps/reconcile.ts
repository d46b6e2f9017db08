// The orchestrator's decision for one app, as a pure function (Nomad's "evaluation"): given
// the app record, its specs, its tasks and their observed status, and the cluster's nodes and
// allocations, return the writes that move the app toward its spec. The leader wraps them in
// one kv.txn guarded by the scheduling epoch, so a plan built on stale state is refused and
// recomputed, never applied twice or over-committing a node.
import { SchedulerState, type SchedNode, type SchedTask } from './scheduler.js';
import { EXCLUSIVE_LEASE_MS, type AppSpec } from './spec.js';
import { summarizeFailures } from './failure.js';
import { MAX_JOB_ATTEMPTS, MAX_JOB_RUNS, type JobAttempt, type JobOutcome, type JobRecord } from './model.js';
import { DEFAULT_JOB } from './spec.js';
import { MAX_RECENT_FAILURES, causeOf, isServing, isStable, isTerminal, withEvent, type AppRecord, type TaskRecord, type TaskStatusRecord } from './model.js';

/** New placements per app per round (bounds one transaction's size). */
export const MAX_PLACEMENTS_PER_ROUND = 200;
/** Stopped, finished tasks kept per app for `omni inspect` history. */
export const KEEP_STOPPED_TASKS = 6;
/** Finished tasks kept per job (their statuses hold exit codes and last output for `omni inspect`). */
export const KEEP_JOB_TASKS = 10;
/** The stop reason of a job task that exited 0: it is never started again. */
export const JOB_SUCCEEDED = 'succeeded';
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
}

export function reconcileApp(input: ReconcileInput): ReconcileOutput {
  const r = new Reconciler(input);
  r.run();
  return r.output();
}

class Reconciler {
  private app: AppRecord;
  private readonly tasks = new Map<string, TaskRecord>();
  private readonly upserts = new Map<string, TaskRecord>();
  private readonly deletes: string[] = [];
  private readonly newPins: { volume: string; nodeId: string }[] = [];
  private removeApp = false;
  private appChanged = false;

  constructor(private readonly input: ReconcileInput) {
    this.app = input.app;
    for (const t of input.tasks) this.tasks.set(t.id, t);
  }

  output(): ReconcileOutput {
    const changed = this.appChanged || this.upserts.size > 0 || this.deletes.length > 0 || this.removeApp;
    return { app: this.app, upserts: [...this.upserts.values()], deletes: this.deletes, newPins: this.newPins, removeApp: this.removeApp, changed };
  }

  run(): void {
    if (this.app.state === 'stopped' || this.app.state === 'removing') {
      for (const t of this.live()) this.stop(t, this.app.state === 'removing' ? 'app removed' : 'app stopped');
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
      return;
    }
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
    for (const t of this.live()) {
      const s = this.input.statuses.get(t.id);
      if (t.version !== this.app.version) this.stop(t, `replaced by a new run of version ${this.app.version}`);
      else if (s?.state === 'exited' && s.exitCode === 0) {
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
    const live = this.live().filter((t) => t.version === this.app.version);
    if (j.succeeded >= spec.replicas) {
      j.status = 'succeeded';
      j.finishedAtMs = now;
      j.runs = this.pushRun(j, 'succeeded', '');
      this.app = withEvent({ ...this.app, job: j }, now, `job run ${j.run} succeeded (${j.attempts} task${j.attempts === 1 ? '' : 's'}, ${j.failures} failure${j.failures === 1 ? '' : 's'})`);
      this.appChanged = true;
      this.setPending('');
      return;
    }
    if (j.failures > js.retries) {
      const failed = j.history.filter((a) => a.run === j.run && a.outcome !== 'succeeded');
      j.reason = summarizeFailures(failed.slice(-MAX_RECENT_FAILURES).map((a) => ({ node: a.node, cause: a.cause })));
      j.status = 'failed';
      j.finishedAtMs = now;
      j.runs = this.pushRun(j, 'failed', j.reason);
      for (const t of live) this.stop(t, 'job failed');
      this.app = withEvent({ ...this.app, job: j }, now, `job run ${j.run} failed after ${j.failures} failure${j.failures === 1 ? '' : 's'} (retries ${js.retries}): ${j.reason}`);
      this.appChanged = true;
      this.setPending('');
      return;
    }
    // At most once (exclusive): a retired task that may still run holds its slot until released.
    const unreleased = this.exclusive ? this.unreleased().filter((t) => t.stopReason !== JOB_SUCCEEDED) : [];
    const want = spec.replicas - j.succeeded - live.length - unreleased.length;
    if (want > 0 && now < j.notBeforeMs) {
      const last = j.history.at(-1);
      this.setPending(`retrying a failed job task after a ${Math.ceil((j.notBeforeMs - now) / 1000)}s backoff (failure ${j.failures} of at most ${js.retries} retries${last?.cause ? `: ${last.cause}` : ''})`);
    } else if (want > 0) {
      const before = this.upserts.size;
      this.place(spec, want);
      const placed = [...this.upserts.values()].filter((t) => t.desired === 'run' && t.version === this.app.version && !this.input.tasks.some((x) => x.id === t.id)).length;
      if (placed > 0 || this.upserts.size !== before) {
        j.attempts += placed;
        changed = changed || placed > 0;
      }
    } else if (unreleased.length > 0 && live.length + j.succeeded < spec.replicas) this.setPending(this.waitingFor(unreleased));
    else this.setPending('');
    if (changed) {
      this.app = { ...this.app, job: j };
      this.appChanged = true;
    }
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
      // Scale down: stop the tasks that serve least (not yet healthy first), newest first.
      const serving = (t: TaskRecord) => Number(isServing(this.input.statuses.get(t.id)));
      const extras = [...current].sort((a, b) => serving(a) - serving(b) || b.createdAtMs - a.createdAtMs);
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

  private place(spec: AppSpec, count: number): void {
    const n = Math.min(count, MAX_PLACEMENTS_PER_ROUND);
    let pinnedNodeId: string | undefined;
    for (const v of spec.volumes) {
      const pin = this.input.volumePins.get(v.name);
      if (pin) pinnedNodeId = pin;
    }
    if (pinnedNodeId && !this.nodeUp(pinnedNodeId)) {
      this.setPending(`volume pinned to node ${this.nodeName(pinnedNodeId)}, which is down`);
      return;
    }
    const avoidNodeIds = new Set((this.app.failures?.recent ?? []).map((f) => f.nodeId));
    const plan = this.input.scheduler.place({ app: this.app.name, version: this.app.version, count: n, spec, pinnedNodeId, avoidNodeIds });
    for (const p of plan.placements) {
      const t: TaskRecord = { id: this.input.newTaskId(), app: this.app.name, version: this.app.version, nodeId: p.nodeId, hostPorts: p.hostPorts, desired: 'run', createdAtMs: this.input.nowMs, stopReason: '' };
      this.tasks.set(t.id, t);
      this.upserts.set(t.id, t);
      this.app = withEvent(this.app, this.input.nowMs, `placed ${t.id} on ${this.nodeName(p.nodeId)}`);
      this.appChanged = true;
      if (!pinnedNodeId && spec.volumes.length > 0) {
        pinnedNodeId = p.nodeId;
        for (const v of spec.volumes) this.newPins.push({ volume: v.name, nodeId: p.nodeId });
      }
    }
    this.setPending(plan.unplaced > 0 ? `${plan.unplaced} replica(s) pending: ${plan.reason}` : '');
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
    if (this.app.pending === reason) return;
    this.app = { ...this.app, pending: reason };
    if (reason) this.app = withEvent(this.app, this.input.nowMs, reason);
    this.appChanged = true;
  }
}

export type { SchedNode, SchedTask };
