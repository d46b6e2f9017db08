// Compose stacks in the HTTP API: PUT /v1/stacks/NAME (up: the stack record and every app it
// changes in one transaction; unchanged services are not touched), GET /v1/stacks[/NAME],
// GET /v1/stacks/NAME/health (200 healthy/degraded, 503 unhealthy, with reasons),
// GET /v1/stacks/NAME/health/simple (liveness), DELETE /v1/stacks/NAME (down: its apps removed
// and the record deleted in one transaction). The leader's StackController starts held services
// once their dependencies meet their conditions, or fails the stack saying why.
import { recordJson } from '../../protocol/apps/record-codec.js';
import { sealSecrets } from '../apps/secret-seal.js';
import type { ClusterAccess } from '../cluster/ports.js';
import type { ApiServer } from './server.js';
import type { Caller } from '../cluster/caller.js';
import { LEADER_DUTY } from '../cluster/caller.js';
import { readJson, queryBool } from './input.js';
import { OmniError } from '../errors.js';
import { validateAppSpec, specDigest, type AppSpec } from '../../protocol/apps/spec.js';
import { appKey, isServing, parseRecord, specKey, withEvent, type AppRecord, type TaskStatusRecord } from '../../protocol/apps/model.js';
import type { KvTxnOp } from '../../protocol/cluster/state.js';
import { fenceOp } from '../../protocol/registry/records.js';
import { findCycle, type Dependency } from '../../protocol/compose/parse.js';
import { advanceStack, stackHealth, stackKey, STACK_NAME, STACK_PREFIX, DEFAULT_START_TIMEOUT_MS, MAX_START_TIMEOUT_MS, type ServiceView, type StackRecord, type StackServiceRecord } from '../../protocol/compose/stack.js';
import { appVersionOps, retryLostRace } from './apps-routes.js';
import { REAL_CLOCK, type Clock } from '../timers.js';
import { schedNodeOf, wantedReplicas } from '../../protocol/apps/scheduler.js';

export interface StacksDeps extends ClusterAccess {
  kickOrchestrator(): void;
  /** The key secrets are sealed with (node/apps/secret-seal.ts); absent: kept as given (tests). */
  readonly secretKey?: Buffer;
  pinImage?(image: string): Promise<string>;
  readonly clock?: Clock;
}

const MAX_STACK_SERVICES = 200;
const MAX_STACKS_LISTED = 1000;
const SERVICE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;
const CONDITIONS = ['service_started', 'service_healthy', 'service_completed_successfully'];

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);

export function registerStackRoutes(api: ApiServer, d: StacksDeps): StackController {
  const s = new StacksApi(d);
  const controller = new StackController(d);
  api.route('PUT', /^\/v1\/stacks\/([^/]+)$/, async (req, _url, [name], _res, caller) => {
    const body = await readJson(req);
    const r = await retryLostRace(() => s.up(name, body, caller));
    void controller.tick().catch(() => undefined);
    return r;
  });
  api.route('GET', /^\/v1\/stacks$/, async (_req, url) => s.list(url));
  api.route('GET', /^\/v1\/stacks\/([^/]+)$/, async (_req, url, [name]) => s.inspect(name, url));
  api.route('GET', /^\/v1\/stacks\/([^/]+)\/health$/, async (_req, url, [name]) => s.health(name, url));
  api.route('GET', /^\/v1\/stacks\/([^/]+)\/health\/simple$/, async (_req, _url, [name]) => {
    s.record(name);
    return [200, { status: 'ok', stack: name }];
  });
  api.route('DELETE', /^\/v1\/stacks\/([^/]+)$/, async (_req, _url, [name], _res, caller) => retryLostRace(() => s.down(name, caller)));
  return controller;
}

interface UpService {
  service: string;
  app: string;
  spec: AppSpec;
  dependsOn: Dependency[];
  critical: boolean;
}

