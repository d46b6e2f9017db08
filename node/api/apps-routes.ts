// The apps part of the HTTP API: deploy (create / rolling update), list, inspect, scale,
// stop/start, remove, endpoints and logs (streamed from the node that runs each task, over
// libp2p: node/apps/task-logs.ts), and node scheduling eligibility (drain).
import { recordJson } from '../../protocol/apps/record-codec.js';
import { sealSecrets } from '../apps/secret-seal.js';
import type { TaskStatsSample } from '../apps/task-stats.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { ClusterAccess } from '../cluster/ports.js';
import { unstampLine, type TaskDriver } from '../apps/drivers/types.js';
import type { TaskLogService } from '../apps/task-logs.js';
import type { ApiServer } from './server.js';
import { nodeHost } from '../../protocol/cluster/node-host.js';
import { readJson, queryBool, queryInt, queryParam, objectBody } from './input.js';
import { OmniError } from '../errors.js';
import { validateAppSpec, specDigest, type AppSpec } from '../../protocol/apps/spec.js';
import { appKey, jobPhase, isServing, isStable, parseRecord, specKey, type AppRecord, type TaskRecord, type TaskStatusRecord } from '../../protocol/apps/model.js';
import type { KvTxnOp, NodeEligibility, NodeRecord } from '../../protocol/cluster/state.js';
import type { Caller } from '../cluster/caller.js';
import { REAL_CLOCK, type Clock } from '../timers.js';
import { fenceOp } from '../../protocol/registry/records.js';
import { scheduleView, withSchedule, withTrigger } from '../../protocol/apps/cron.js';
import { userState } from '../../protocol/apps/user-state.js';
import { schedNodeOf, wantedReplicas } from '../../protocol/apps/scheduler.js';
import type { JobPhase } from '../../protocol/apps/model.js';

const MAX_LOG_TAIL = 10_000;
const DEFAULT_LOG_TAIL = 200;

/** What the apps routes use: the replicated state, this node's tasks and logs from other nodes. */
export interface AppsRoutesDeps extends ClusterAccess {
  readonly id: string;
  readonly name: string;
  /** Runs the orchestrator's next round soon (a no-op off the leader or before the node joined). */
  kickOrchestrator(): void;
  /** The driver of a task known on this node, if any. */
  localDriver(taskId: string): TaskDriver | undefined;
  readonly taskLogs: Pick<TaskLogService, 'read'>;
  /** An image in the cluster's registry pinned to its digest (others unchanged); absent: no registry. */
  pinImage?(image: string): Promise<string>;
  /** Default: the process's clock. */
  readonly clock?: Clock;
  /** The nodes holding tasks of `app` read their files back into its synced workspace (absent: not on this node). */
  syncWorkspace?(app: string): Promise<{ node: string; tasks?: unknown[]; error?: string }[]>;
  /** Each node holding tasks of `app` samples their CPU and memory (absent: not on this node). */
  taskStats?(app: string): Promise<{ node: string; samples?: TaskStatsSample[]; error?: string }[]>;
  /** The key secrets are sealed with before they enter the replicated state (node/apps/secret-seal.ts); absent: kept as given (tests). */
  readonly secretKey?: Buffer;
}

