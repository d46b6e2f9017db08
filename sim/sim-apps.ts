// The apps path in the simulator: on every simulated node the real orchestrator (leader only)
// and the real agent with the mock driver, the real app operations behind the API (AppsApi:
// deploy, scale, stop/start) called by a simulated operator, node registration, and a leader
// that marks nodes down when it stops hearing from them (as the autopilot does), so tasks are
// rescheduled. Writes from a follower are forwarded to the leader over the simulated network.
//
// Invariants: a task (id) never runs on two nodes at once; an agent runs only tasks placed on
// its own node; every app change the API acknowledged is visible on the leader once faults heal;
// the exclusive app ('job', one replica) never runs two tasks at once anywhere — across
// partitions, pauses, crashes and leader changes. Its tasks' supervisor (the engine here) stops
// them when the node's published lease lapses, omnid up or down, as the process wrapper does.
// On about half the seeds a fourth app, 'batch', is a job (type job, retries 2): its tasks exit
// on their own (0 or 1, at random); a job task that succeeded is never started again, no job
// task is started twice, and a run (a spec version) never starts more than 1 + retries tasks.
// On about half the seeds a cron app, 'tick' (every second, a random concurrency policy), is
// deployed, redeployed and switched ON / OFF by the operator: no scheduled time fires twice (each
// task's OMNI_CRON_SCHEDULED_MS belongs to one run number, and each run to one time), across
// leader changes, crashes and clock jumps, and a run starts at most 1 + retries tasks.
import { silentLogger } from '../node/logger.js';
import type { Rng } from '../protocol/rng.js';
import type { NodeId } from '../protocol/raft/types.js';
import { encodeCommand, type ClusterState, type Command } from '../protocol/cluster/state.js';
import { appKey, parseRecord, specKey, type AppRecord } from '../protocol/apps/model.js';
import type { AppSpec } from '../protocol/apps/spec.js';
import type { RaftNode } from '../node/raft/raft-node.js';
import type { ClusterAccess, RaftView } from '../node/cluster/ports.js';
import type { Clock } from '../node/timers.js';
import { OmniError } from '../node/errors.js';
import { Orchestrator } from '../node/apps/orchestrator.js';
import { Agent } from '../node/apps/agent.js';
import { MockDriver, type MockEngine } from '../node/apps/drivers/mock.js';
import type { TaskConfig, TaskDriver, TaskStatus } from '../node/apps/drivers/types.js';
import { AppsApi, retryLostRace } from '../node/api/apps-routes.js';
import { adminCaller, type Caller } from '../node/cluster/caller.js';

const PROPOSE_TIMEOUT_MS = 2000;
/** The leader marks a node down after this long without a message from it (autopilot's silence). */
const DOWN_AFTER_MS = 1500;
const DOWN_CHECK_EVERY_MS = 400;
const APPS = ['web', 'api', 'job'];
/** At most once: one replica, spec.exclusive. */
const EXCLUSIVE_APP = 'job';
/** Shorter than a daemon's, so replacements after a silence happen within a seed; longer than the 1.5 s after which the leader marks a silent node down, so a leader that does not wait for the lease (the injected bug) shows. */
const SIM_EXCLUSIVE_LEASE_MS = 3000;
/** The job app (on seeds that have one) and its retries. */
const JOB_APP = 'batch';
const SIM_JOB_RETRIES = 2;
/** The cron app (on seeds that have one): fires every second (simulated). */
const CRON_APP = 'tick';
const OPERATOR: Caller = adminCaller('sim-admin-token', 'sim-admin');

/**
 * Bugs the apps layer can inject into the daemon's wiring, to prove its checkers can fail:
 * an agent told another node's id (it runs that node's tasks), writes acknowledged once
 * proposed instead of once applied, and a leader that replaces an exclusive task without
 * waiting for its node's lease to lapse, and a leader's orchestrator that does not see the last
 * scheduled time stored in a cron app's record (it fires the same time again).
 */
export type AppsBug = 'agent-wrong-node' | 'ack-before-commit' | 'replace-without-lease-wait' | 'cron-forget-last-fire';
export const ALL_APPS_BUGS: readonly AppsBug[] = ['agent-wrong-node', 'ack-before-commit', 'replace-without-lease-wait', 'cron-forget-last-fire'];

