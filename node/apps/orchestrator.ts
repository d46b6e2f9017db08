// The leader's orchestrator: every round (and right after app changes) it reconciles each
// app (protocol/apps/reconcile.ts) and commits the result in one kv.txn per app, guarded by
// the app record's version and the scheduling epoch. A refused transaction means the plan
// was built on stale state: it is dropped and recomputed next round.
import { recordJson } from '../../protocol/apps/record-codec.js';
import { randomBytes } from 'node:crypto';
import type { Logger } from '../logger.js';
import type { Proposer, RaftView } from '../cluster/ports.js';
import { schedNodeOf, SchedulerState, type SchedNode, type SchedTask } from '../../protocol/apps/scheduler.js';
import { reconcileApp } from '../../protocol/apps/reconcile.js';
import type { AppSpec } from '../../protocol/apps/spec.js';
import { SCHED_NODE_PREFIX, schedNodeKey, VOLUME_PREFIX, appKey, isTerminal, parseRecord, specKey, statusKey, taskKey, volumeKey, type TaskRecord, type TaskStatusRecord } from '../../protocol/apps/model.js';
import type { KvTxnOp } from '../../protocol/cluster/state.js';
import { OmniError } from '../errors.js';
import { CoalescedLoop } from './coalesced-loop.js';
import { LEADER_DUTY } from '../cluster/caller.js';
import { REAL_CLOCK, type Clock, type TimerHandle } from '../timers.js';
import { parseBuildCommand } from '../../protocol/forge/build-request.js';
import { buildsToRemove, DEFAULT_BUILD_RETENTION, type BuildRetention, type FinishedBuild } from '../../protocol/forge/retention.js';

const ORCHESTRATOR_INTERVAL_MS = 1000;
const MIN_ROUND_GAP_MS = 25;
const MAX_LIST = 100_000;
const MIB = 1024 * 1024;
/**
 * How long a port an agent found held by another process stays off-limits on that host. Then it
 * may be tried again (the agent probes it before starting): the holder may have gone.
 */
export const PORT_IN_USE_HOLD_MS = 60_000;

/** What the orchestrator uses: the replica and this node's role, and proposals (as a leader duty). */
export interface OrchestratorDeps extends Proposer {
  readonly raft: RaftView;
  readonly log: Logger;
  /** Default: the process's clock. */
  readonly clock?: Clock;
  /** A new task id for an app (default: the app name and 6 random hex digits). */
  readonly newTaskId?: (app: string) => string;
  /** The exclusive lease the agents hold (default EXCLUSIVE_LEASE_MS). */
  readonly exclusiveLeaseMs?: number;
  /** Nodes an app's new tasks would rather run on (soft: the scheduler's preferNodeIds), e.g. a build's warm cache. */
  readonly preferNodeIds?: (app: string, spec: AppSpec) => ReadonlySet<string> | undefined;
  /** Finished build apps kept (protocol/forge/retention.ts; default DEFAULT_BUILD_RETENTION). */
  readonly buildRetention?: BuildRetention;
}

export class Orchestrator {
  private readonly loop: CoalescedLoop;
  private readonly clock: Clock;
  /** Wakes the loop at the next schedule fire time (cron apps): fires are not left to the 1 s poll. */
  private wakeTimer: TimerHandle | undefined;
  private wakeAtMs = Infinity;
  /** When this node's orchestrator first saw each task (monotonic ms): task ages survive clock steps. */
  private readonly firstSeenMs = new Map<string, number>();

  constructor(private readonly d: OrchestratorDeps) {
    this.clock = d.clock ?? REAL_CLOCK;
    this.loop = new CoalescedLoop(() => this.round(), {
      clock: this.clock,
      intervalMs: ORCHESTRATOR_INTERVAL_MS,
      minGapMs: MIN_ROUND_GAP_MS,
      onError: (err) => d.log.warn(`orchestrator: ${err.message}`),
      enabled: () => d.raft.isLeader,
    });
  }