export function registerAppRoutes(api: ApiServer, d: AppsRoutesDeps): void {
  const h = new AppsApi(d);
  // ?create=true (omni run): only a new app; an existing one is a CONFLICT, as docker run --name is.
  api.route('POST', /^\/v1\/apps$/, async (req, url, _p, _res, caller) => {
    const body = await readJson(req);
    return retryLostRace(() => h.deploy(body, caller, queryBool(url, 'create')));
  });
  api.route('GET', /^\/v1\/apps$/, async (_req, url) => h.list(url));
  api.route('GET', /^\/v1\/apps\/([^/]+)$/, async (_req, url, [name]) => h.inspect(name, url));
  api.route('POST', /^\/v1\/apps\/([^/]+)\/scale$/, async (req, _url, [name], _res, caller) => {
    const body = await readJson(req);
    return retryLostRace(() => h.scale(name, body, caller));
  });
  api.route('POST', /^\/v1\/apps\/([^/]+)\/stop$/, async (_req, _url, [name], _res, caller) => retryLostRace(() => h.setState(name, 'stopped', caller)));
  api.route('POST', /^\/v1\/apps\/([^/]+)\/start$/, async (_req, _url, [name], _res, caller) => retryLostRace(() => h.setState(name, 'running', caller)));
  // omni schedule enable|disable (idempotent): a cron app's or a service's schedule ON / OFF.
  api.route('POST', /^\/v1\/apps\/([^/]+)\/schedule\/(enable|disable)$/, async (_req, _url, [name, what], _res, caller) => retryLostRace(() => h.setSchedule(name, what === 'enable', caller)));
  api.route('POST', /^\/v1\/apps\/([^/]+)\/schedule\/trigger$/, async (_req, _url, [name], _res, caller) => retryLostRace(() => h.triggerSchedule(name, caller)));
  // omni sync / omni stop of an app with a synced workspace: its tasks' files are written back first.
  api.route('POST', /^\/v1\/apps\/([^/]+)\/workspace\/sync$/, async (_req, _url, [name]) => h.syncWorkspace(name));
  api.route('GET', /^\/v1\/apps\/([^/]+)\/stats$/, async (_req, _url, [name]) => h.stats(name));
  api.route('DELETE', /^\/v1\/apps\/([^/]+)$/, async (_req, _url, [name], _res, caller) => retryLostRace(() => h.setState(name, 'removing', caller)));
  api.route('GET', /^\/v1\/apps\/([^/]+)\/endpoints$/, async (_req, url, [name]) => h.endpoints(name, url));
  // Log answers stream (follow=true: until the client leaves): they count against the API's
  // stream limit, not its in-flight request limit.
  api.route('GET', /^\/v1\/apps\/([^/]+)\/logs$/, async (req, url, [name], res) => h.appLogs(req, url, name, res), false, { stream: true });
  api.route('GET', /^\/v1\/tasks\/([^/]+)\/logs$/, async (req, url, [id], res) => h.taskLogs(req, url, id, res), false, { stream: true });
  api.route('GET', /^\/v1\/nodes\/([^/]+)$/, async (_req, url, [name]) => h.nodeView(name, url));
  api.route('POST', /^\/v1\/nodes\/([^/]+)\/eligibility$/, async (req, _url, [name], _res, caller) => h.setEligibility(name, await readJson(req), caller));
  api.route('POST', /^\/v1\/nodes\/([^/]+)\/drain$/, async (_req, _url, [name], _res, caller) => h.setEligibility(name, { eligibility: 'draining' }, caller));
}

/** Attempts at an app change whose guarded transaction lost a race with the orchestrator. */
const MAX_RACE_ATTEMPTS = 5;

/**
 * Runs an app change again when its transaction's compare failed because the app record moved
 * between the read and the commit (the orchestrator writes it too): the change is recomputed
 * from the new record, so a user's deploy never fails with a CONFLICT nobody else caused.
 */
export async function retryLostRace<T>(change: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await change();
    } catch (err) {
      const lostRace = err instanceof OmniError && err.code === 'CONFLICT' && /^kv key .* is at version \d+, the transaction expected \d+$/.test(err.message);
      if (!lostRace || attempt >= MAX_RACE_ATTEMPTS) throw err;
    }
  }
}

/** An app record going back to 'running' (omni start, a redeploy) starts a fresh failure streak. */
function withoutFailures(app: AppRecord): AppRecord {
  const { failures: _f, failedReason: _r, ...rest } = app;
  return rest;
}

/**
 * The writes that deploy `spec` over the app's current record (prev, absent: a new app): a new
 * spec version (a rolling update of a running app), or only the replica count (a scale). `start`
 * 'stopped' writes a new app stopped (a compose stack holds a service until its dependencies are
 * ready). Shared by POST /v1/apps and the stacks routes (one transaction for a whole stack).
 */
export function appVersionOps(prev: AppRecord | undefined, prevSpec: AppSpec | undefined, spec: AppSpec, now: number, start: 'running' | 'stopped' = 'running'): { ops: KvTxnOp[]; result: { name: string; version: number; changed: boolean; action: string } } {
  const ops: KvTxnOp[] = [];
  let result: { name: string; version: number; changed: boolean; action: string };
  if (prev && prev.state !== 'removing' && prevSpec && specDigest({ ...prevSpec, replicas: 0 }) === specDigest({ ...spec, replicas: 0 })) {
    // Same spec but the replica count: a scale, not a new version (no rolling update).
    const changed = prevSpec.replicas !== spec.replicas || prev.state !== 'running';
    ops.push({ op: 'put', key: specKey(prev.name, prev.version), value: JSON.stringify(spec) });
    ops.push({ op: 'put', key: appKey(prev.name), value: recordJson('app', { ...withoutFailures(prev), state: 'running' }) });
    result = { name: spec.name, version: prev.version, changed, action: changed ? 'scaled' : 'unchanged' };
  } else {
    const version = (prev?.latestVersion ?? 0) + 1;
    const rollingFrom = prev && prev.state === 'running' ? prev.version : 0;
    const app: AppRecord = {
      name: spec.name,
      version,
      previousVersion: rollingFrom,
      latestVersion: version,
      state: rollingFrom ? 'running' : start,
      deploy: prev?.deploy ?? { status: 'stable', fromVersion: 0, startedAtMs: now, message: '' },
      pending: '',
      events: [...(prev?.events ?? []), { atMs: now, message: prev ? `version ${version} submitted` : `app created (version ${version})` }].slice(-40),
    };
    // A schedule's bookkeeping outlives versions: the last scheduled time is never fired again, runs in progress finish.
    if (prev?.cron && prev.state !== 'removing') app.cron = prev.cron;
    if (prev && !rollingFrom) app.deploy = { status: 'stable', fromVersion: 0, startedAtMs: now, message: '' };
    ops.push({ op: 'put', key: specKey(spec.name, version), value: JSON.stringify(spec) });
    ops.push({ op: 'put', key: appKey(spec.name), value: recordJson('app', app) });
    result = { name: spec.name, version, changed: true, action: prev ? (rollingFrom ? 'rolling update' : 'redeployed') : 'created' };
  }
  return { ops, result };
}