/** What the apps layer uses from the simulation. */
export interface SimAppsHost {
  nowMs(): number;
  readonly rng: Rng;
  trace(line: string | (() => string)): void;
  /** Records a safety violation (checked after the event). */
  violation(message: string): void;
  /** The running driver of a node (undefined: down). */
  liveNode(id: NodeId): RaftNode | undefined;
  /** The node's virtual clock (its timers die with the process). */
  clockOf(id: NodeId): Clock;
  /** Runs fn on `to` after a network delay from `from`; false when the message is lost. */
  send(from: NodeId, to: NodeId, fn: () => void): boolean;
  /** When `to` last heard from `from` (a delivered Raft message), 0 if never. */
  heardMs(to: NodeId, from: NodeId): number;
  /** Runs fn at simulated time ms whatever node is up (a task supervisor outside omnid). */
  atMs(ms: number, fn: () => void): void;
  readonly coverage: { tasks_started: number; tasks_rescheduled: number; app_changes_acknowledged: number; exclusive_lease_stops: number; exclusive_replacements: number; job_tasks_succeeded: number; job_tasks_failed: number; job_runs_finished: number; cron_runs_started: number };
  /** Marks that promises the nodes await may have settled (the loop runs their continuations). */
  settled(): void;
  /** Kv puts of records carry them in protobuf (encodeCommand's `records`). */
  readonly recordsInCommands: boolean;
}

/** What one node runs on top of its Raft driver: the orchestrator, the agent, the API's app operations. */
interface NodeApps {
  orchestrator: Orchestrator;
  agent: Agent;
  api: AppsApi;
  stop(): void;
}

/** What the operator expects of an app after its last acknowledged change (undefined: unknown). */
interface Expected {
  replicas: number;
  state: 'running' | 'stopped';
  atMs: number;
}

export class SimApps {
  private readonly perNode = new Map<NodeId, NodeApps>();
  /** Mock engines outlive the daemon (a restarted omnid re-attaches to its tasks). */
  private readonly engines = new Map<NodeId, MockEngine>();
  /** taskId → the node it runs on (the world's truth, across every node). */
  private readonly running = new Map<string, NodeId>();
  /** Running exclusive tasks: taskId → app. */
  private readonly exclusiveRunning = new Map<string, string>();
  /** Per node, the lease its agent last published (simulated time: the nodes' monotonic clock). */
  private readonly leaseUntil = new Map<NodeId, number>();
  private readonly expected = new Map<string, Expected | undefined>();
  /**
   * What changes whose outcome is unknown (a timeout) may still have set, per app: such a change
   * may commit at any later time (a deposed leader's entry committed by the next), even after a
   * later acknowledged change, so its values stay acceptable for good.
   */
  private readonly maybe = new Map<string, { states: Set<string>; replicas: Set<number> }>();
  private nextTaskNum = 1;
  private operatorBusy = false;
  /** The next operator step reads back what was acknowledged. */
  private verifyNext = false;
  private inFlight: { app: string; sets: { state?: string; replicas?: number } } | undefined;
  /** This seed runs the job app too. */
  private readonly apps: string[];
  /** Job tasks ever started (task id → spec version) and those that exited 0 (the world's truth). */
  private readonly jobStarted = new Map<string, number>();
  private readonly jobSucceeded = new Set<string>();
  /** Job runs seen finished (app version → status), for coverage. */
  private readonly jobRunsSeen = new Set<string>();
  /** This seed runs the cron app. */
  private readonly withCron: boolean;
  /** Cron runs started (the world's truth): scheduled time → run number, run number → scheduled time, tasks per run. */
  private readonly cronRunOfTime = new Map<number, number>();
  private readonly cronTimeOfRun = new Map<number, number>();
  private readonly cronTasksOfRun = new Map<number, number>();
  private readonly cronStarted = new Set<string>();

  constructor(
    private readonly host: SimAppsHost,
    private readonly bugs: ReadonlySet<AppsBug> = new Set(),
  ) {
    this.apps = host.rng.next() < 0.5 ? [...APPS, JOB_APP] : APPS;
    this.withCron = host.rng.next() < 0.5;
  }

