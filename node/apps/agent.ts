// The agent on every node: reconciles the tasks the leader placed here against what the
// drivers report — starts, restarts (per policy), stops, health-checks — and writes each
// task's observed status (only on change) back through Raft. After its own restart it
// re-attaches to the tasks its drivers still know instead of starting duplicates.
import { recordJson } from '../../protocol/apps/record-codec.js';
import { fileContent } from './secret-seal.js';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../logger.js';
import type { Proposer, StateView } from '../cluster/ports.js';
import type { DriverSet, TaskConfig, TaskDriver, TaskStatus } from './drivers/types.js';
import { assignGpus } from '../../protocol/apps/gpu-assign.js';

/** The spec's container options that are set, for the driver (TaskConfig fields of the same names). */
function containerOptions(spec: AppSpec): Partial<TaskConfig> {
  const out: Partial<TaskConfig> = {};
  for (const k of CONTAINER_OPTIONS) if (spec[k] !== undefined) Object.assign(out, { [k]: spec[k] });
  return out;
}
import { execProbe, probe } from './health-check.js';
import { LabKernelWatch, type KernelActivity } from './lab-activity.js';
import { CoalescedLoop } from './coalesced-loop.js';
import { portsInUse } from './port-probe.js';
import { runsToCompletion, taskSpec } from '../../protocol/apps/cron.js';
import { HEALTH_LOG_ENTRIES, HEALTH_LOG_ENTRY_CHARS, LAST_OUTPUT_LINES, LAST_OUTPUT_LINE_CHARS, parseRecord, specKey, statusKey, taskKey, type TaskRecord, type TaskStatusRecord } from '../../protocol/apps/model.js';
import { CONTAINER_OPTIONS, DEFAULT_MIN_HEALTHY_MS, EXCLUSIVE_LEASE_MS, networksOf, type AppSpec } from '../../protocol/apps/spec.js';
import { FAILURE_LOG_TAIL_LINES, classifyExit, classifyStartError, type FailureCause } from '../../protocol/apps/failure.js';
import { SELF } from '../cluster/caller.js';
import { OmniError } from '../errors.js';
import type { ReadBackSummary, TaskWorkspaces } from '../sync/task-workspace.js';
import { LAB_WORKSPACE_VOLUME } from '../../protocol/apps/lab.js';
import { REAL_CLOCK, type Clock } from '../timers.js';

const AGENT_INTERVAL_MS = 1000;
const MIN_ROUND_GAP_MS = 25;
export const STOP_TIMEOUT_MS = 5000;
const MAX_TASKS_PER_NODE = 10_000;
// The lease (EXCLUSIVE_LEASE_MS unless the deps say otherwise) is renewed every quarter of it while
// exclusive tasks are here; its expiry is checked every eighth (at most 500 ms); a task starts only
// with at least half of it left (a start must not straddle the expiry); a lapsed lease stops the
// tasks with a grace period of a fifth of it, well inside the second lease the leader waits.
/** Reading the log tail to classify an exit never holds up a restart for longer than this. */
const CLASSIFY_LOG_TIMEOUT_MS = 2000;
/** A lab's kernel count may take longer than its /api health probe on a loaded host. */
const LAB_KERNELS_TIMEOUT_MS = 5000;
/** How often a running task's synced workspace is measured against the app's disk size. */
export const WORKSPACE_CHECK_MS = 15_000;
/** How often a running service's or lab's files are read back into the app's workspace by the node itself (omnid --workspace-sync; 0: only when asked and at the end). */
export const DEFAULT_WORKSPACE_SYNC_MS = 30_000;
/** A read-back that keeps failing (registry down, over the disk size) is given up after this many tries; the files stay on the node until the task is removed. */
const READ_BACK_ATTEMPTS = 3;
const MIB = 1024 * 1024;

interface Local {
  task: TaskRecord;
  /** The node's GPUs this task holds while it runs (protocol/apps/gpu-assign.ts). */
  gpus?: number[];
  /** Between the stop signal and SIGKILL (spec.stopTimeoutMs, else STOP_TIMEOUT_MS). */
  stopTimeoutMs: number;
  driver: TaskDriver;
  run?: TaskStatus;
  restarts: number;
  nextRestartAtMs: number;
  health: TaskStatusRecord['health'];
  healthFailures: number;
  nextProbeAtMs: number;
  probing: boolean;
  reason: string;
  state: TaskStatusRecord['state'];
  starting: boolean;
  stopping: boolean;
  /** Why the last run failed ('' none): kept through the restart or stop it causes, cleared once stable. */
  cause: string;
  /** Set when the agent stops the task for failing its health check: that, not the signal, is the cause. */
  healthKill: string;
  /** exitedAtMs of the run whose exit was classified (each exit is classified once). */
  classifiedExitAtMs: number;
  /** Restarting here cannot help (command missing, port taken): failed until the orchestrator moves it. */
  final: boolean;
  portsInUse: number[];
  /** What the task printed last before its last failed exit. */
  lastOutput: string[];
  /** The last failing health check results (TaskStatusRecord.healthLog). */
  healthLog: string[];
  /** When the current run started (this clock): failures within healthCheck.startPeriodMs of it do not count. */
  runSinceMs: number;
  /** The check passed once in this run: from then on every failure counts (Compose's start_period). */
  passedOnce: boolean;
  /** When the task last started serving (0: not serving); stable after update.minHealthyMs of it. */
  servingSinceMs: number;
  stable: boolean;
  /** A lab's notebook kernels as last counted after a passing health probe (undefined: not a lab, or unknown). */
  kernels?: KernelActivity;
  /** A lab's kernel watch (REST list plus each kernel's IOPub status), while its task runs. */
  kernelWatch?: LabKernelWatch;
  /** Desired 'stop' and not running here: it never starts again (reported, so an exclusive replacement may start). */
  released: boolean;
  /** spec.exclusive: runs only while this node holds its lease. */
  exclusive: boolean;
  /** The task's synced workspace directory (undefined: the app has none, or not prepared yet). */
  workspaceDir?: string;
  /** The workspace was read back after the task's last run ended (or the read-back was given up). */
  readBackDone: boolean;
  readBackFailures: number;
  workspace?: { bytes: number; overLimit?: string };
  nextWorkspaceCheckAtMs: number;
  checkingWorkspace: boolean;
  /** The node's own periodic read-back of a running agent's files (workspaceSyncMs). */
  nextAutoSyncAtMs: number;
  autoSyncing: boolean;
  /** The last periodic read-back's failure (logged once until it changes or a read-back succeeds). */
  autoSyncError?: string;
}