/** The app operations behind the routes (the simulator calls them directly). */
export class AppsApi {
  constructor(private readonly d: AppsRoutesDeps) {}

  private now(): number {
    return (this.d.clock ?? REAL_CLOCK).now();
  }

  private app(name: string): AppRecord {
    const app = parseRecord<AppRecord>(this.d.raft.state.kvGet(appKey(name))?.value);
    if (!app) throw new OmniError('NOT_FOUND', `no app named ${name.slice(0, 64)}`);
    return app;
  }

  private spec(name: string, version: number): AppSpec | undefined {
    return parseRecord<AppSpec>(this.d.raft.state.kvGet(specKey(name, version))?.value);
  }

  private tasks(name: string): { task: TaskRecord; status?: TaskStatusRecord }[] {
    const state = this.d.raft.state;
    // The tasks-by-app index and statuses by task.
    return state.tables
      .tasksOfApp(name)
      .map((t) => ({ task: t, status: state.tables.status(t.id) }))
      .sort((a, b) => a.task.createdAtMs - b.task.createdAtMs);
  }

  private async consistent(url: URL): Promise<void> {
    if (!queryBool(url, 'stale')) await this.d.readBarrier();
  }

  /**
   * A lab's access token: generated once, when the app is created; a later version without one
   * keeps the token of the version before (so resubmitting the same lab changes nothing).
   */
  private async withLabToken(body: unknown): Promise<unknown> {
    const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
    if (!isObj(body) || body.type !== 'lab' || (body.lab !== undefined && !isObj(body.lab))) return body;
    const lab = (body.lab ?? {}) as Record<string, unknown>;
    if (lab.token !== undefined) return body;
    await this.d.readBarrier();
    const prev = typeof body.name === 'string' ? parseRecord<AppRecord>(this.d.raft.state.kvGet(appKey(body.name))?.value) : undefined;
    const prevToken = prev ? this.spec(prev.name, prev.version)?.lab?.token : undefined;
    return { ...body, lab: { ...lab, token: prevToken ?? randomBytes(24).toString('base64url') } };
  }

  async deploy(body: unknown, caller: Caller, createOnly = false): Promise<[number, unknown]> {
    const v = validateAppSpec(await this.withLabToken(body));
    if (!v.ok) {
      const first = v.errors[0];
      throw new OmniError('INVALID_SPEC', `${first.field}: ${first.message}${v.errors.length > 1 ? ` (and ${v.errors.length - 1} more)` : ''}`, { errors: v.errors });
    }
    const spec = v.spec;
    // An image of the cluster's registry runs by digest: a later retag does not change the app.
    if (spec.image !== undefined && this.d.pinImage) spec.image = await this.d.pinImage(spec.image);
    await this.d.readBarrier();
    const state = this.d.raft.state;
    const kv = state.kvGet(appKey(spec.name));
    const prev = parseRecord<AppRecord>(kv?.value);
    if (prev && createOnly) {
      const what = prev.state === 'removing' ? 'is being removed (try again once omni ps no longer lists it)' : 'already exists';
      throw new OmniError('CONFLICT', `an app named ${spec.name} ${what}: use omni deploy to change it, omni run --replace to replace it, or pick another --name`, { app: spec.name, state: prev.state });
    }
    const prevSpec = prev ? this.spec(prev.name, prev.version) : undefined;
    const stored = this.d.secretKey ? sealSecrets(spec, this.d.secretKey, prevSpec) : spec;
    const { ops, result } = appVersionOps(prev, prevSpec, stored, this.now());
    // An image reference added: registry garbage collection marked before this write must mark again.
    if (spec.image !== undefined) ops.push(fenceOp());
    await this.d.proposeOk({ type: 'kv.txn', compares: [{ key: appKey(spec.name), version: kv?.version ?? 0 }], ops }, caller);
    this.d.kickOrchestrator();
    return [prev ? 200 : 201, result];
  }