  /** The node's daemon started (after its Raft driver): wire and start its apps components. */
  nodeStarted(id: NodeId): void {
    const node = this.host.liveNode(id)!;
    const clock = this.host.clockOf(id);
    const raft: RaftView = {
      get state() {
        return node.state;
      },
      get raft() {
        return node.raft;
      },
      get isLeader() {
        return node.isLeader;
      },
      // The bug: the leader takes any node for long silent, so an exclusive task is replaced at once.
      silentForMs: (nodeId) => (this.bugs.has('replace-without-lease-wait') ? 1e12 : node.silentForMs(nodeId)),
    };
    const access: ClusterAccess = { raft, proposeOk: (cmd) => this.proposeOk(id, cmd), readBarrier: () => node.readBarrier(PROPOSE_TIMEOUT_MS) };
    // The bug: the orchestrator reads cron records without their last scheduled time.
    const orchestratorRaft: RaftView = this.bugs.has('cron-forget-last-fire') ? { ...raft, get state() { return forgetLastFire(node.state); }, get raft() { return node.raft; }, get isLeader() { return node.isLeader; } } : raft;
    const orchestrator = new Orchestrator({ ...access, raft: orchestratorRaft, log: silentLogger, clock, newTaskId: (app) => `${app}-t${this.nextTaskNum++}`, exclusiveLeaseMs: SIM_EXCLUSIVE_LEASE_MS });
    const driver = this.driverFor(id, clock);
    const wrongNode = this.bugs.has('agent-wrong-node');
    const agentDeps = {
      ...access,
      log: silentLogger,
      dataDir: `/sim/${id}`,
      clock,
      publishLease: (untilMs: number) => this.leasePublished(id, untilMs),
      exclusiveLeaseMs: SIM_EXCLUSIVE_LEASE_MS,
      get id(): string {
        return wrongNode ? (node.state.nodes().find((x) => x.id !== id)?.id ?? id) : id;
      },
    };
    const agent = new Agent(agentDeps, { mock: driver, process: driver, docker: driver });
    const api = new AppsApi({ ...access, id, name: id, kickOrchestrator: () => orchestrator.kick(), localDriver: () => undefined, taskLogs: { read: () => Promise.reject(new Error('no logs in the simulator')) } as never, clock });
    let stopped = false;
    const register = (): void => {
      if (stopped || node.state.node(id)) return;
      void this.proposeOk(id, { type: 'node.register', node: { id, name: id, addrs: [], apiUrl: `http://${id}.sim`, resources: { cpuCores: 4, memoryBytes: 8 * 1024 ** 3, diskBytes: 100 * 1024 ** 3, arch: 'x86_64', gpus: [] }, labels: {} } }).catch(() => undefined);
      clock.setTimeout(register, 300);
    };
    const markDown = (): void => {
      if (stopped) return;
      if (node.isLeader) this.checkNodes(id, node);
      clock.setTimeout(markDown, DOWN_CHECK_EVERY_MS);
    };
    orchestrator.start();
    agent.start();
    register();
    markDown();
    this.perNode.set(id, {
      orchestrator,
      agent,
      api,
      stop: () => {
        stopped = true;
        orchestrator.stop();
        agent.stop();
      },
    });
  }

  /** The daemon crashed: its components are gone (the tasks, run by the engine, keep running). */
  nodeCrashed(id: NodeId): void {
    this.perNode.get(id)?.stop();
    this.perNode.delete(id);
  }

  /** After each Ready a node applied (the daemon's afterApply). */
  applied(id: NodeId): void {
    const n = this.perNode.get(id);
    n?.agent.kick();
    n?.orchestrator.kick();
  }