/** What the agent uses: the replica (tasks placed here), status reports, and where it keeps task files. */
export interface AgentDeps extends Proposer {
  /** This node's id: the agent runs the tasks placed on it. */
  readonly id: string;
  readonly log: Logger;
  readonly raft: StateView;
  /** The node's data dir (task files live under it). */
  readonly dataDir: string;
  /** Opens the sealed secrets of specs (node/apps/secret-seal.ts). */
  readonly secretKey?: Buffer;
  /** Default: the process's clock. */
  readonly clock?: Clock;
  /**
   * A linearizable read barrier. Before its first round (at start, and after a restart) the agent
   * waits for it, so it never acts on a replica that has not caught up: a stale replica could
   * still place here a task the leader has moved elsewhere. Until a quorum answers, the agent
   * leaves whatever runs alone.
   */
  readBarrier?(): Promise<void>;
  /**
   * Each lease renewal: exclusive tasks may run until this monotonic time (performance.now()
   * scale). The daemon writes it where the task's supervisor outside omnid can see it, so the
   * task stops at that time even when omnid is down (see EXCLUSIVE_LEASE_MS).
   */
  publishLease?(untilMonotonicMs: number): Promise<unknown> | void;
  /** The exclusive lease (default EXCLUSIVE_LEASE_MS); the leader's orchestrator must use the same. */
  readonly exclusiveLeaseMs?: number;
  /** Service networking (node/net/mesh.ts): names for a task of an app on a network. */
  network?(spec: AppSpec): Promise<{ hostsFile: string; env: Record<string, string>; resolvConf?: string } | undefined>;
  /** Synced workspaces (node/sync/task-workspace.ts); absent: tasks start without one. */
  workspaces?: TaskWorkspaces;
  /**
   * How often the node reads a running service's or lab's files back into the app's workspace by
   * itself (DEFAULT_WORKSPACE_SYNC_MS; 0: only when asked — omni sync — and when the task ends).
   */
  readonly workspaceSyncMs?: number;
}

export class Agent {
  private readonly local = new Map<string, Local>();
  private readonly reported = new Map<string, string>();
  private readonly loop: CoalescedLoop;
  private recovered = false;
  private readonly clock: Clock;
  /** Exclusive tasks may run until this monotonic time: the start of the last successful read barrier + the lease. */
  private leaseUntilMs = 0;
  private renewing = false;
  private lastRenewMs = -Infinity;
  private leaseTimer: unknown;
  private stopped = false;
  private readonly leaseMs: number;

  constructor(
    private readonly d: AgentDeps,
    private readonly drivers: DriverSet,
  ) {
    this.clock = d.clock ?? REAL_CLOCK;
    this.leaseMs = d.exclusiveLeaseMs ?? EXCLUSIVE_LEASE_MS;
    this.loop = new CoalescedLoop(() => this.round(), { intervalMs: AGENT_INTERVAL_MS, minGapMs: MIN_ROUND_GAP_MS, onError: (err) => d.log.warn(`agent: ${err.message}`), clock: this.clock });
  }

  start(): void {
    this.stopped = false;
    this.loop.start();
    this.leaseTimer = this.clock.setInterval(() => this.leaseTick(), Math.min(500, this.leaseMs / 8));
  }

  stop(): void {
    this.stopped = true;
    this.loop.stop();
    this.clock.clearInterval(this.leaseTimer);
    for (const l of this.local.values()) {
      l.kernelWatch?.close();
      l.kernelWatch = undefined;
    }
  }

  /** Whether exclusive tasks may run here now (a quorum answered within the lease). */
  leaseValid(marginMs = 0): boolean {
    return this.clock.monotonicMs() + marginMs < this.leaseUntilMs;
  }

  /**
   * Renews the lease with a read barrier (a quorum answered the leader): valid for
   * EXCLUSIVE_LEASE_MS from the moment the barrier was asked for. Without a barrier (tests
   * that wire none) there is no lease and exclusive tasks never start.
   */
  private async renewLease(): Promise<void> {
    if (!this.d.readBarrier) throw new Error('no read barrier: exclusive tasks cannot hold a lease');
    const askedAtMs = this.clock.monotonicMs();
    this.lastRenewMs = askedAtMs;
    await this.d.readBarrier();
    const until = askedAtMs + this.leaseMs;
    if (until > this.leaseUntilMs) {
      // Published first: a task's supervisor must never see an older deadline than the agent uses.
      await this.d.publishLease?.(until);
      if (until <= this.leaseUntilMs) return;
      const wasValid = this.leaseValid(this.leaseMs / 2);
      this.leaseUntilMs = until;
      if (!wasValid && [...this.local.values()].some((l) => l.exclusive && l.task.desired === 'run')) this.kick();
    }
  }

  /** Renews the lease while exclusive tasks are here, and stops them once it lapsed. */
  private leaseTick(): void {
    if (this.stopped) return;
    const exclusive = [...this.local.values()].filter((l) => l.exclusive);
    if (exclusive.length === 0) return;
    const now = this.clock.monotonicMs();
    if (!this.renewing && now - this.lastRenewMs >= this.leaseMs / 4) {
      this.renewing = true;
      this.renewLease()
        .catch((err: Error) => this.d.log.debug(`agent: lease not renewed: ${err.message}`))
        .finally(() => (this.renewing = false));
    }
    if (this.leaseValid()) return;
    for (const l of exclusive) {
      if (l.stopping || (l.run?.state !== 'running' && !l.starting)) continue;
      void this.stopForLease(l);
    }
  }