  async list(url: URL): Promise<[number, unknown]> {
    await this.consistent(url);
    const apps = this.d.raft.state.tables.apps().slice(0, 10_000).map((a) => this.summary(a));
    return [200, { apps }];
  }

  private summary(a: AppRecord): Record<string, unknown> {
    const spec = this.spec(a.name, a.version);
    // A service's scheduled runs are not its replicas (they show under schedule).
    const live = this.tasks(a.name).filter((t) => t.task.desired === 'run' && (spec?.type === 'cron' || t.task.run === undefined));
    // Why the app is not fine, in one line: its terminal failure, else a live task's failure cause.
    const troubled = live.find((t) => t.status?.cause && !isStable(t.status));
    const jobFailed = spec?.type === 'job' && a.job?.version === a.version && a.job.status === 'failed';
    const reason = a.state === 'failed' ? `failed: ${a.failedReason ?? 'tasks kept failing'}` : jobFailed ? `job failed: ${a.job!.reason}` : troubled ? `${troubled.status!.cause} (task ${troubled.task.id} on ${this.nodeName(troubled.task.nodeId)})` : '';
    const job = spec?.type === 'job' ? this.jobSummary(a, spec, live.map((t) => t.status)) : undefined;
    // The state a person sees (INIT / IDLE / BUSY / DEAD, or a job's CREATED / RUNNING / STOPPED).
    // a global app wants one task per node that fits it now
    const replicas = spec ? wantedReplicas(spec, () => this.d.raft.state.nodes().map(schedNodeOf)) : 0;
    const user = userState({
      type: spec?.type ?? 'service', state: a.state, version: a.version, replicas, deploy: a.deploy.status,
      ...(job ? { job: job as { phase: JobPhase; outcome: string } } : {}),
      // A service's scheduled runs are not its replicas: they do not make it INIT/IDLE/BUSY.
      tasks: this.tasks(a.name).filter(({ task }) => spec?.type === 'cron' || task.run === undefined).map(({ task, status }) => ({ version: task.version, desired: task.desired, state: status?.state ?? 'pending', health: status?.health ?? 'none', stable: status?.stable === true, ...(status?.kernels ? { kernels: status.kernels } : {}) })),
    });
    return {
      name: a.name,
      version: a.version,
      state: a.state,
      userState: user.state,
      ...(user.outcome ? { outcome: user.outcome } : {}),
      userStateDetail: user.detail,
      deploy: a.deploy.status,
      replicas,
      running: live.filter((t) => t.status?.state === 'running').length,
      healthy: live.filter((t) => isServing(t.status)).length,
      image: spec?.image ?? null,
      command: spec?.command ?? null,
      pending: a.pending,
      reason,
      failures: a.failures?.count ?? 0,
      type: spec?.type ?? 'service',
      ...(job ? { job } : {}),
      ...(spec?.type === 'lab' && spec.lab ? { lab: this.labView(a.name, spec) } : {}),
      ...(spec?.cron ? { schedule: scheduleView(spec, a, this.now()) } : {}),
    };
  }

  /** A job as a person sees it: CREATED / RUNNING / STOPPED (succeeded, failed or stopped), attempts and exit codes of this run. */
  private jobSummary(a: AppRecord, spec: AppSpec, liveStatuses: (TaskStatusRecord | undefined)[]): Record<string, unknown> {
    const { phase, outcome } = jobPhase(a, liveStatuses);
    const j = a.job && a.job.version === a.version ? a.job : undefined;
    const thisRun = (j?.history ?? []).filter((h) => h.run === j?.run);
    return {
      phase,
      outcome,
      run: j?.run ?? 0,
      succeeded: j?.succeeded ?? 0,
      failures: j?.failures ?? 0,
      attempts: j?.attempts ?? 0,
      retries: spec.job?.retries ?? 0,
      exitCodes: thisRun.map((h) => h.exitCode),
      reason: j?.reason ?? '',
      retryAtMs: j && j.status === 'running' && j.notBeforeMs > this.now() ? j.notBeforeMs : 0,
    };
  }

  /** A lab's notebook URL(s) and token (GET /v1/apps and /v1/apps/NAME: callers hold an admin token). */
  private labView(name: string, spec: AppSpec): { token: string; ip: string; urls: string[] } {
    const lab = spec.lab!;
    const urls = this.endpointList(name).map((e) => `http://${lab.ip === '127.0.0.1' ? '127.0.0.1' : e.host}:${e.ports.http ?? Object.values(e.ports)[0]}/?token=${lab.token}` + (lab.ip === '127.0.0.1' ? ` (on node ${e.node})` : ''));
    return { token: lab.token, ip: lab.ip, urls };
  }