  /**
   * One operator action through the API of a random live node: deploy, scale, stop or start;
   * after an acknowledged change, a linearizable read there first, which must show it.
   */
  operate(ids: NodeId[]): void {
    if (this.operatorBusy || ids.length === 0) return;
    const id = ids[this.host.rng.int(ids.length)];
    const n = this.perNode.get(id);
    if (!n) return;
    if (this.verifyNext) {
      this.verifyNext = false;
      this.operatorBusy = true;
      const node = this.host.liveNode(id)!;
      node.readBarrier(PROPOSE_TIMEOUT_MS).then(
        () => {
          this.operatorBusy = false;
          if (this.host.liveNode(id) === node) this.checkAcknowledged(id);
        },
        () => (this.operatorBusy = false),
      );
      return;
    }
    if (this.withCron && this.host.rng.next() < 0.2) return this.operateCron(n, id);
    // The job app, when this seed has one, gets a third of the operator's steps (its runs are short).
    const app = this.apps.includes(JOB_APP) && this.host.rng.next() < 1 / 3 ? JOB_APP : APPS[this.host.rng.int(APPS.length)];
    const r = this.host.rng.next();
    const replicas = 1 + this.host.rng.int(3);
    let change: () => Promise<unknown>;
    let next: (prev: Expected | undefined) => Expected | undefined;
    let what: string;
    let sets: { state?: string; replicas?: number };
    const now = this.host.nowMs();
    if (app === EXCLUSIVE_APP && (r >= 0.5 && r < 0.75)) return; // its one replica is not scaled
    // The job is only (re)deployed: each new image is a new run (stop/start would add attempts the check does not count).
    if (app === JOB_APP && r >= 0.5 && this.expected.has(app)) return;
    if (r < 0.5 || !this.expected.has(app)) {
      const spec = app === JOB_APP
        ? { name: app, image: `sim/${app}:${1 + this.host.rng.int(3)}`, driver: 'mock', type: 'job', replicas: 1, retries: SIM_JOB_RETRIES, backoff: { delayMs: 200, maxDelayMs: 1000 } }
        : app === EXCLUSIVE_APP
        ? { name: app, image: `sim/${app}:${1 + this.host.rng.int(3)}`, driver: 'mock', replicas: 1, exclusive: true }
        : { name: app, image: `sim/${app}:${1 + this.host.rng.int(3)}`, driver: 'mock', replicas };
      change = () => n.api.deploy(spec, OPERATOR);
      next = () => ({ replicas: spec.replicas, state: 'running', atMs: now });
      what = `deploy ${spec.image} x${spec.replicas}`;
      sets = { state: 'running', replicas: spec.replicas };
    } else if (r < 0.75) {
      change = () => n.api.scale(app, { replicas }, OPERATOR);
      next = (p) => (p ? { ...p, replicas, atMs: now } : undefined);
      what = `scale to ${replicas}`;
      sets = { replicas };
    } else {
      const state = this.host.rng.next() < 0.5 ? 'stopped' : 'running';
      change = () => n.api.setState(app, state, OPERATOR);
      next = (p) => (p ? { ...p, state, atMs: now } : undefined);
      what = state === 'stopped' ? 'stop' : 'start';
      sets = { state };
    }
    this.operatorBusy = true;
    // Until it is answered, the change may take effect at any time.
    this.inFlight = { app, sets };
    this.host.trace(`apps: operator -> ${id}: ${app} ${what}`);
    void retryLostRace(change).then(
      () => {
        this.operatorBusy = false;
        this.inFlight = undefined;
        this.expected.set(app, next(this.expected.get(app)));
        this.host.coverage.app_changes_acknowledged++;
        this.verifyNext = true;
        this.host.trace(`apps: ${app} change acknowledged by ${id}: ${JSON.stringify(this.expected.get(app))}`);
      },
      (err: OmniError) => {
        this.operatorBusy = false;
        this.inFlight = undefined;
        // A refusal before proposing changes nothing; anything else may or may not have taken effect.
        const definite = ['NOT_FOUND', 'BAD_REQUEST', 'NOT_LEADER', 'NO_LEADER', 'TRANSFERRING', 'TOO_MANY_PENDING', 'PROPOSAL_DROPPED', 'INVALID_ARGUMENT', 'CONFLICT'].includes(err.code);
        if (!definite) this.mayHaveSet(app, sets);
        this.host.trace(`apps: ${app} change failed at ${id}: ${err.code ?? err.message}${definite ? '' : ' (outcome unknown)'}`);
      },
    );
  }