  /** The lease lapsed: the task stops here (it starts again once a renewal succeeds, if still placed here). */
  private async stopForLease(l: Local): Promise<void> {
    if (l.stopping) return;
    l.stopping = true;
    const silentS = Math.round((this.clock.monotonicMs() - (this.leaseUntilMs - this.leaseMs)) / 1000);
    this.d.log.warn(`agent: ${l.task.id}: stopping it: exclusive task and no quorum answered for ${silentS}s (lease lapsed)`);
    try {
      // A start in flight is stopped as soon as it returns (startTask checks the lease).
      if (l.run?.state === 'running') await l.driver.stop(l.task.id, this.leaseMs / 5);
      await l.driver.destroy(l.task.id).catch(() => undefined);
      if (l.run && runsToCompletion(this.spec(l.task))) {
        // A job task is never run twice: it ends here as failed, and the leader retries it as a new task.
        const now = this.clock.now();
        l.final = true;
        l.state = 'failed';
        l.health = 'none';
        l.cause = `stopped after ${silentS}s without a quorum (exclusive lease lapsed)`;
        l.reason = l.cause;
        l.run = { taskId: l.task.id, state: 'exited', exitCode: null, startedAtMs: l.run.startedAtMs, exitedAtMs: now, reason: l.cause };
        return;
      }
      l.run = undefined;
      l.state = 'pending';
      l.health = 'none';
      l.servingSinceMs = 0;
      l.stable = false;
      l.reason = `stopped: no quorum answered for ${silentS}s (exclusive lease lapsed); starts again once it holds the lease`;
    } catch (err) {
      this.d.log.warn(`agent: ${l.task.id}: stopping it after its lease lapsed: ${(err as Error).message}`);
    } finally {
      l.stopping = false;
    }
  }

  /** Runs a reconcile round soon (coalesced). */
  kick(): void {
    this.loop.kick();
  }

  /** The node leaves the cluster: its tasks (rescheduled elsewhere by the leader) stop here. */
  async stopAll(): Promise<void> {
    this.loop.stop();
    for (const driver of Object.values(this.drivers)) {
      if (!(await driver.available().catch(() => ({ ok: false }))).ok) continue;
      for (const t of await driver.recover().catch(() => [] as TaskStatus[])) {
        if (t.state === 'running') await driver.stop(t.taskId, STOP_TIMEOUT_MS).catch(() => undefined);
        await driver.destroy(t.taskId).catch(() => undefined);
      }
    }
    for (const l of this.local.values()) l.kernelWatch?.close();
    this.local.clear();
  }

  driverFor(taskId: string): TaskDriver | undefined {
    return this.local.get(taskId)?.driver;
  }

  /** Every task this agent runs, with its app and driver (the node's /metrics). */
  localTasks(): { id: string; app: string; driver: TaskDriver }[] {
    return [...this.local.values()].map((l) => ({ id: l.task.id, app: l.task.app, driver: l.driver }));
  }

  /** The tasks of `app` this agent runs, with their drivers (omni stats: node/apps/task-stats.ts). */
  tasksOf(app: string): { id: string; driver: TaskDriver }[] {
    return [...this.local.values()].filter((l) => l.task.app === app).map((l) => ({ id: l.task.id, driver: l.driver }));
  }

  private async round(): Promise<void> {
    if (!this.recovered) {
      if (this.d.readBarrier) await this.renewLease();
      await this.recover();
    }
    const mine = this.desiredHere();
    // Tasks are handled concurrently: a slow stop (a container's grace period) must not delay
    // another task's start. Per-task flags (starting/stopping) prevent duplicate work.
    await Promise.all([...mine.values()].map((t) => this.reconcileTask(t)));
    await Promise.all(
      [...this.local].filter(([id]) => !mine.has(id)).map(async ([id, l]) => {
        // The task record is gone (app removed, or garbage-collected after stopping).
        if (l.stopping) return;
        l.stopping = true;
        if (l.run?.state === 'running') await l.driver.stop(id, l.stopTimeoutMs).catch(() => undefined);
        await l.driver.destroy(id).catch(() => undefined);
        await this.d.workspaces?.remove(id).catch((err: Error) => this.d.log.warn(`agent: ${id}: removing its workspace: ${err.message}`));
        await rm(this.filesDir(id), { recursive: true, force: true }).catch(() => undefined);
        l.kernelWatch?.close();
        this.local.delete(id);
        this.reported.delete(id);
      }),
    );
    await this.report();
  }

  /** Re-attach: every driver lists what it still runs for us (no duplicates after a restart). */
  private async recover(): Promise<void> {
    const mine = this.desiredHere();
    for (const driver of Object.values(this.drivers)) {
      const ok = await driver.available().catch(() => ({ ok: false as const, reason: 'unavailable' }));
      if (!ok.ok) continue;
      for (const st of await driver.recover().catch(() => [] as TaskStatus[])) {
        const task = mine.get(st.taskId);
        if (!task) {
          // Not ours any more: clean it up.
          if (st.state === 'running') await driver.stop(st.taskId, STOP_TIMEOUT_MS).catch(() => undefined);
          await driver.destroy(st.taskId).catch(() => undefined);
          await this.d.workspaces?.remove(st.taskId).catch(() => undefined);
          continue;
        }
        const prev = this.d.raft.state.tables.status(st.taskId);
        const stable = st.state === 'running' && prev?.stable === true;
        this.local.set(st.taskId, { ...this.fresh(task, driver, this.spec(task)), run: st, restarts: prev?.restarts ?? 0, state: st.state === 'running' ? 'running' : 'exited', health: st.state === 'running' ? (prev?.health ?? 'starting') : 'none', cause: prev?.cause ?? '', lastOutput: prev?.lastOutput ?? [], stable, servingSinceMs: stable ? 1 : 0 });
        const l = this.local.get(st.taskId)!;
        if (st.gpus) l.gpus = st.gpus; // what it holds, so no task started after this restart is given the same GPU
        if (this.d.workspaces && (await this.d.workspaces.prepared(st.taskId))) l.workspaceDir = this.d.workspaces.dir(st.taskId);
        this.d.log.info(`agent: re-attached to task ${st.taskId} (${st.state})`);
      }
    }
    this.recovered = true;
  }

  private desiredHere(): Map<string, TaskRecord> {
    const out = new Map<string, TaskRecord>();
    // Through the tasks-by-node index: a round reads this node's tasks, not every task.
    const state = this.d.raft.state;
    for (const t of state.tables.tasksOnNode(this.d.id).slice(0, MAX_TASKS_PER_NODE)) {
      if (t.nodeId === this.d.id) out.set(t.id, t);
    }
    return out;
  }