  start(): void {
    this.loop.start();
  }

  stop(): void {
    this.loop.stop();
    this.clock.clearTimeout(this.wakeTimer);
  }

  /** Runs a round at atMs (leader clock), the earliest of the schedules' next fires. */
  private wakeAt(atMs: number): void {
    if (atMs === this.wakeAtMs && this.wakeTimer !== undefined) return;
    this.clock.clearTimeout(this.wakeTimer);
    this.wakeTimer = undefined;
    this.wakeAtMs = atMs;
    if (!Number.isFinite(atMs)) return;
    // A few ms after the second (fire times are whole seconds; a timer may fire a hair early).
    this.wakeTimer = this.clock.setTimeout(() => {
      this.wakeTimer = undefined;
      this.wakeAtMs = Infinity;
      this.loop.kick();
    }, Math.max(0, atMs - this.clock.now()) + 5);
  }

  kick(): void {
    this.loop.kick();
  }

  private async round(): Promise<void> {
    const state = this.d.raft.state;
    // The typed tables (records decoded once, at apply), not a parse of every value per round.
    const tables = state.tables;
    const apps = tables.apps().slice(0, MAX_LIST);
    const tasks = tables.tasks().slice(0, MAX_LIST);
    const statuses = new Map<string, TaskStatusRecord>(tables.statuses().slice(0, MAX_LIST).map((s) => [s.id, s]));
    const specCache = new Map<string, AppSpec | undefined>();
    const specOf = (app: string, version: number) => {
      const k = specKey(app, version);
      if (!specCache.has(k)) specCache.set(k, parseRecord<AppSpec>(state.kvGet(k)?.value));
      return specCache.get(k);
    };
    const nodes: SchedNode[] = state.nodes().map(schedNodeOf);
    const held: SchedTask[] = tasks.flatMap((t): SchedTask[] => {
      if (t.desired === 'run') {
        const s = specOf(t.app, t.version);
        return s ? [{ id: t.id, app: t.app, version: t.version, nodeId: t.nodeId, cpu: s.resources.cpu, memoryBytes: s.resources.memoryMB * MIB, gpus: s.resources.gpus, diskBytes: (s.resources.diskMB ?? 0) * MIB, hostPorts: t.hostPorts }] : [];
      }
      // A stopped task keeps its host ports until its node reports it exited: on a node that
      // is down (omnid killed) its process may still run and hold them.
      const st = statuses.get(t.id);
      const recentlyBusy = st?.portsInUse && this.clock.now() - st.updatedAtMs < PORT_IN_USE_HOLD_MS ? st.portsInUse : [];
      const ports = st && !isTerminal(st) ? t.hostPorts : recentlyBusy;
      return ports.length > 0 ? [{ id: t.id, app: t.app, version: t.version, nodeId: t.nodeId, cpu: 0, memoryBytes: 0, gpus: 0, hostPorts: ports, portsOnly: true }] : [];
    });
    const scheduler = new SchedulerState(nodes, held);
    // Plans of every app in one round, each its own kv.txn, proposed back to back (so applied in
    // this order): they share the SchedulerState, so they see each other's placements. Each is
    // guarded by its app record's version and by the version of every node it places on — as
    // it will be once the earlier plans of this round that placed there have applied. A refused
    // plan (the app or a node changed meanwhile; an earlier plan refused) is redone next round.
    // Read with the rest of the round's view (the scheduler's), before anything is proposed.
    const nodeVersion = new Map(nodes.map((n) => [n.id, state.kvGet(schedNodeKey(n.id))?.version ?? 0]));
    const expectedNodeVersion = (id: string) => nodeVersion.get(id) ?? 0;
    const proposals: Promise<void>[] = [];
    let wake = Infinity;
    // Finished Forge builds past their retention are removed like `omni rm` (state removing).
    const finishedBuilds: FinishedBuild[] = [];
    for (const app of apps) {
      const j = app.job;
      if (app.state === 'removing' || !j || j.version !== app.version) continue;
      // A cancelled build (omni build --cancel, omni stop) counts as finished when it stopped.
      const endedAtMs = j.status !== 'running' ? j.finishedAtMs : app.state === 'stopped' ? j.stoppedAtMs : undefined;
      if (endedAtMs === undefined) continue;
      const spec = specOf(app.name, app.version);
      if (spec?.driver !== 'forge' || !spec.command) continue;
      const parsed = parseBuildCommand(spec.command);
      if (!parsed.ok || tables.tasksOfApp(app.name).some((t) => t.desired === 'run')) continue;
      finishedBuilds.push({ name: app.name, repo: parsed.request.repo, finishedAtMs: endedAtMs });
    }
    const expired = new Set(buildsToRemove(finishedBuilds, this.clock.now(), this.d.buildRetention ?? DEFAULT_BUILD_RETENTION));
    for (const listed of apps) {
      const app = expired.has(listed.name) ? { ...listed, state: 'removing' as const } : listed;
      const appTasks = tables.tasksOfApp(app.name); // the tasks-by-app index
      const specs = new Map<number, AppSpec>();
      for (const v of new Set([app.version, ...appTasks.map((t) => t.version), ...(app.cron?.active ?? []).map((r) => r.version)])) {
        const s = specOf(app.name, v);
        if (s) specs.set(v, s);
      }
      const volumePins = tables.volumePins(app.name);
      const out = reconcileApp({
        app,
        specs,
        tasks: appTasks,
        statuses,
        scheduler,
        nodes,
        volumePins,
        nowMs: this.clock.now(),
        taskAgeMs: (t) => this.taskAgeMs(t.id),
        exclusiveLeaseMs: this.d.exclusiveLeaseMs,
        silentForMs: this.d.raft.silentForMs ? (id) => this.d.raft.silentForMs!(id) : undefined,
        ...(this.d.preferNodeIds ? { preferNodeIds: (spec: AppSpec) => this.d.preferNodeIds!(app.name, spec) } : {}),
        newTaskId: () => (this.d.newTaskId ? this.d.newTaskId(app.name) : `${app.name}-${randomBytes(3).toString('hex')}`),
      });
      if (out.wakeAtMs !== undefined) wake = Math.min(wake, out.wakeAtMs);
      if (!out.changed) continue;
      const ops: KvTxnOp[] = [];
      if (out.removeApp) {
        ops.push({ op: 'delete', key: appKey(app.name) });
        for (const r of state.kvList(`${specKey(app.name, 0).slice(0, -8)}`, 10_000)) ops.push({ op: 'delete', key: r.key });
        for (const r of state.kvList(`${VOLUME_PREFIX}${app.name}/`, 100)) ops.push({ op: 'delete', key: r.key });
      } else ops.push({ op: 'put', key: appKey(app.name), value: recordJson('app', out.app) });
      for (const t of out.upserts) ops.push({ op: 'put', key: taskKey(t.id), value: recordJson('task', t) });
      for (const id of out.deletes) {
        ops.push({ op: 'delete', key: taskKey(id) });
        if (statuses.has(id)) ops.push({ op: 'delete', key: statusKey(id) });
      }
      for (const p of out.newPins) ops.push({ op: 'put', key: volumeKey(app.name, p.volume), value: p.nodeId });
      const known = new Set(appTasks.map((t) => t.id));
      const placedOn = [...new Set(out.upserts.filter((t) => t.desired === 'run' && !known.has(t.id)).map((t) => t.nodeId))].sort();
      const compares = [{ key: appKey(app.name), version: state.kvGet(appKey(app.name))?.version ?? 0 }];
      for (const id of placedOn) {
        compares.push({ key: schedNodeKey(id), version: expectedNodeVersion(id) });
        ops.push({ op: 'put', key: schedNodeKey(id), value: String(this.clock.now()) });
        nodeVersion.set(id, expectedNodeVersion(id) + 1);
      }
      proposals.push(
        this.d.proposeOk({ type: 'kv.txn', compares, ops }, LEADER_DUTY).then(
          () => undefined,
          (err: unknown) => {
            if (err instanceof OmniError && err.code === 'CONFLICT') return void this.loop.requestAgain(); // stale plan: recompute from the new state
            throw err;
          },
        ),
      );
    }
    this.wakeAt(wake);
    if (proposals.length > 0) {
      const results = await Promise.allSettled(proposals);
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
      return void this.loop.requestAgain(); // what was written may call for more (the next step of an update)
    }
    this.finishDrains(tasks);
    this.collectOrphanStatuses(tasks, statuses);
    this.collectRemovedNodeGuards();
    const ids = new Set(tasks.map((t) => t.id));
    for (const id of this.firstSeenMs.keys()) if (!ids.has(id)) this.firstSeenMs.delete(id);
  }