  /** The cron app: deployed (a new image: a new version, its schedule state kept), or switched ON / OFF. */
  private operateCron(n: NodeApps, id: NodeId): void {
    const rng = this.host.rng;
    const policies = ['forbid', 'allow', 'replace'];
    const deploy = !this.cronDeployed || rng.next() < 0.3;
    const on = rng.next() < 0.7;
    const spec = { name: CRON_APP, image: `sim/${CRON_APP}:${1 + rng.int(3)}`, driver: 'mock', type: 'cron', schedule: '* * * * * *', concurrencyPolicy: policies[rng.int(3)], ...(rng.next() < 0.5 ? { startingDeadlineSeconds: 2 } : {}), retries: SIM_JOB_RETRIES, backoff: { delayMs: 200, maxDelayMs: 1000 } };
    const change = deploy ? () => n.api.deploy(spec, OPERATOR) : () => n.api.setSchedule(CRON_APP, on, OPERATOR);
    this.operatorBusy = true;
    this.host.trace(`apps: operator -> ${id}: ${CRON_APP} ${deploy ? `deploy ${spec.image} ${spec.concurrencyPolicy}` : `schedule ${on ? 'enable' : 'disable'}`}`);
    void retryLostRace(change).then(
      () => {
        this.operatorBusy = false;
        if (deploy) this.cronDeployed = true;
      },
      (err: OmniError) => {
        this.operatorBusy = false;
        this.host.trace(`apps: ${CRON_APP} change failed at ${id}: ${err.code ?? err.message}`);
      },
    );
  }

  private cronDeployed = false;

  /**
   * Every acknowledged app change is visible on a node that applied everything committed (after
   * a read barrier there, or the one that just answered the liveness probe): the app's state and
   * replica count are the last acknowledged ones (or what a change of unknown outcome set).
   */
  checkAcknowledged(id: NodeId): void {
    const node = this.host.liveNode(id);
    if (!node) return;
    if (this.inFlight) this.mayHaveSet(this.inFlight.app, this.inFlight.sets);
    this.noteJobRuns(id);
    // Every record Omni writes has an exact protobuf form (a field missing from proto/omni.proto would keep it as text).
    const asText = node.state.recordsKeptAsText();
    if (asText.length > 0) this.host.violation(`records kept as text, not protobuf, on ${id}: ${asText.slice(0, 3).join(', ')}: ${node.state.kvGet(asText[0])?.value.slice(0, 300)}`);
    for (const [app, want] of this.expected) {
      if (!want) continue;
      const rec = parseRecord<AppRecord>(node.state.kvGet(appKey(app))?.value);
      const spec = rec ? parseRecord<AppSpec>(node.state.kvGet(specKey(app, rec.version))?.value) : undefined;
      const m = this.maybe.get(app);
      const stateOk = rec !== undefined && (rec.state === want.state || m?.states.has(rec.state) === true);
      const replicasOk = spec !== undefined && (spec.replicas === want.replicas || m?.replicas.has(spec.replicas) === true);
      if (!stateOk || !replicasOk) {
        this.host.violation(`acknowledged app change lost: ${app} was acknowledged at ${Math.round(want.atMs)} ms as ${want.state} with ${want.replicas} replicas, but ${id} (applied ${node.state.appliedIndex}) shows ${rec ? `${rec.state} with ${spec?.replicas ?? '?'} replicas (version ${rec.version})` : 'no app'}`);
      }
    }
  }

  // ------------------------------------------------------------------ internals

  private mayHaveSet(app: string, sets: { state?: string; replicas?: number }): void {
    const m = this.maybe.get(app) ?? { states: new Set<string>(), replicas: new Set<number>() };
    if (sets.state !== undefined) m.states.add(sets.state);
    if (sets.replicas !== undefined) m.replicas.add(sets.replicas);
    this.maybe.set(app, m);
  }

  /** A write through the leader: proposed here when this node leads, else forwarded to it. */
  private proposeOk(id: NodeId, cmd: Command): Promise<unknown> {
    const node = this.host.liveNode(id);
    if (!node) return Promise.reject(new OmniError('UNAVAILABLE', 'node is down'));
    const data = encodeCommand(cmd, { records: this.host.recordsInCommands });
    const unwrap = (r: Awaited<ReturnType<RaftNode['propose']>>): unknown => {
      if (!r.ok) throw new OmniError(r.error.code, r.error.message);
      return r.value;
    };
    if (node.isLeader) {
      if (this.bugs.has('ack-before-commit')) {
        void node.propose(data, PROPOSE_TIMEOUT_MS).catch(() => undefined);
        return Promise.resolve({});
      }
      return node.propose(data, PROPOSE_TIMEOUT_MS).then(unwrap);
    }
    const leader = node.leader;
    if (!leader) return Promise.reject(new OmniError('NO_LEADER', 'no leader is known'));
    return new Promise((resolve, reject) => {
      let done = false;
      const finish = (fn: () => void): void => {
        if (done) return;
        done = true;
        fn();
        this.host.settled();
      };
      this.host.clockOf(id).setTimeout(() => finish(() => reject(new OmniError('TIMEOUT', 'forwarded write timed out; it may still commit'))), PROPOSE_TIMEOUT_MS);
      this.host.send(id, leader, () => {
        const l = this.host.liveNode(leader);
        if (!l?.isLeader) {
          this.host.send(leader, id, () => finish(() => reject(new OmniError('NOT_LEADER', 'not the leader'))));
          return;
        }
        if (this.bugs.has('ack-before-commit')) {
          void l.propose(data, PROPOSE_TIMEOUT_MS).catch(() => undefined);
          this.host.send(leader, id, () => finish(() => resolve({})));
          return;
        }
        l.propose(data, PROPOSE_TIMEOUT_MS).then(
          (r) => this.host.send(leader, id, () => finish(() => (r.ok ? resolve(r.value) : reject(new OmniError(r.error.code, r.error.message))))),
          (e: Error) => this.host.send(leader, id, () => finish(() => reject(e))),
        );
      });
    });
  }