  private spec(t: TaskRecord): AppSpec | undefined {
    // A service's scheduled run runs the schedule's command (protocol/apps/cron.ts).
    return taskSpec(parseRecord<AppSpec>(this.d.raft.state.kvGet(specKey(t.app, t.version))?.value), t);
  }

  private fresh(task: TaskRecord, driver: TaskDriver, spec: AppSpec | undefined): Local {
    return { released: false, exclusive: spec?.exclusive === true, stopTimeoutMs: spec?.stopTimeoutMs ?? STOP_TIMEOUT_MS, task, driver, restarts: 0, nextRestartAtMs: 0, health: 'none', healthFailures: 0, nextProbeAtMs: 0, probing: false, reason: '', state: 'pending', starting: false, stopping: false, cause: '', healthKill: '', classifiedExitAtMs: 0, final: false, portsInUse: [], lastOutput: [], servingSinceMs: 0, stable: false, healthLog: [], runSinceMs: 0, passedOnce: false, readBackDone: false, readBackFailures: 0, nextWorkspaceCheckAtMs: 0, checkingWorkspace: false, nextAutoSyncAtMs: 0, autoSyncing: false };
  }

  private async reconcileTask(t: TaskRecord): Promise<void> {
    const spec = this.spec(t);
    if (!spec) return;
    let l = this.local.get(t.id);
    if (!l) {
      const driver = this.drivers[spec.driver];
      if (!driver) return;
      l = this.fresh(t, driver, spec);
      this.local.set(t.id, l);
      if (runsToCompletion(spec) && t.desired === 'run') this.adoptJobRun(l);
    }
    l.task = t;
    l.exclusive = spec.exclusive === true;
    if (t.desired === 'stop') return this.stopTask(l);
    if (l.run?.state === 'running') await this.refresh(l);
    if (!l.run) return this.startTask(l, spec);
    if (l.run.state === 'exited') {
      l.servingSinceMs = 0;
      l.stable = false;
      return this.onExit(l, spec);
    }
    this.maybeProbe(l, spec);
    this.trackStable(l, spec);
    this.maybeCheckWorkspace(l, spec);
    this.maybeAutoSync(l, spec);
  }

  /**
   * A running service or lab (an agent: its copy wins a conflict) writes files the cluster does
   * not have until something reads them back; the node does so every workspaceSyncMs by itself,
   * so a node that dies loses at most that much of its tasks' work. Nothing changed: a stat of the
   * directory and one record read (the read-back's no-op path). Never two at once for a task
   * (TaskWorkspaces runs one sync per task at a time; a stop's read-back waits for it).
   */
  private maybeAutoSync(l: Local, spec: AppSpec): void {
    const ws = this.d.workspaces;
    const every = this.d.workspaceSyncMs ?? DEFAULT_WORKSPACE_SYNC_MS;
    if (!ws || every <= 0 || !l.workspaceDir || l.autoSyncing || l.stopping || l.starting || l.run?.state !== 'running' || !this.isAgentTask(l, spec)) return;
    const now = this.clock.now();
    if (l.nextAutoSyncAtMs === 0) l.nextAutoSyncAtMs = now + every; // the first one an interval after the start
    if (now < l.nextAutoSyncAtMs) return;
    l.autoSyncing = true;
    void ws
      .readBack(l.task.id, l.task.app, true, this.limitBytes(spec), 'push')
      .then(() => (l.autoSyncError = undefined))
      .catch((err: Error) => {
        const msg = `agent: ${l.task.id}: reading its files back into the workspace: ${err.message} (tried every ${Math.round(every / 1000)} s)`;
        if (l.autoSyncError === err.message) return this.d.log.debug(msg);
        l.autoSyncError = err.message;
        this.d.log.warn(msg);
      })
      .finally(() => {
        l.autoSyncing = false;
        l.nextAutoSyncAtMs = this.clock.now() + every;
      });
  }

  /** A service/lab task (the agent's copy wins a read-back conflict) or a job/cron run (the cluster's copy wins). */
  private isAgentTask(l: Local, spec: AppSpec | undefined): boolean {
    return !runsToCompletion(spec) && l.task.run === undefined;
  }

  private limitBytes(spec: AppSpec | undefined): number | undefined {
    return spec?.resources.diskMB ? spec.resources.diskMB * MIB : undefined;
  }

  /**
   * Materialises the app's synced workspace for a task about to start (first start only: a
   * restart keeps the task's files). Returns false when the task cannot start yet.
   */
  private async prepareWorkspace(l: Local, spec: AppSpec): Promise<boolean> {
    const ws = this.d.workspaces;
    if (!ws || l.workspaceDir || spec.driver === 'mock' || spec.driver === 'forge') return true;
    if (!(await ws.prepared(l.task.id)) && !(await ws.appHasWorkspace(l.task.app))) return true;
    try {
      l.workspaceDir = await ws.prepare(l.task.id, l.task.app, this.limitBytes(spec));
      l.readBackDone = false;
      l.readBackFailures = 0;
      return true;
    } catch (err) {
      const msg = (err as Error).message;
      if (err instanceof OmniError && (err.code === 'TOO_LARGE' || err.code === 'INVALID')) {
        const now = this.clock.now();
        l.run = { taskId: l.task.id, state: 'exited', exitCode: null, startedAtMs: now, exitedAtMs: now, reason: msg };
        l.classifiedExitAtMs = now;
        this.failHere(l, { cause: `workspace: ${msg}`.slice(0, 300), permanent: true, portsInUse: [] }, `not started: its workspace cannot be materialised: ${msg}`);
        return false;
      }
      // the registry not up yet, a peer unreachable: tried again next round
      l.state = 'pending';
      l.reason = `waiting to materialise its workspace: ${msg}`;
      this.d.log.warn(`agent: ${l.task.id}: ${l.reason}`);
      return false;
    }
  }