  private nodeName(id: string): string {
    return this.d.raft.state.node(id)?.name ?? id;
  }

  async inspect(name: string, url: URL): Promise<[number, unknown]> {
    await this.consistent(url);
    const app = this.app(name);
    const nodeName = (id: string) => this.nodeName(id);
    const tasks = this.tasks(name).map(({ task, status }) => ({
      id: task.id,
      version: task.version,
      node: nodeName(task.nodeId),
      desired: task.desired,
      state: status?.state ?? 'pending',
      health: status?.health ?? 'none',
      exitCode: status?.exitCode ?? null,
      restarts: status?.restarts ?? 0,
      reason: task.desired === 'stop' ? task.stopReason : (status?.reason ?? ''),
      cause: status?.cause ?? '',
      lastOutput: status?.lastOutput ?? [],
      // the last failing health checks and what they printed (absent once the check passes)
      ...(status?.healthLog?.length ? { healthLog: status.healthLog } : {}),
      stable: status?.stable === true,
      hostPorts: task.hostPorts,
      ...(status?.workspace ? { workspace: status.workspace } : {}),
      ...(status?.kernels ? { kernels: status.kernels } : {}),
    }));
    return [200, { ...this.summary(app), ...(app.job ? { jobRecord: { history: app.job.history, runs: app.job.runs, startedAtMs: app.job.startedAtMs, finishedAtMs: app.job.finishedAtMs } } : {}), ...(app.cron ? { cronRecord: { runs: app.cron.runs, active: app.cron.active.map(({ runs: _r, ...x }) => x), missed: app.cron.missed, skipped: app.cron.skipped } } : {}), spec: this.spec(name, app.version), previousVersion: app.previousVersion, deployment: app.deploy, tasks, events: app.events, endpoints: this.endpointList(name) }];
  }

  async scale(name: string, body: unknown, caller: Caller): Promise<[number, unknown]> {
    const { replicas } = objectBody(body, ['replicas'], '{"replicas": <integer>}');
    if (typeof replicas !== 'number' || !Number.isInteger(replicas) || replicas < 0 || replicas > 1000) throw new OmniError('BAD_REQUEST', 'replicas: must be an integer from 0 to 1000');
    await this.d.readBarrier();
    const kv = this.d.raft.state.kvGet(appKey(name));
    const app = this.app(name);
    const spec = this.spec(name, app.version);
    if (!spec) throw new OmniError('NOT_FOUND', `app ${name} has no spec version ${app.version}`);
    if (spec.mode === 'global') throw new OmniError('BAD_REQUEST', `${name} is a global app: it runs one task on every node that fits, and is not scaled (constraints choose its nodes)`);
    const specKv = this.d.raft.state.kvGet(specKey(name, app.version))!;
    await this.d.proposeOk({ type: 'kv.txn', compares: [{ key: appKey(name), version: kv!.version }, { key: specKv.key, version: specKv.version }], ops: [{ op: 'put', key: specKv.key, value: JSON.stringify({ ...spec, replicas }) }] }, caller);
    this.d.kickOrchestrator();
    return [200, { name, version: app.version, replicas }];
  }

  async setState(name: string, state: AppRecord['state'], caller: Caller): Promise<[number, unknown]> {
    await this.d.readBarrier();
    const kv = this.d.raft.state.kvGet(appKey(name));
    const app = this.app(name);
    if (app.state === 'removing' && state !== 'removing') throw new OmniError('CONFLICT', `app ${name} is being removed`);
    const base = withoutFailures(app);
    // `omni start` of a finished job runs it again: a new run (the reconciler starts one when job.version differs).
    if (state === 'running' && base.job && base.job.status !== 'running') base.job = { ...base.job, version: 0 };
    const next = { ...base, state, events: [...app.events, { atMs: this.now(), message: state === 'removing' ? 'removal requested' : `${state === 'stopped' ? 'stop' : 'start'} requested` }].slice(-40) };
    await this.d.proposeOk({ type: 'kv.txn', compares: [{ key: appKey(name), version: kv!.version }], ops: [{ op: 'put', key: appKey(name), value: recordJson('app', next) }] }, caller);
    this.d.kickOrchestrator();
    return [200, { name, state }];
  }