  /** The leader marks nodes down when it has not heard from them for DOWN_AFTER_MS, and up again. */
  private checkNodes(leaderId: NodeId, leader: RaftNode): void {
    const now = this.host.nowMs();
    for (const rec of leader.state.nodes()) {
      if (rec.id === leaderId) continue;
      const silentMs = now - this.host.heardMs(leaderId, rec.id);
      if (rec.status === 'up' && silentMs > DOWN_AFTER_MS) {
        this.host.trace(`apps: leader ${leaderId} marks ${rec.id} down (silent ${Math.round(silentMs)} ms)`);
        void this.proposeOk(leaderId, { type: 'node.status', id: rec.id, status: 'down', reason: 'silent' }).catch(() => undefined);
      } else if (rec.status === 'down' && silentMs < DOWN_AFTER_MS / 3) {
        void this.proposeOk(leaderId, { type: 'node.status', id: rec.id, status: 'up' }).catch(() => undefined);
      }
    }
  }

  private driverFor(id: NodeId, clock: Clock): TaskDriver {
    let engine = this.engines.get(id);
    if (!engine) {
      engine = { tasks: new Map(), failStarts: new Map(), unavailable: undefined, calls: [], waiters: new Set() };
      this.engines.set(id, engine);
    }
    const base = new MockDriver({ now: () => clock.now() }, engine);
    const node = () => this.host.liveNode(id);
    // The world's view: every start and stop of every node's engine.
    return new (class implements TaskDriver {
      readonly name = 'mock' as const;
      constructor(private readonly apps: SimApps) {}
      available() {
        return base.available();
      }
      async start(cfg: TaskConfig): Promise<TaskStatus> {
        this.apps.taskStarting(id, cfg, node());
        return base.start(cfg);
      }
      async stop(taskId: string, timeoutMs: number): Promise<void> {
        await base.stop(taskId, timeoutMs);
        this.apps.ended(id, taskId);
      }
      async destroy(taskId: string): Promise<void> {
        await base.destroy(taskId);
        this.apps.ended(id, taskId);
      }
      async inspect(taskId: string) {
        const st = await base.inspect(taskId);
        if (st?.state === 'exited') this.apps.ended(id, taskId);
        return st;
      }
      recover() {
        return base.recover();
      }
      logs(taskId: string, opts: Parameters<TaskDriver['logs']>[1]) {
        return base.logs(taskId, opts);
      }
      stats(taskId: string) {
        return base.stats(taskId);
      }
    })(this);
  }

  /** The node an exclusive task runs on now (the world's truth), if any. */
  exclusiveHost(): NodeId | undefined {
    for (const taskId of this.exclusiveRunning.keys()) return this.running.get(taskId);
    return undefined;
  }

  /** A task stopped or exited on node id (the world's truth). */
  private ended(id: NodeId, taskId: string): void {
    if (this.running.get(taskId) !== id) return;
    this.running.delete(taskId);
    this.exclusiveRunning.delete(taskId);
  }