  /**
   * Writes the task's files back into the app's workspace once its run ended (stopped, or a job /
   * cron run finished). Failures are retried on the next rounds, then given up (the files stay
   * on the node until the task is removed); the reason says so.
   */
  private async readBackOnce(l: Local, spec: AppSpec | undefined): Promise<void> {
    const ws = this.d.workspaces;
    if (!ws || !l.workspaceDir || l.readBackDone) return;
    try {
      await ws.readBack(l.task.id, l.task.app, this.isAgentTask(l, spec), this.limitBytes(spec));
      l.readBackDone = true;
    } catch (err) {
      l.readBackFailures++;
      const msg = `its files were not written back to the workspace: ${(err as Error).message}`;
      this.d.log.warn(`agent: ${l.task.id}: ${msg} (attempt ${l.readBackFailures} of ${READ_BACK_ATTEMPTS})`);
      if (l.readBackFailures >= READ_BACK_ATTEMPTS || (err instanceof OmniError && err.code === 'TOO_LARGE')) {
        l.readBackDone = true;
        l.cause = msg.slice(0, 300);
      }
    }
  }

  /** omni sync of a running app (POST /v1/apps/NAME/workspace/sync): every task of `app` here with a workspace reads its files back now. */
  async syncWorkspaces(app: string): Promise<ReadBackSummary[]> {
    const ws = this.d.workspaces;
    if (!ws) return [];
    const out: ReadBackSummary[] = [];
    for (const l of this.local.values()) {
      if (l.task.app !== app || !l.workspaceDir) continue;
      const spec = this.spec(l.task);
      out.push(await ws.readBack(l.task.id, app, this.isAgentTask(l, spec), this.limitBytes(spec)));
    }
    return out;
  }

  /** What this node's tasks' workspaces held when last measured (the node's disk report adds it to the free space). */
  workspaceBytesInUse(): number {
    let total = 0;
    for (const l of this.local.values()) if (l.workspaceDir) total += l.workspace?.bytes ?? 0;
    return total;
  }

  /** Measures a running task's workspace now and then; over the disk size it is reported (the task keeps running). */
  private maybeCheckWorkspace(l: Local, spec: AppSpec): void {
    const ws = this.d.workspaces;
    if (!ws || !l.workspaceDir || l.checkingWorkspace || this.clock.now() < l.nextWorkspaceCheckAtMs) return;
    l.checkingWorkspace = true;
    const limit = this.limitBytes(spec);
    void ws
      .size(l.task.id)
      .then((bytes) => {
        if (bytes === undefined) return;
        const over = limit !== undefined && bytes > limit ? `the workspace holds ${(bytes / MIB).toFixed(1)} MiB, over the app's disk size of ${(limit / MIB).toFixed(1)} MiB: remove files (a sync back fails while it is over)` : undefined;
        if (over && !l.workspace?.overLimit) this.d.log.warn(`agent: ${l.task.id}: ${over}`);
        l.workspace = { bytes, ...(over ? { overLimit: over } : {}) };
      })
      .catch((err: Error) => this.d.log.debug(`agent: ${l.task.id}: measuring its workspace: ${err.message}`))
      .finally(() => {
        l.checkingWorkspace = false;
        l.nextWorkspaceCheckAtMs = this.clock.now() + WORKSPACE_CHECK_MS;
      });
  }

  /**
   * A job task this agent has no local record of (it restarted, its driver lost the process) but
   * that already ran: never started again. One that finished keeps its reported end; one that was
   * running is reported failed, so the orchestrator counts the attempt and retries it as a new task.
   */
  private adoptJobRun(l: Local): void {
    const prev = this.d.raft.state.tables.status(l.task.id);
    if (!prev || (prev.state === 'pending' && !(prev.startedAtMs > 0))) return;
    const now = this.clock.now();
    l.final = true;
    l.restarts = prev.restarts;
    l.cause = prev.cause ?? '';
    l.lastOutput = prev.lastOutput ?? [];
    if (prev.state === 'exited' || prev.state === 'failed') {
      l.state = prev.state;
      l.reason = prev.reason;
      l.run = { taskId: l.task.id, state: 'exited', exitCode: prev.exitCode, startedAtMs: prev.startedAtMs, exitedAtMs: prev.updatedAtMs || now };
      return;
    }
    l.state = 'failed';
    l.cause = 'the job task disappeared (its node restarted)';
    l.reason = l.cause;
    l.run = { taskId: l.task.id, state: 'exited', exitCode: null, startedAtMs: prev.startedAtMs, exitedAtMs: now, reason: l.cause };
    this.d.log.warn(`agent: job task ${l.task.id} ran before and is gone: reported failed, not started again`);
  }

  /** Stable: serving (running, health passing) for update.minHealthyMs without a restart. */
  private trackStable(l: Local, spec: AppSpec): void {
    if (l.state !== 'running' || (l.health !== 'healthy' && l.health !== 'none')) {
      l.servingSinceMs = 0;
      l.stable = false;
      return;
    }
    const now = this.clock.now();
    if (l.servingSinceMs === 0) l.servingSinceMs = now;
    if (!l.stable && now - l.servingSinceMs >= (spec.update.minHealthyMs ?? DEFAULT_MIN_HEALTHY_MS)) {
      l.stable = true;
      l.cause = '';
      l.lastOutput = [];
      l.healthKill = '';
    }
  }

  /** This task cannot run here: failed at once (no local restarts); the orchestrator replaces it. */
  private failHere(l: Local, f: FailureCause, reason: string): void {
    l.final = true;
    l.state = 'failed';
    l.health = 'none';
    l.cause = f.cause;
    l.portsInUse = f.portsInUse;
    l.reason = reason;
    this.d.log.warn(`agent: ${l.task.id}: ${reason}`);
  }