/** The body of PUT /v1/stacks/NAME, checked: {services: [{service, app, spec, dependsOn, critical}], startTimeoutMs?}. */
export function readStackBody(name: string, body: unknown): { services: UpService[]; startTimeoutMs: number } {
  if (!STACK_NAME.test(name)) throw new OmniError('BAD_REQUEST', 'a stack name is lower case letters, digits, _ and -, starting with a letter or digit, at most 40');
  if (!isObj(body)) throw new OmniError('BAD_REQUEST', 'expected {services: [...], startTimeoutMs?}');
  for (const k of Object.keys(body)) if (k !== 'services' && k !== 'startTimeoutMs') throw new OmniError('BAD_REQUEST', `unknown field ${k.slice(0, 40)}`);
  const timeout = body.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  if (typeof timeout !== 'number' || !Number.isInteger(timeout) || timeout < 1000 || timeout > MAX_START_TIMEOUT_MS) throw new OmniError('BAD_REQUEST', `startTimeoutMs: a whole number from 1000 to ${MAX_START_TIMEOUT_MS}`);
  if (!Array.isArray(body.services) || body.services.length === 0 || body.services.length > MAX_STACK_SERVICES) throw new OmniError('BAD_REQUEST', `services: a list of 1 to ${MAX_STACK_SERVICES} services`);
  const out: UpService[] = [];
  const seen = new Set<string>();
  const apps = new Set<string>();
  for (const [i, x] of body.services.entries()) {
    const at = `services[${i}]`;
    if (!isObj(x)) throw new OmniError('BAD_REQUEST', `${at}: expected {service, app, spec, dependsOn, critical}`);
    for (const k of Object.keys(x)) if (!['service', 'app', 'spec', 'dependsOn', 'critical'].includes(k)) throw new OmniError('BAD_REQUEST', `${at}: unknown field ${k.slice(0, 40)}`);
    if (typeof x.service !== 'string' || !SERVICE.test(x.service)) throw new OmniError('BAD_REQUEST', `${at}.service: a service name`);
    if (seen.has(x.service)) throw new OmniError('BAD_REQUEST', `${at}.service: ${x.service} is listed twice`);
    seen.add(x.service);
    const v = validateAppSpec(x.spec);
    if (!v.ok) {
      const first = v.errors[0];
      throw new OmniError('INVALID_SPEC', `service ${x.service}: ${first.field}: ${first.message}${v.errors.length > 1 ? ` (and ${v.errors.length - 1} more)` : ''}`, { service: x.service, errors: v.errors });
    }
    if (x.app !== undefined && x.app !== v.spec.name) throw new OmniError('BAD_REQUEST', `${at}.app: must be the spec's name`);
    if (apps.has(v.spec.name)) throw new OmniError('BAD_REQUEST', `${at}: app ${v.spec.name} is listed twice`);
    apps.add(v.spec.name);
    const deps = x.dependsOn ?? [];
    if (!Array.isArray(deps)) throw new OmniError('BAD_REQUEST', `${at}.dependsOn: a list`);
    const dependsOn: Dependency[] = deps.map((dep, j) => {
      if (!isObj(dep) || typeof dep.service !== 'string' || !CONDITIONS.includes(dep.condition as string)) throw new OmniError('BAD_REQUEST', `${at}.dependsOn[${j}]: {service, condition: ${CONDITIONS.join(' | ')}}`);
      return { service: dep.service, condition: dep.condition as Dependency['condition'], required: dep.required !== false };
    });
    if (x.critical !== undefined && typeof x.critical !== 'boolean') throw new OmniError('BAD_REQUEST', `${at}.critical: true or false`);
    out.push({ service: x.service, app: v.spec.name, spec: v.spec, dependsOn, critical: x.critical !== false });
  }
  for (const s of out) for (const dep of s.dependsOn) if (!seen.has(dep.service)) throw new OmniError('BAD_REQUEST', `service ${s.service} depends on ${dep.service}, which is not in the stack`);
  const cycle = findCycle(out);
  if (cycle) throw new OmniError('BAD_REQUEST', `depends_on has a cycle: ${cycle.join(' → ')}`);
  return { services: out, startTimeoutMs: timeout };
}

export class StacksApi {
  constructor(private readonly d: StacksDeps) {}

  private now(): number {
    return (this.d.clock ?? REAL_CLOCK).now();
  }

  record(name: string): StackRecord {
    const r = parseRecord<StackRecord>(this.d.raft.state.kvGet(stackKey(name))?.value);
    if (!r) throw new OmniError('NOT_FOUND', `no stack named ${name.slice(0, 64)}`);
    return r;
  }