  /**
   * The agent of node id renewed its lease until untilMs. Its exclusive tasks' supervisor (outside
   * omnid, like the process wrapper) kills them once that time passes without a newer lease.
   */
  private leasePublished(id: NodeId, untilMs: number): void {
    this.leaseUntil.set(id, Math.max(untilMs, this.leaseUntil.get(id) ?? 0));
    this.host.atMs(untilMs, () => {
      if ((this.leaseUntil.get(id) ?? 0) > this.host.nowMs()) return; // renewed since
      const engine = this.engines.get(id);
      if (!engine) return;
      for (const [taskId, t] of engine.tasks) {
        if (!t.cfg.exclusive || t.status.state !== 'running') continue;
        t.status = { ...t.status, state: 'exited', exitCode: null, exitedAtMs: this.host.nowMs(), reason: 'killed: lease lapsed' };
        this.ended(id, taskId);
        this.host.coverage.exclusive_lease_stops++;
        this.host.trace(`apps: ${id}'s supervisor kills exclusive task ${taskId}: lease lapsed at ${Math.round(untilMs)} ms`);
      }
    });
  }

  private taskStarting(id: NodeId, cfg: TaskConfig, node: RaftNode | undefined): void {
    const taskId = cfg.taskId;
    if (cfg.exclusive) {
      const others = [...this.exclusiveRunning].filter(([t, app]) => app === cfg.app && t !== taskId);
      if (others.length > 0) this.host.violation(`exclusive app ${cfg.app}: task ${taskId} starts on ${id} while ${others.map(([t]) => `${t} runs on ${this.running.get(t)}`).join(', ')}`);
      const leaseLeftMs = (this.leaseUntil.get(id) ?? 0) - this.host.nowMs();
      if (leaseLeftMs <= 0) this.host.violation(`exclusive task ${taskId} starts on ${id} without a lease (lapsed ${Math.round(-leaseLeftMs)} ms ago)`);
    }
    const other = this.running.get(taskId);
    if (other !== undefined && other !== id) this.host.violation(`task ${taskId} started on ${id} while it runs on ${other}`);
    const rec = node ? node.state.tables.task(taskId) : undefined;
    if (rec && rec.nodeId !== id) this.host.violation(`agent on ${id} started task ${taskId}, which is placed on ${rec.nodeId}`);
    if (cfg.app === JOB_APP) this.jobTaskStarting(id, cfg);
    if (cfg.app === CRON_APP) this.cronTaskStarting(id, cfg);
    this.running.set(taskId, id);
    if (cfg.exclusive) this.exclusiveRunning.set(taskId, cfg.app);
    this.host.coverage.tasks_started++;
    // A replacement for a task lost with a node that is down.
    if (node && rec) {
      // Through the tasks-by-app index (protocol/apps/tables.ts).
      const lost = node.state.tables.tasksOfApp(rec.app).some((t) => {
        return t.app === rec.app && t.id !== taskId && t.nodeId !== id && t.desired === 'stop' && node.state.node(t.nodeId)?.status === 'down';
      });
      if (lost) this.host.coverage.tasks_rescheduled++;
      // An exclusive replacement placed on the strength of the old node's silence (its lease lapsed), not its report.
      const unreleased = cfg.exclusive && node.state.tables.tasksOfApp(rec.app).some((t) => {
        return t.app === rec.app && t.id !== taskId && t.desired === 'stop' && node.state.tables.status(t.id)?.released !== true;
      });
      if (unreleased) this.host.coverage.exclusive_replacements++;
    }
    this.host.trace(`apps: ${id} starts task ${taskId}`);
  }

  /**
   * A job task starts: never one that succeeded, never the same task twice, never more than
   * 1 + retries tasks per run (spec version). It then exits on its own after a while, 0 or 1.
   */
  private jobTaskStarting(id: NodeId, cfg: TaskConfig): void {
    const taskId = cfg.taskId;
    if (this.jobSucceeded.has(taskId)) this.host.violation(`job task ${taskId} succeeded and starts again on ${id}`);
    else if (this.jobStarted.has(taskId)) this.host.violation(`job task ${taskId} starts a second time (on ${id})`);
    this.jobStarted.set(taskId, cfg.version);
    const ofRun = [...this.jobStarted.values()].filter((v) => v === cfg.version).length;
    if (ofRun > 1 + SIM_JOB_RETRIES) this.host.violation(`job ${cfg.app} version ${cfg.version} started ${ofRun} tasks, more than 1 + retries (${SIM_JOB_RETRIES})`);
    this.exitLater(id, taskId);
    this.noteJobRuns(id);
  }