  private async startTask(l: Local, spec: AppSpec): Promise<void> {
    if (l.starting || l.stopping) return;
    if (l.exclusive && !this.leaseValid(this.leaseMs / 2)) {
      // At most once: only a node that a quorum answered within the lease starts it.
      l.state = 'pending';
      // Keep the reason of a stop for a lapsed lease: it says why it is not running.
      if (!l.reason.includes('lease')) l.reason = 'waiting for the lease (a quorum read) before starting this exclusive task';
      if (!this.renewing && this.d.readBarrier) {
        this.renewing = true;
        void this.renewLease()
          .catch((err: Error) => this.d.log.debug(`agent: lease not renewed: ${err.message}`))
          .finally(() => (this.renewing = false));
      }
      return;
    }
    l.gpus = undefined;
    if (spec.resources.gpus > 0) {
      // devices no other task here holds (the scheduler reserved the count on this node); none
      // free — one still stopping, say — is a wait, not a failed start
      const total = this.d.raft.state.node(this.d.id)?.resources.gpus.length ?? 0;
      const held = [...this.local.values()].flatMap((o) => (o !== l && o.gpus && (o.starting || o.stopping || o.run?.state === 'running') ? o.gpus : []));
      const gpus = assignGpus(spec.resources.gpus, total, held);
      if (!gpus) {
        const reason = `waiting for GPUs: needs ${spec.resources.gpus} GPU(s), ${total} on this node, ${held.length} held by other tasks`;
        if (l.reason !== reason || l.state !== 'pending') {
          l.state = 'pending';
          l.reason = reason;
          void this.report();
        }
        return;
      }
      l.gpus = gpus;
    }
    l.starting = true;
    l.state = 'starting';
    l.health = spec.healthCheck ? 'starting' : 'none';
    l.servingSinceMs = 0;
    l.stable = false;
    l.kernels = undefined;
    l.kernelWatch?.close();
    l.kernelWatch = undefined;
    void this.report(); // written while the driver starts the task, not before
    try {
      // A port another process holds would only crash-loop the task: report it so the scheduler picks another.
      const busy = spec.driver === 'mock' ? [] : await portsInUse(l.task.hostPorts, (i) => spec.ports[i]?.protocol === 'udp');
      if (busy.length > 0) {
        const f = classifyStartError(`address already in use: ${busy.join(', ')}`, busy);
        l.run = { taskId: l.task.id, state: 'exited', exitCode: null, startedAtMs: this.clock.now(), exitedAtMs: this.clock.now(), reason: f.cause };
        return this.failHere(l, f, `not started: ${f.cause}`);
      }
      if (!(await this.prepareWorkspace(l, spec))) return;
      const cfg = { ...(await this.taskConfig(l.task, spec, l.workspaceDir)), ...(l.gpus ? { gpus: l.gpus } : {}) };
      l.readBackDone = false;
      l.run = await l.driver.start(cfg);
      if (l.exclusive && !this.leaseValid()) {
        l.starting = false;
        return void (await this.stopForLease(l));
      }
      l.state = 'running';
      l.reason = '';
      l.portsInUse = [];
      l.healthFailures = 0;
      // Compose's start_period: checks run from the start, failures during it do not count.
      l.runSinceMs = this.clock.now();
      l.passedOnce = false;
      l.nextProbeAtMs = this.clock.now();
      this.d.log.info(`agent: started ${l.task.id} (${spec.driver})`);
    } catch (err) {
      const f = classifyStartError((err as Error).message, l.task.hostPorts);
      const now = this.clock.now();
      l.run = { taskId: l.task.id, state: 'exited', exitCode: null, startedAtMs: now, exitedAtMs: now, reason: (err as Error).message };
      l.classifiedExitAtMs = now; // classified here, from the start error
      l.cause = f.cause;
      l.portsInUse = f.portsInUse;
      if (f.permanent) this.failHere(l, f, `could not start: ${f.cause}`);
      else {
        l.reason = `could not start: ${(err as Error).message}`;
        this.d.log.warn(`agent: ${l.task.id}: ${l.reason}`);
      }
    } finally {
      l.starting = false;
    }
  }

  /** Why the run that just ended ended: the health check that killed it, else the exit and its last output. */
  private async classify(l: Local): Promise<FailureCause> {
    const run = l.run!;
    if (l.healthKill) return { cause: l.healthKill, permanent: false, portsInUse: [] };
    const logTail: string[] = [];
    if (run.exitCode !== 0) {
      const abort = new AbortController();
      const timer = this.clock.setTimeout(() => abort.abort(), CLASSIFY_LOG_TIMEOUT_MS);
      try {
        for await (const line of l.driver.logs(l.task.id, { follow: false, tail: FAILURE_LOG_TAIL_LINES, signal: abort.signal })) {
          logTail.push(line);
          if (logTail.length > FAILURE_LOG_TAIL_LINES) logTail.shift();
        }
      } catch {
        // no logs (the driver lost them): classify from the exit alone
      } finally {
        this.clock.clearTimeout(timer);
      }
    }
    const f = classifyExit({ exitCode: run.exitCode, reason: run.reason, logTail, hostPorts: l.task.hostPorts });
    f.lastOutput = logTail.filter((x) => x.trim() !== '').slice(-LAST_OUTPUT_LINES).map((x) => x.slice(0, LAST_OUTPUT_LINE_CHARS));
    return f;
  }

  private async refresh(l: Local): Promise<void> {
    let st: TaskStatus | undefined;
    try {
      st = await l.driver.inspect(l.task.id);
    } catch (err) {
      // A driver hiccup (engine busy) is not an exit: keep the last known state.
      this.d.log.debug(`agent: inspect ${l.task.id}: ${(err as Error).message}`);
      return;
    }
    if (st && st.state === 'exited' && l.run?.state === 'running') this.d.log.info(`agent: ${l.task.id} exited (${st.exitCode ?? st.reason ?? 'unknown'})`);
    if (st) l.run = st;
    else l.run = { taskId: l.task.id, state: 'exited', exitCode: null, startedAtMs: l.run?.startedAtMs ?? this.clock.now(), exitedAtMs: this.clock.now(), reason: 'the task disappeared' };
  }