  /** omni schedule enable|disable: idempotent (changed false when it already was so). */
  /**
   * POST /v1/apps/NAME/workspace/sync: the nodes holding the app's tasks write the tasks' files
   * back into its synced workspace (a read-back per task: node/sync/task-workspace.ts), so that
   * `omni sync --pull` of a running agent gets its latest files. 200 with what each node did;
   * 503 when a node holding a task could not (its error named).
   */
  async syncWorkspace(name: string): Promise<[number, unknown]> {
    await this.d.readBarrier();
    this.app(name);
    if (!this.d.syncWorkspace) throw new OmniError('UNAVAILABLE', 'this node cannot reach task workspaces');
    const nodes = await this.d.syncWorkspace(name);
    const failed = nodes.filter((n) => n.error !== undefined);
    if (failed.length > 0) throw new OmniError('UNAVAILABLE', `the workspace of ${name} was not read back from ${failed.map((n) => `node ${n.node.slice(0, 16)}…: ${n.error}`).join('; ')}`.slice(0, 2000));
    return [200, { app: name, nodes }];
  }

  /**
   * GET /v1/apps/NAME/stats (omni stats): CPU and memory of each task of the app that is not
   * finished, sampled by the node running it, with the spec's reservation (the docker driver
   * also enforces it as a limit unless resources.limit is false). A node that cannot answer
   * leaves its tasks with an error: 200 all the same.
   */
  async stats(name: string): Promise<[number, unknown]> {
    await this.d.readBarrier();
    const app = this.app(name);
    if (!this.d.taskStats) throw new OmniError('UNAVAILABLE', 'this node cannot sample tasks');
    const spec = this.spec(name, app.version);
    const tasks = this.tasks(name).filter(({ task }) => task.desired === 'run');
    const byNode = await this.d.taskStats(name);
    const samples = new Map<string, TaskStatsSample>();
    const nodeErrors = new Map<string, string>();
    for (const n of byNode) {
      if (n.error !== undefined) nodeErrors.set(n.node, n.error);
      for (const s of n.samples ?? []) samples.set(s.task, s);
    }
    const nodeName = (id: string) => this.d.raft.state.node(id)?.name ?? id;
    return [
      200,
      {
        app: name,
        reserved: spec ? { cpu: spec.resources.cpu, memoryBytes: spec.resources.memoryMB * 1024 * 1024 } : null,
        tasks: tasks.map(({ task, status }) => {
          const s = samples.get(task.id);
          const error = s?.error ?? nodeErrors.get(task.nodeId) ?? (s ? undefined : 'not sampled: its node does not run it (yet)');
          return { task: task.id, node: nodeName(task.nodeId), state: status?.state ?? 'pending', ...(s?.cpuPercent !== undefined ? { cpuPercent: s.cpuPercent } : {}), ...(s?.memoryBytes !== undefined ? { memoryBytes: s.memoryBytes } : {}), ...(error ? { error } : {}) };
        }),
      },
    ];
  }

  /** An app with a schedule, read after a barrier (BAD_REQUEST without one, CONFLICT while it is removed). */
  private async scheduled(name: string): Promise<{ kv: { version: number }; app: AppRecord; spec: AppSpec & { cron: NonNullable<AppSpec['cron']> } }> {
    await this.d.readBarrier();
    const kv = this.d.raft.state.kvGet(appKey(name));
    const app = this.app(name);
    const spec = this.spec(name, app.version);
    if (!spec?.cron) throw new OmniError('BAD_REQUEST', `app ${name} has no schedule (type cron, or a service with schedule: {cron, command})`);
    if (app.state === 'removing') throw new OmniError('CONFLICT', `app ${name} is being removed`);
    return { kv: kv!, app, spec: spec as AppSpec & { cron: NonNullable<AppSpec['cron']> } };
  }

  async setSchedule(name: string, on: boolean, caller: Caller): Promise<[number, unknown]> {
    const { kv, app, spec } = await this.scheduled(name);
    const next = withSchedule(app, spec, on);
    const state = on ? 'ON' : 'OFF';
    if (!next) return [200, { name, schedule: state, changed: false }];
    next.events = [...app.events, { atMs: this.now(), message: `schedule ${on ? 'enabled' : 'disabled'}` }].slice(-40);
    await this.d.proposeOk({ type: 'kv.txn', compares: [{ key: appKey(name), version: kv.version }], ops: [{ op: 'put', key: appKey(name), value: recordJson('app', next) }] }, caller);
    this.d.kickOrchestrator();
    return [200, { name, schedule: state, changed: true }];
  }