  async up(name: string, body: unknown, caller: Caller): Promise<[number, unknown]> {
    const { services, startTimeoutMs } = readStackBody(name, body);
    // Images of the cluster's registry run by digest (as POST /v1/apps does).
    for (const s of services) if (s.spec.image !== undefined && this.d.pinImage) s.spec.image = await this.d.pinImage(s.spec.image);
    await this.d.readBarrier();
    const state = this.d.raft.state;
    const stackKv = state.kvGet(stackKey(name));
    const prev = parseRecord<StackRecord>(stackKv?.value);
    const prevApps = new Set(prev?.services.map((s) => s.app) ?? []);
    // An app of another stack (or made by omni run/deploy) is not taken over silently.
    for (const other of state.kvList(STACK_PREFIX, MAX_STACKS_LISTED)) {
      if (other.key === stackKey(name)) continue;
      const o = parseRecord<StackRecord>(other.value);
      const clash = o?.services.find((x) => services.some((s) => s.app === x.app));
      if (clash) throw new OmniError('CONFLICT', `app ${clash.app} belongs to stack ${o!.name}`, { app: clash.app, stack: o!.name });
    }
    const now = this.now();
    const compares: { key: string; version: number }[] = [{ key: stackKey(name), version: stackKv?.version ?? 0 }];
    const ops: KvTxnOp[] = [];
    const actions: { service: string; app: string; action: string; version: number; held: boolean }[] = [];
    const wasHeld = new Set(prev && prev.status !== 'up' ? prev.held : []);
    const held: string[] = [];
    let fence = false;
    for (const s of services) {
      const kv = state.kvGet(appKey(s.app));
      const app = parseRecord<AppRecord>(kv?.value);
      if (app && app.state !== 'removing' && !prevApps.has(s.app)) throw new OmniError('CONFLICT', `an app named ${s.app} already exists and is not part of stack ${name}: remove it (omni rm ${s.app}) or use another project name (-p)`, { app: s.app });
      compares.push({ key: appKey(s.app), version: kv?.version ?? 0 });
      const prevSpec = app ? parseRecord<AppSpec>(state.kvGet(specKey(s.app, app.version))?.value) : undefined;
      if (this.d.secretKey) s.spec = sealSecrets(s.spec, this.d.secretKey, prevSpec);
      // A new service, or one still held from the last up, waits for its dependencies.
      const hold = s.dependsOn.length > 0 && (!app || app.state === 'removing' || (wasHeld.has(s.service) && app.state === 'stopped'));
      if (app && app.state !== 'removing' && prevSpec && specDigest(prevSpec) === specDigest(s.spec) && (app.state === 'running' || hold)) {
        actions.push({ service: s.service, app: s.app, action: hold ? 'waiting' : 'unchanged', version: app.version, held: hold });
        if (hold) held.push(s.service);
        continue;
      }
      const { ops: appOps, result } = appVersionOps(app, prevSpec, s.spec, now, hold ? 'stopped' : 'running');
      if (hold && app && app.state === 'stopped' && result.action === 'scaled') {
        // the scale path would set it running: keep it held instead
        appOps[1] = { op: 'put', key: appKey(s.app), value: recordJson('app', { ...app }) };
      }
      ops.push(...appOps);
      if (s.spec.image !== undefined) fence = true;
      if (hold) held.push(s.service);
      actions.push({ service: s.service, app: s.app, action: hold ? `${result.action}, waiting for ${s.dependsOn.map((x) => x.service).join(', ')}` : result.action, version: result.version, held: hold });
    }
    // Services gone from the file: their apps are removed.
    for (const old of prev?.services ?? []) {
      if (services.some((s) => s.app === old.app)) continue;
      const kv = state.kvGet(appKey(old.app));
      const app = parseRecord<AppRecord>(kv?.value);
      if (!app || app.state === 'removing') continue;
      compares.push({ key: appKey(old.app), version: kv!.version });
      ops.push({ op: 'put', key: appKey(old.app), value: recordJson('app', withEvent({ ...app, state: 'removing' }, now, `removal requested (no longer in stack ${name})`)) });
      actions.push({ service: old.service, app: old.app, action: 'removed', version: app.version, held: false });
    }
    const changed = ops.length > 0 || !prev || prev.status === 'failed' || JSON.stringify(prev.services) !== JSON.stringify(services.map(recordOf));
    const record: StackRecord = {
      name,
      generation: (prev?.generation ?? 0) + (changed ? 1 : 0),
      services: services.map(recordOf),
      held,
      status: held.length > 0 ? 'starting' : 'up',
      heldSinceMs: now,
      startTimeoutMs,
      updatedAtMs: now,
    };
    if (changed) {
      ops.push({ op: 'put', key: stackKey(name), value: JSON.stringify(record) });
      if (fence) ops.push(fenceOp());
      await this.d.proposeOk({ type: 'kv.txn', compares, ops }, caller);
      this.d.kickOrchestrator();
    }
    return [prev ? 200 : 201, { stack: name, generation: changed ? record.generation : prev!.generation, changed, services: actions }];
  }