  /** Restart policy: always / on-failure (non-zero exit) / never, at most maxRestarts times. */
  private async onExit(l: Local, spec: AppSpec): Promise<void> {
    if (l.final) return;
    const code = l.run!.exitCode;
    const failedRun = code !== 0 || l.healthKill !== '';
    const exitedAt = l.run!.exitedAtMs ?? 0;
    if (l.classifiedExitAtMs !== exitedAt || exitedAt === 0) {
      l.classifiedExitAtMs = exitedAt || this.clock.now();
      const f = await this.classify(l);
      if (failedRun) {
        l.cause = f.cause;
        l.portsInUse = f.portsInUse;
        if (f.lastOutput && f.lastOutput.length > 0) l.lastOutput = f.lastOutput;
      }
      if (f.permanent && failedRun) return this.failHere(l, f, `${f.cause}; not restarted on this node`);
    }
    const policy = spec.restart.policy;
    const wantRestart = policy === 'always' || (policy === 'on-failure' && failedRun);
    const what = failedRun && l.cause ? l.cause : code === null ? `ended (${l.run!.reason ?? 'killed'})` : `exited with code ${code}`;
    if (!wantRestart) {
      await this.readBackOnce(l, spec);
      l.state = failedRun ? 'failed' : 'exited';
      l.health = 'none';
      l.reason = what;
      return;
    }
    if (l.restarts >= spec.restart.maxRestarts) {
      await this.readBackOnce(l, spec);
      l.state = 'failed';
      l.health = 'none';
      l.reason = `${what}; gave up after ${l.restarts} restarts`;
      return;
    }
    const now = this.clock.now();
    if (l.nextRestartAtMs === 0) {
      l.nextRestartAtMs = now + spec.restart.delayMs;
      l.state = 'exited';
      l.health = 'none';
      l.reason = `${what}; restarting in ${spec.restart.delayMs} ms`;
      return;
    }
    if (now < l.nextRestartAtMs) return;
    l.nextRestartAtMs = 0;
    l.healthKill = '';
    l.restarts++;
    await l.driver.destroy(l.task.id).catch(() => undefined);
    l.run = undefined;
    await this.startTask(l, spec);
  }

  private maybeProbe(l: Local, spec: AppSpec): void {
    const check = spec.healthCheck;
    if (!check || l.probing || this.clock.now() < l.nextProbeAtMs) return;
    l.probing = true;
    const idx = spec.ports.findIndex((p) => p.name === check.port);
    const port = l.task.hostPorts[idx >= 0 ? idx : 0];
    // A docker task's command check runs inside its container (docker exec), as Docker's HEALTHCHECK.
    const run = check.type === 'command' && check.inContainer && l.driver.exec ? execProbe(l.driver, l.task.id, check) : probe(check, port, spec.env);
    void run
      .then(async (r) => {
        if (r.ok) {
          l.healthFailures = 0;
          l.passedOnce = true;
          if (l.health !== 'healthy') this.d.log.info(`agent: ${l.task.id} is healthy (${r.detail})`);
          l.health = 'healthy';
          l.healthLog = [];
          l.reason = '';
          // A lab is BUSY while a kernel computes: its kernels are counted with each passing probe.
          if (spec.lab && port) {
            l.kernelWatch ??= new LabKernelWatch(port, spec.lab.token);
            l.kernels = await l.kernelWatch.refresh(Math.max(check.timeoutMs, LAB_KERNELS_TIMEOUT_MS)).catch(() => undefined);
          }
          return;
        }
        const entry = (r.output ? `${r.detail}: ${r.output.trim().replace(/\s*\n\s*/g, ' | ')}` : r.detail).slice(-HEALTH_LOG_ENTRY_CHARS);
        l.healthLog = [...l.healthLog, entry].slice(-HEALTH_LOG_ENTRIES);
        // Within the start period, a failure before the first success does not count.
        if (!l.passedOnce && this.clock.now() - l.runSinceMs < check.startPeriodMs) {
          l.reason = `health check failing during its start period: ${r.detail}`;
          return;
        }
        if (++l.healthFailures >= check.retries) {
          // The health check result is the cause: the SIGTERM that follows is only its consequence.
          l.cause = `health check ${r.detail}`;
          if (l.health !== 'unhealthy') {
            this.d.log.warn(`agent: ${l.task.id} is unhealthy: ${r.detail}; restarting it per its restart policy`);
            // Self-healing like Swarm: an unhealthy task is stopped; the restart policy brings it back.
            if (spec.restart.policy !== 'never') {
              l.healthKill = l.cause;
              void this.report().then(() => l.driver.stop(l.task.id, l.stopTimeoutMs)).catch(() => undefined);
            }
          }
          l.health = 'unhealthy';
          l.reason = `health check failed ${l.healthFailures} times: ${r.detail}`;
        }
      })
      .finally(() => {
        l.probing = false;
        l.nextProbeAtMs = this.clock.now() + check.intervalMs;
        this.kick();
      });
  }

  private async stopTask(l: Local): Promise<void> {
    if (l.stopping) return;
    if (l.run?.state === 'running') {
      l.stopping = true;
      const stopped = (async () => {
        try {
          await l.driver.stop(l.task.id, l.stopTimeoutMs);
          await this.refresh(l);
        } finally {
          l.stopping = false;
        }
      })();
      if (l.stopTimeoutMs > STOP_TIMEOUT_MS) {
        // A long grace period (stopTimeoutMs) must not hold the node's other tasks: the round goes
        // on, and a later one finishes this stop (read-back, report) once the task has exited.
        void stopped.catch((err: Error) => this.d.log.warn(`agent: stopping ${l.task.id}: ${err.message}`)).finally(() => this.kick());
        return;
      }
      await stopped;
    }
    if (!l.readBackDone && l.workspaceDir && !l.starting && !l.stopping && l.run?.state !== 'running') {
      // the task's files go back into the app's workspace before its stop is reported: omni stop
      // waits for the stop, then pulls them
      l.stopping = true;
      try {
        await this.readBackOnce(l, this.spec(l.task));
      } finally {
        l.stopping = false;
      }
      if (!l.readBackDone) return;
    }
    if (l.state !== 'exited' && l.state !== 'failed') {
      l.state = 'exited';
      l.health = 'none';
      l.reason = `stopped: ${l.task.stopReason || 'by the orchestrator'}`;
    }
    // Desired 'stop' is final: once it does not run (nor is starting), it never runs here again.
    if (!l.starting && !l.stopping && l.run?.state !== 'running') l.released = true;
  }