  /**
   * omni schedule trigger: a run of the schedule now (ON or OFF), fired by the leader's next round
   * as a run of its own (the request and the run are one record write: it fires once). 202; a
   * request already waiting is not doubled (changed false). forbid with a run going on: CONFLICT.
   */
  async triggerSchedule(name: string, caller: Caller): Promise<[number, unknown]> {
    const { kv, app, spec } = await this.scheduled(name);
    if (app.state === 'stopped') throw new OmniError('CONFLICT', `app ${name} is stopped: omni start ${name} first`);
    const active = app.cron?.active ?? [];
    if (active.length > 0 && spec.cron.concurrencyPolicy === 'forbid') {
      throw new OmniError('CONFLICT', `run ${active.map((r) => r.run).join(', ')} of ${name} is still running and its concurrencyPolicy is forbid: wait for it, or set concurrencyPolicy allow or replace`);
    }
    const next = withTrigger(app, spec, this.now());
    if (!next) return [202, { name, triggered: true, changed: false }];
    next.events = [...app.events, { atMs: this.now(), message: 'a run was asked for (omni schedule trigger)' }].slice(-40);
    await this.d.proposeOk({ type: 'kv.txn', compares: [{ key: appKey(name), version: kv.version }], ops: [{ op: 'put', key: appKey(name), value: recordJson('app', next) }] }, caller);
    this.d.kickOrchestrator();
    return [202, { name, triggered: true, changed: true }];
  }

  private node(nameOrId: string): NodeRecord {
    const state = this.d.raft.state;
    const n = state.nodeByName(nameOrId) ?? state.node(nameOrId);
    if (!n) throw new OmniError('NOT_FOUND', `no node named ${nameOrId.slice(0, 64)}`);
    return n;
  }

  /** A node's scheduling eligibility and the tasks placed on it (what a drain waits for). */
  async nodeView(name: string, url: URL): Promise<[number, unknown]> {
    await this.consistent(url);
    const n = this.node(name);
    // Through the tasks-by-node index, not a scan of every task.
    const state = this.d.raft.state;
    const tasks = state.tables.tasksOnNode(n.id).flatMap((t) => (t.nodeId === n.id && t.desired === 'run' ? [{ id: t.id, app: t.app, version: t.version }] : []));
    return [200, { name: n.name, id: n.id, status: n.status, eligibility: n.eligibility ?? 'eligible', tasks }];
  }

  async setEligibility(name: string, body: unknown, caller: Caller): Promise<[number, unknown]> {
    const eligibility = (body as { eligibility?: unknown })?.eligibility;
    const allowed: NodeEligibility[] = ['eligible', 'ineligible', 'draining'];
    if (typeof eligibility !== 'string' || !allowed.includes(eligibility as NodeEligibility)) throw new OmniError('BAD_REQUEST', `eligibility: must be one of ${allowed.join(', ')}`);
    await this.d.readBarrier();
    const n = this.node(name);
    if (n.status === 'left') throw new OmniError('CONFLICT', `node ${n.name} has left the cluster`);
    // Draining a node that is already drained (ineligible) changes nothing: it has no tasks to move.
    const next = eligibility === 'draining' && n.eligibility === 'ineligible' ? 'ineligible' : (eligibility as NodeEligibility);
    await this.d.proposeOk({ type: 'node.eligibility', id: n.id, eligibility: next }, caller);
    this.d.kickOrchestrator();
    return [200, { name: n.name, eligibility: next }];
  }

  private endpointList(name: string): { task: string; node: string; host: string; ports: Record<string, number> }[] {
    const app = parseRecord<AppRecord>(this.d.raft.state.kvGet(appKey(name))?.value);
    if (!app) return [];
    const out = [];
    for (const { task, status } of this.tasks(name)) {
      if (task.desired !== 'run' || !isServing(status)) continue;
      const spec = this.spec(name, task.version);
      const node = this.d.raft.state.node(task.nodeId);
      const ports: Record<string, number> = {};
      spec?.ports.forEach((p, i) => (ports[p.name] = task.hostPorts[i]));
      out.push({ task: task.id, node: node?.name ?? task.nodeId, host: nodeHost(node?.addrs ?? []), ports });
    }
    return out;
  }

  async endpoints(name: string, url: URL): Promise<[number, unknown]> {
    await this.consistent(url);
    this.app(name);
    return [200, { app: name, endpoints: this.endpointList(name) }];
  }