  async down(name: string, caller: Caller): Promise<[number, unknown]> {
    await this.d.readBarrier();
    const state = this.d.raft.state;
    const stackKv = state.kvGet(stackKey(name));
    const rec = this.record(name);
    const now = this.now();
    const compares = [{ key: stackKey(name), version: stackKv!.version }];
    const ops: KvTxnOp[] = [{ op: 'delete', key: stackKey(name) }];
    const removed: string[] = [];
    for (const s of rec.services) {
      const kv = state.kvGet(appKey(s.app));
      const app = parseRecord<AppRecord>(kv?.value);
      if (!app || app.state === 'removing') continue;
      compares.push({ key: appKey(s.app), version: kv!.version });
      ops.push({ op: 'put', key: appKey(s.app), value: recordJson('app', withEvent({ ...app, state: 'removing' }, now, `removal requested (stack ${name} down)`)) });
      removed.push(s.app);
    }
    await this.d.proposeOk({ type: 'kv.txn', compares, ops }, caller);
    this.d.kickOrchestrator();
    return [200, { stack: name, removed }];
  }

  async list(url: URL): Promise<[number, unknown]> {
    if (!queryBool(url, 'stale')) await this.d.readBarrier();
    const stacks = this.d.raft.state.kvList(STACK_PREFIX, MAX_STACKS_LISTED).flatMap((kv) => {
      const r = parseRecord<StackRecord>(kv.value);
      if (!r) return [];
      const h = stackHealth(r, serviceViews(this.d, r));
      return [{ name: r.name, generation: r.generation, status: r.status, health: h.status, services: r.services.length, reasons: h.reasons }];
    });
    return [200, { stacks }];
  }

  async inspect(name: string, url: URL): Promise<[number, unknown]> {
    if (!queryBool(url, 'stale')) await this.d.readBarrier();
    const r = this.record(name);
    const views = serviceViews(this.d, r);
    const h = stackHealth(r, views);
    const services = r.services.map((s) => {
      const v = views.get(s.service)!;
      const sh = h.services.find((x) => x.service === s.service)!;
      const app = parseRecord<AppRecord>(this.d.raft.state.kvGet(appKey(s.app))?.value);
      return { service: s.service, app: s.app, version: app?.version ?? 0, state: sh.state, replicas: v.replicas, running: v.running, healthy: v.serving, job: v.job ?? null, critical: s.critical, dependsOn: s.dependsOn, up: sh.up, reason: sh.reason, lastOutput: v.lastOutput };
    });
    return [200, { name: r.name, generation: r.generation, status: r.status, held: r.held, failure: r.failure ?? null, health: h.status, reasons: h.reasons, services }];
  }

  async health(name: string, url: URL): Promise<[number, unknown]> {
    if (!queryBool(url, 'stale')) await this.d.readBarrier();
    const r = this.record(name);
    const h = stackHealth(r, serviceViews(this.d, r));
    return [h.status === 'unhealthy' ? 503 : 200, { stack: name, status: h.status, reasons: h.reasons, services: h.services }];
  }
}

function recordOf(s: UpService): StackServiceRecord {
  return { service: s.service, app: s.app, dependsOn: s.dependsOn, critical: s.critical };
}