  /**
   * A cron run's task starts: its scheduled time was never fired as another run, its run is for
   * no other time, a run starts at most 1 + retries tasks, and no task starts twice.
   */
  private cronTaskStarting(id: NodeId, cfg: TaskConfig): void {
    const taskId = cfg.taskId;
    const run = Number(cfg.env.OMNI_CRON_RUN);
    const at = Number(cfg.env.OMNI_CRON_SCHEDULED_MS);
    if (!(run > 0) || !(at > 0)) this.host.violation(`cron task ${taskId} starts on ${id} without its run (${cfg.env.OMNI_CRON_RUN}) or scheduled time (${cfg.env.OMNI_CRON_SCHEDULED_MS})`);
    if (this.cronStarted.has(taskId)) this.host.violation(`cron task ${taskId} starts a second time (on ${id})`);
    this.cronStarted.add(taskId);
    const other = this.cronRunOfTime.get(at);
    if (other !== undefined && other !== run) this.host.violation(`cron scheduled time ${new Date(at).toISOString()} fired twice: runs ${other} and ${run}`);
    const otherAt = this.cronTimeOfRun.get(run);
    if (otherAt !== undefined && otherAt !== at) this.host.violation(`cron run ${run} started for two times: ${new Date(otherAt).toISOString()} and ${new Date(at).toISOString()}`);
    if (other === undefined) this.host.coverage.cron_runs_started++;
    this.cronRunOfTime.set(at, run);
    this.cronTimeOfRun.set(run, at);
    const tasks = (this.cronTasksOfRun.get(run) ?? 0) + 1;
    this.cronTasksOfRun.set(run, tasks);
    if (tasks > 1 + SIM_JOB_RETRIES) this.host.violation(`cron run ${run} started ${tasks} tasks, more than 1 + retries (${SIM_JOB_RETRIES})`);
    this.exitLater(id, taskId);
  }

  /** A job or cron task exits on its own after 0.1–1 s, 0 or 1. */
  private exitLater(id: NodeId, taskId: string): void {
    const exitCode = this.host.rng.next() < 0.5 ? 0 : 1;
    this.host.atMs(this.host.nowMs() + 100 + this.host.rng.int(900), () => {
      const t = this.engines.get(id)?.tasks.get(taskId);
      if (!t || t.status.state !== 'running' || this.running.get(taskId) !== id) return;
      t.status = { ...t.status, state: 'exited', exitCode, exitedAtMs: this.host.nowMs(), reason: `exited with ${exitCode}` };
      this.ended(id, taskId);
      if (exitCode === 0) {
        this.jobSucceeded.add(taskId); // (a cron task too: it never starts again either)
        this.host.coverage.job_tasks_succeeded++;
      } else this.host.coverage.job_tasks_failed++;
      this.host.trace(`apps: job task ${taskId} on ${id} exits ${exitCode}`);
      this.host.liveNode(id) && this.perNode.get(id)?.agent.kick();
      this.host.settled();
    });
  }

  private noteJobRuns(id: NodeId): void {
    const node = this.host.liveNode(id);
    const rec = node ? parseRecord<AppRecord>(node.state.kvGet(appKey(JOB_APP))?.value) : undefined;
    for (const r of rec?.job?.runs ?? []) {
      const key = `${r.version}/${r.run}`;
      if (r.status === 'replaced' || this.jobRunsSeen.has(key)) continue;
      this.jobRunsSeen.add(key);
      this.host.coverage.job_runs_finished++;
    }
  }
}

/** The 'cron-forget-last-fire' bug: the replica as an orchestrator that lost cron.lastScheduledMs sees it. */
function forgetLastFire(state: ClusterState): ClusterState {
  const tables = new Proxy(state.tables, {
    get(t, p) {
      if (p === 'apps') return () => t.apps().map((a: AppRecord) => (a.cron ? { ...a, cron: { ...a.cron, lastScheduledMs: 0, sinceMs: 0 } } : a));
      const v = Reflect.get(t, p, t) as unknown;
      return typeof v === 'function' ? v.bind(t) : v;
    },
  });
  return new Proxy(state, {
    get(t, p) {
      if (p === 'tables') return tables;
      const v = Reflect.get(t, p, t) as unknown;
      return typeof v === 'function' ? v.bind(t) : v;
    },
  });
}