  /** How long this orchestrator has known the task (a new leader starts every clock afresh). */
  private taskAgeMs(id: string): number {
    const now = this.clock.monotonicMs();
    let seen = this.firstSeenMs.get(id);
    if (seen === undefined) this.firstSeenMs.set(id, (seen = now));
    return now - seen;
  }

  /** A draining node with no task left to run is drained: it stays ineligible until `omni nodes eligible`. */
  private finishDrains(tasks: TaskRecord[]): void {
    for (const n of this.d.raft.state.nodes()) {
      if (n.eligibility !== 'draining' || tasks.some((t) => t.nodeId === n.id && t.desired === 'run')) continue;
      void this.d
        .proposeOk({ type: 'node.eligibility', id: n.id, eligibility: 'ineligible', expected: 'draining' }, LEADER_DUTY)
        .then(() => this.d.log.info(`orchestrator: node ${n.name} is drained`))
        .catch((err: Error) => this.d.log.debug(`orchestrator: finishing the drain of ${n.name}: ${err.message}`));
    }
  }

  /**
   * Placement guards (`sched/nodes/<id>`) of nodes that left the cluster (`omni nodes remove`:
   * status left) or have no record: nothing is placed on them, so their guard only takes space.
   * A node that joins again gets a fresh one with its next placement; a plan that read the old
   * guard's version is refused (CONFLICT) and redone, as for any change of a guard.
   */
  private collectRemovedNodeGuards(): void {
    const state = this.d.raft.state;
    const members = new Set(state.nodes().filter((n) => n.status !== 'left').map((n) => n.id));
    const stale = state
      .kvListMeta(SCHED_NODE_PREFIX, MAX_LIST)
      .filter((m) => !members.has(m.key.slice(SCHED_NODE_PREFIX.length)))
      .slice(0, 500);
    if (stale.length === 0) return;
    // Each at the version read here: a guard touched since (the node came back and got a
    // placement) is not deleted; the transaction fails whole and the next round looks again.
    const compares = stale.map((m) => ({ key: m.key, version: m.version }));
    void this.d.proposeOk({ type: 'kv.txn', compares, ops: stale.map((m) => ({ op: 'delete' as const, key: m.key })) }, LEADER_DUTY).catch(() => undefined);
  }

  /** Status keys whose task is gone (an agent wrote after the task was deleted). */
  private collectOrphanStatuses(tasks: TaskRecord[], statuses: Map<string, TaskStatusRecord>): void {
    const ids = new Set(tasks.map((t) => t.id));
    const orphans = [...statuses.keys()].filter((id) => !ids.has(id)).slice(0, 500);
    if (orphans.length === 0) return;
    void this.d.proposeOk({ type: 'kv.txn', compares: [], ops: orphans.map((id) => ({ op: 'delete' as const, key: statusKey(id) })) }, LEADER_DUTY).catch(() => undefined);
  }
}