  private async taskConfig(t: TaskRecord, spec: AppSpec, workspaceDir?: string): Promise<TaskConfig> {
    const volumes = [];
    for (const v of spec.volumes) {
      // A lab's notebook dir (its `workspace` volume) is the synced workspace when the app has one.
      if (workspaceDir && v.name === LAB_WORKSPACE_VOLUME) {
        volumes.push({ name: v.name, path: v.path, hostPath: workspaceDir });
        continue;
      }
      const hostPath = join(this.d.dataDir, 'volumes', t.app, v.name);
      await mkdir(hostPath, { recursive: true });
      volumes.push({ name: v.name, path: v.path, hostPath });
    }
    const command = spec.command ? [...spec.command, ...spec.args] : spec.args.length > 0 ? spec.args : undefined;
    const net = networksOf(spec).length > 0 && this.d.network ? await this.d.network(spec) : undefined;
    const files = await this.writeFiles(t, spec);
    return {
      taskId: t.id,
      app: t.app,
      version: t.version,
      image: spec.image,
      command,
      ...containerOptions(spec),
      // The allocation epoch: the Raft index that placed this task — higher for every later
      // placement of the app, so a task can fence its writes to outside storage with it.
      env: { ...net?.env, ...spec.env, ...files.env, OMNI_TASK_EPOCH: String(this.d.raft.state.kvGet(taskKey(t.id))?.createIndex ?? 0), ...(t.run !== undefined ? { OMNI_CRON_RUN: String(t.run), OMNI_CRON_SCHEDULED_MS: String(t.scheduledMs ?? 0) } : {}) },
      ports: spec.ports.map((p, i) => ({ name: p.name, containerPort: spec.driver === 'docker' ? p.port : t.hostPorts[i], hostPort: t.hostPorts[i], ...(p.protocol === 'udp' ? { udp: true } : {}) })),
      volumes,
      // resources.limit false: reserved for placement only, no container limits (a Compose service without limits)
      cpu: spec.resources.limit === false ? 0 : spec.resources.cpu,
      memoryBytes: spec.resources.limit === false ? 0 : spec.resources.memoryMB * 1024 * 1024,
      ...(spec.resources.limit === true ? { hardLimits: true } : {}),
      labels: { 'omni.app': t.app, 'omni.version': String(t.version), 'omni.task': t.id, ...(spec.exclusive ? { 'omni.exclusive': 'true' } : {}) },
      ...(spec.exclusive ? { exclusive: true } : {}),
      ...(net ? { hostsFile: net.hostsFile } : {}),
      ...(net?.resolvConf ? { resolvConf: net.resolvConf } : {}),
      // on a network: reached through the mesh only (its published ports are the way in)
      ...(networksOf(spec).length > 0 ? { hostPortsLoopbackOnly: true } : {}),
      ...(workspaceDir ? { workDir: workspaceDir } : {}),
      ...(files.mounts.length > 0 ? { files: files.mounts } : {}),
    };
  }

  private filesDir(taskId: string): string {
    return join(this.d.dataDir, 'task-files', taskId);
  }

  /**
   * Secrets and configs (spec.files): written under <data>/task-files/<task>/{secrets,configs}/NAME
   * (directories 0700, each file its mode, 0444 unless given), rewritten at each start. The docker
   * driver mounts each read-only at its target; a process task gets their paths in env — never
   * the content. Removed with the task.
   */
  private async writeFiles(t: TaskRecord, spec: AppSpec): Promise<{ mounts: { hostPath: string; target: string }[]; env: Record<string, string> }> {
    const mounts: { hostPath: string; target: string }[] = [];
    const env: Record<string, string> = {};
    if (!spec.files || spec.files.length === 0) return { mounts, env };
    const root = this.filesDir(t.id);
    await rm(root, { recursive: true, force: true });
    const seen = new Set<string>();
    for (const [i, f] of spec.files.entries()) {
      const dir = join(root, `${f.kind}s`);
      await mkdir(dir, { recursive: true, mode: 0o700 });
      // the same secret at two targets: one file each (the name's first is the one env points to)
      const first = !seen.has(`${f.kind}/${f.name}`);
      seen.add(`${f.kind}/${f.name}`);
      const hostPath = join(dir, first ? f.name : `.${i}-${f.name}`);
      await writeFile(hostPath, fileContent(f, this.d.secretKey), { mode: 0o600 });
      await chmod(hostPath, f.mode);
      mounts.push({ hostPath, target: f.target });
      if (first) env[`OMNI_${f.kind === 'secret' ? 'SECRET' : 'CONFIG'}_FILE_${f.name.toUpperCase().replace(/[^A-Z0-9_]/g, '_')}`] = hostPath;
      env[f.kind === 'secret' ? 'OMNI_SECRETS_DIR' : 'OMNI_CONFIGS_DIR'] = dir;
    }
    return { mounts, env };
  }

  private reporting: Promise<void> = Promise.resolve();

  /** Writes each task's status when it changed since the last report (one writer at a time). */
  private report(): Promise<void> {
    this.reporting = this.reporting.then(() => this.reportNow());
    return this.reporting;
  }

  private async reportNow(): Promise<void> {
    for (const [id, l] of this.local) {
      const rec: TaskStatusRecord = {
        id,
        state: l.state,
        health: l.health,
        exitCode: l.run?.state === 'exited' ? l.run.exitCode : null,
        reason: l.reason.slice(0, 500),
        restarts: l.restarts,
        startedAtMs: l.run?.startedAtMs ?? 0,
        updatedAtMs: 0,
      };
      if (l.cause) rec.cause = l.cause.slice(0, 300);
      if (l.stable) rec.stable = true;
      if (l.portsInUse.length > 0) rec.portsInUse = l.portsInUse;
      if (l.lastOutput.length > 0) rec.lastOutput = l.lastOutput;
      if (l.healthLog.length > 0 && l.health !== 'healthy') rec.healthLog = l.healthLog;
      if (l.released) rec.released = true;
      if (l.workspace) rec.workspace = l.workspace;
      if (l.kernels && l.state === 'running') rec.kernels = l.kernels;
      const key = JSON.stringify({ ...rec, startedAtMs: 0 });
      if (this.reported.get(id) === key) continue;
      try {
        await this.d.proposeOk({ type: 'kv.put', key: statusKey(id), value: recordJson('status', { ...rec, updatedAtMs: this.clock.now() }) }, SELF);
        this.reported.set(id, key);
      } catch (err) {
        if ((err as OmniError).code === 'FORBIDDEN') {
          // The task is no longer placed here (its record is gone): the leader refuses reports
          // about it. Do not retry it, and go on with the others.
          this.reported.set(id, key);
          continue;
        }
        this.d.log.debug(`agent: status of ${id} not written yet: ${(err as Error).message}`);
        return;
      }
    }
  }
}