/** Each service's app as the stack logic sees it (from this node's replica). */
export function serviceViews(d: Pick<ClusterAccess, 'raft'>, r: StackRecord): Map<string, ServiceView> {
  const state = d.raft.state;
  const out = new Map<string, ServiceView>();
  for (const s of r.services) {
    const app = parseRecord<AppRecord>(state.kvGet(appKey(s.app))?.value);
    if (!app) {
      out.set(s.service, { exists: false, state: 'stopped', isJob: false, replicas: 0, running: 0, serving: 0, reason: 'its app does not exist', lastOutput: [] });
      continue;
    }
    const spec = parseRecord<AppSpec>(state.kvGet(specKey(s.app, app.version))?.value);
    const tasks = state.tables.tasksOfApp(s.app).filter((t) => t.desired === 'run' && t.version === app.version);
    const all = state.tables.tasksOfApp(s.app).map((t) => state.tables.status(t.id)).filter((x): x is TaskStatusRecord => x !== undefined);
    const statuses = tasks.map((t) => state.tables.status(t.id));
    const isJob = spec?.type === 'job';
    const job = isJob && app.job?.version === app.version ? app.job.status : undefined;
    const troubled = statuses.find((x) => x && (x.cause || x.health === 'unhealthy')) ?? all.find((x) => x.cause);
    const output = troubled?.lastOutput ?? all.find((x) => x.lastOutput && x.lastOutput.length > 0)?.lastOutput ?? [];
    // The health log (the last failing checks and what they printed) first: it says why a
    // service never got healthy; then what the task printed before it last failed.
    const healthLog = (troubled?.healthLog?.length ? troubled : statuses.find((x) => x?.healthLog?.length))?.healthLog ?? [];
    const lastOutput = [...healthLog.map((h) => `health check: ${h}`), ...output];
    const reason = app.state === 'failed' ? `failed: ${app.failedReason ?? 'tasks kept failing'}` : job === 'failed' ? `job failed: ${app.job!.reason}` : troubled ? troubled.cause || `health check ${troubled.health}` : app.pending;
    out.set(s.service, {
      exists: true,
      state: app.state,
      isJob,
      replicas: spec ? wantedReplicas(spec, () => state.nodes().map(schedNodeOf)) : 0,
      running: statuses.filter((x) => x?.state === 'running').length,
      serving: statuses.filter((x) => isServing(x)).length,
      ...(job ? { job } : isJob ? { job: 'running' as const } : {}),
      reason,
      lastOutput,
    });
  }
  return out;
}

/**
 * On the leader: starts held services whose dependencies meet their conditions (their apps go
 * from stopped to running), or marks the stack failed with the dependency's reason and last
 * output and the services that were not started. Every change is one guarded transaction.
 */
export class StackController {
  private busy = false;
  constructor(private readonly d: StacksDeps) {}

  async tick(): Promise<void> {
    if (this.busy || !this.d.raft.isLeader) return;
    this.busy = true;
    try {
      const state = this.d.raft.state;
      for (const kv of state.kvList(STACK_PREFIX, MAX_STACKS_LISTED)) {
        const r = parseRecord<StackRecord>(kv.value);
        if (!r || r.held.length === 0 || r.status === 'failed') continue;
        const now = (this.d.clock ?? REAL_CLOCK).now();
        const step = advanceStack(r, serviceViews(this.d, r), now);
        if (step.start.length === 0 && !step.failure) continue;
        const compares = [{ key: kv.key, version: kv.version }];
        const ops: KvTxnOp[] = [];
        if (step.failure) {
          ops.push({ op: 'put', key: kv.key, value: JSON.stringify({ ...r, status: 'failed', failure: step.failure, updatedAtMs: now } satisfies StackRecord) });
        } else {
          for (const service of step.start) {
            const s = r.services.find((x) => x.service === service)!;
            const akv = state.kvGet(appKey(s.app));
            const app = parseRecord<AppRecord>(akv?.value);
            if (!app) continue;
            compares.push({ key: appKey(s.app), version: akv!.version });
            ops.push({ op: 'put', key: appKey(s.app), value: recordJson('app', withEvent({ ...app, state: 'running' }, now, `started by stack ${r.name}: ${s.dependsOn.map((x) => `${x.service} ${x.condition.replace('service_', '').replace('_', ' ')}`).join(', ')}`)) });
          }
          const held = r.held.filter((x) => !step.start.includes(x));
          ops.push({ op: 'put', key: kv.key, value: JSON.stringify({ ...r, held, status: held.length > 0 ? 'starting' : 'up', updatedAtMs: now } satisfies StackRecord) });
        }
        await this.d.proposeOk({ type: 'kv.txn', compares, ops }, LEADER_DUTY).catch(() => undefined);
        this.d.kickOrchestrator();
      }
    } finally {
      this.busy = false;
    }
  }
}