  /** Logs of every task of the app (or ?task=ID), each line prefixed with its task id. */
  async appLogs(req: IncomingMessage, url: URL, name: string, res: ServerResponse): Promise<undefined> {
    logOptions(url, new AbortController().signal); // a 400 for bad since/tail/follow before anything else
    const only = queryParam(url, 'task');
    const runText = queryParam(url, 'run');
    if (runText !== undefined && !/^[1-9]\d{0,9}$/.test(runText)) throw new OmniError('BAD_REQUEST', 'run must be a run number (1, 2, …)');
    const run = runText === undefined ? undefined : Number(runText);
    this.app(name);
    const tasks = this.tasks(name).filter((t) => (only ? t.task.id === only : true) && (run === undefined || t.task.run === run));
    if (only && tasks.length === 0) throw new OmniError('NOT_FOUND', `app ${name} has no task ${only}`);
    if (run !== undefined && tasks.length === 0) throw new OmniError('NOT_FOUND', `app ${name} has no task of run ${run} (the tasks of finished runs are kept 10 per app)`);
    // json=true: one JSON object per line ({task, node, line, at?}, or {task, node, error}; at: when the line was written, epoch ms).
    const json = queryBool(url, 'json');
    const state = this.d.raft.state;
    res.writeHead(200, { 'content-type': json ? 'application/x-ndjson; charset=utf-8' : 'text/plain; charset=utf-8' });
    res.flushHeaders(); // the client knows the stream started even before the first line
    const abort = new AbortController();
    req.on('close', () => abort.abort());
    const query = new URLSearchParams(url.searchParams);
    query.delete('task');
    query.delete('run');
    query.delete('json');
    await Promise.all(
      tasks.map(async ({ task }) => {
        const prefix = tasks.length > 1 && !only ? `[${task.id}] ` : '';
        const node = state.node(task.nodeId)?.name ?? task.nodeId;
        // json: each line with its time (`at`, epoch ms, when the driver knows it), so a reader that
        // reconnects asks from there and leaves out what it already has (omni watch)
        const format = json
          ? (stamped: string) => {
              const { atMs, text } = unstampLine(stamped);
              return JSON.stringify({ task: task.id, node, line: text, ...(atMs !== undefined ? { at: atMs } : {}) }) + '\n';
            }
          : (line: string) => prefix + line + '\n';
        try {
          for await (const line of this.taskLogLines(task, query, abort.signal, json)) {
            if (!res.write(format(line))) await new Promise((r) => res.once('drain', r));
          }
        } catch (err) {
          if (abort.signal.aborted) return;
          const message = (err as Error).message;
          res.write(json ? JSON.stringify({ task: task.id, node, error: `logs unavailable: ${message}` }) + '\n' : `${prefix}(logs unavailable: ${message})\n`);
        }
      }),
    );
    res.end();
    return undefined;
  }

  /** Logs of a task on this node only. */
  async taskLogs(req: IncomingMessage, url: URL, id: string, res: ServerResponse): Promise<undefined> {
    const abort = new AbortController();
    const opts = logOptions(url, abort.signal);
    const driver = this.d.localDriver(id);
    if (!driver) throw new OmniError('NOT_FOUND', `task ${id.slice(0, 64)} is not known on node ${this.d.name}`);
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
    res.flushHeaders(); // the client knows the stream started even before the first line
    req.on('close', () => abort.abort());
    try {
      for await (const line of driver.logs(id, opts)) {
        if (!res.write(line + '\n')) await new Promise((r) => res.once('drain', r));
      }
    } catch (err) {
      if (!abort.signal.aborted) res.write(`(logs ended: ${(err as Error).message})\n`);
    }
    res.end();
    return undefined;
  }

  /** A task's lines: read locally, or from the node that runs it over libp2p (the caller's token stays here). */
  private async *taskLogLines(task: TaskRecord, query: URLSearchParams, signal: AbortSignal, stamped = false): AsyncGenerator<string> {
    const opts = { ...logOptions(new URL(`http://x/?${query}`), signal), ...(stamped ? { stamped: true } : {}) };
    if (task.nodeId === this.d.id) {
      const driver = this.d.localDriver(task.id);
      if (!driver) throw new Error(`task ${task.id} has not started on this node`);
      yield* driver.logs(task.id, opts);
      return;
    }
    const node = this.d.raft.state.node(task.nodeId);
    if (!node || node.status !== 'up') throw new Error(`node ${node?.name ?? task.nodeId} is ${node?.status ?? 'unknown'}`);
    yield* this.d.taskLogs.read(task.nodeId, { taskId: task.id, follow: opts.follow, sinceMs: opts.sinceMs, tail: opts.tail, ...(stamped ? { stamped: true } : {}) }, signal);
  }
}

/** follow=true|false, since=<epoch ms>, tail=<lines> (above MAX_LOG_TAIL: MAX_LOG_TAIL); anything else is a 400. */
function logOptions(url: URL, signal: AbortSignal): { follow: boolean; sinceMs?: number; tail?: number; signal: AbortSignal } {
  const tail = queryInt(url, 'tail', 0, Number.MAX_SAFE_INTEGER) ?? DEFAULT_LOG_TAIL;
  return {
    follow: queryBool(url, 'follow'),
    sinceMs: queryInt(url, 'since', 0, Number.MAX_SAFE_INTEGER),
    tail: Math.min(tail, MAX_LOG_TAIL),
    signal,
  };
}
