// The HTTP API every node serves (JSON). /healthz is open; every other route needs an admin
// bearer token, checked in constant time against the SHA-256 hashes in the replicated state.
// The caller (node/cluster/caller.ts) goes with every write to the leader, which authorizes it. The
// control socket speaks for the node itself: reads and `leave`, never an admin's writes.
// Writes go through the leader (forwarded over libp2p); reads are linearizable (ReadIndex)
// unless ?stale=true.
import { createServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { rm, chmod } from 'node:fs/promises';
import { Role } from '../../protocol/raft/types.js';
import type { KvRecord, TokenRecord } from '../../protocol/cluster/state.js';
import type { ClusterAccess, KvReader, LivenessView, RaftView } from '../cluster/ports.js';
import { CommandEncodeError, MAX_TOKEN_NAME_CHARS } from '../../protocol/cluster/commands.js';
import { OmniError, httpStatusFor } from '../errors.js';
import { matchToken, newJoinToken, newAdminToken, newPullToken, newTokenId, sha256Hex, bearerToken } from './tokens.js';
import { SELF, adminCaller, type Caller } from '../cluster/caller.js';
import { quotaBytes } from '../../protocol/cluster/quota.js';
import { MAX_MAX_STATE_BYTES, MIN_MAX_STATE_BYTES, STATE_RESERVE_BYTES } from '../../protocol/cluster/state.js';
import { SCHEMA_QUOTA_SET } from '../../protocol/cluster/schema.js';
import { assessHealth, quotaAlarmAtBytes, type HealthReport } from '../../protocol/cluster/health.js';
import { FreshTokens } from './fresh-tokens.js';
import type { Logger } from '../logger.js';
import { apiUrlFor, type ApiTls } from './tls.js';
import { readJson, parseRequestUrl, decodePathParam, queryParam, queryBool, queryInt, readVersion, kvKeyParam, objectBody } from './input.js';
import { apiLimits, serverOptions, capConnections, lingeringClose, Gate, BUSY_RETRY_AFTER_S, type ApiLimits } from './limits.js';
import { mark, timelineOn } from '../timeline.js';

export { MAX_BODY_BYTES, readJson } from './input.js';
const MAX_KV_LIST = 10_000;
const DEFAULT_KV_LIST = 1000;
/** A voter not heard from this long makes health degraded before the autopilot marks it down. */
const SILENT_VOTER_MS = 3000;
/** Longest kv list prefix (a prefix of a key, which is at most 512 bytes). */
const MAX_KV_PREFIX_CHARS = 512;

/**
 * Returns [status, JSON body], or undefined when it wrote the response itself (streams).
 * caller: who asks (an admin token, or this node itself on the control socket); every write
 * the handler proposes names it.
 */
export type Handler = (req: IncomingMessage, url: URL, params: string[], res: ServerResponse, caller: Caller) => Promise<[number, unknown] | undefined>;

/**
 * stream: the handler streams its answer for as long as it likes (logs); see api-limits.ts.
 * member: the node's own control socket may call it (reads are always allowed there; any other
 * route needs an admin token).
 */
export interface RouteOptions {
  stream?: boolean;
  member?: boolean;
}

/** What the API server's own routes use (status, nodes, kv, tokens, leave). */
export interface ApiServerDeps extends ClusterAccess {
  /** The replica, and kv values that may live on disk. */
  readonly raft: RaftView & KvReader;
  readonly id: string;
  readonly name: string;
  /** When each peer was last heard from (undefined until the node has joined). */
  readonly liveness: LivenessView | undefined;
  /** The private-network key new join tokens carry. */
  readonly networkKeyHex: string;
  leave(): Promise<void>;
  /** The command schema every member reads (protocol/cluster/schema.ts): new fields wait for it. */
  clusterSchema(): number;
}

export class ApiServer {
  private server: Server | undefined;
  private control: Server | undefined;
  url = '';
  private readonly routes: { method: string; pattern: RegExp; handler: Handler; open?: boolean; stream?: boolean; member?: boolean }[] = [];
  readonly limits: ApiLimits;
  private readonly inFlight: Gate;
  private readonly streams: Gate;
  private readonly freshTokens: FreshTokens;

  constructor(
    private readonly d: ApiServerDeps,
    private readonly log: Logger,
    limits: Partial<ApiLimits> = {},
  ) {
    this.limits = apiLimits(limits);
    this.inFlight = new Gate(this.limits.maxInFlight, 'requests');
    this.streams = new Gate(this.limits.maxStreams, 'streams');
    this.freshTokens = new FreshTokens(() => this.d.readBarrier());
    this.route('GET', /^\/healthz$/, async () => [200, { status: 'ok', node: this.d.name }], true);
    this.route('GET', /^\/health$/, async () => {
      const h = this.health();
      return [h.status === 'unhealthy' ? 503 : 200, h];
    });
    this.route('GET', /^\/v1\/status$/, async () => [200, this.status()]);
    this.route('GET', /^\/v1\/nodes$/, async () => [200, { nodes: this.nodes() }]);
    this.route('GET', /^\/v1\/kv$/, async (_req, url) => this.kvList(url));
    this.route('GET', /^\/v1\/kv\/(.+)$/, async (_req, url, [key]) => this.kvGet(key, url));
    this.route('PUT', /^\/v1\/kv\/(.+)$/, async (req, _url, [key], _res, caller) => this.kvPut(key, await readJson(req), caller));
    this.route('DELETE', /^\/v1\/kv\/(.+)$/, async (_req, url, [key], _res, caller) => this.kvDelete(key, url, caller));
    this.route('POST', /^\/v1\/tokens$/, async (req, _url, _params, _res, caller) => this.createToken(await readJson(req), caller));
    this.route('GET', /^\/v1\/tokens$/, async () => [200, { tokens: this.tokenList() }]);
    this.route('DELETE', /^\/v1\/tokens\/([^/]+)$/, async (_req, _url, [id], _res, caller) => this.revokeToken(id, caller));
    this.route('GET', /^\/v1\/quota$/, async () => [200, this.quota()]);
    this.route('PUT', /^\/v1\/quota$/, async (req, _url, _params, _res, caller) => this.setQuota(await readJson(req), caller));
    this.route(
      'POST',
      /^\/v1\/leave$/,
      async () => {
        await this.d.leave();
        return [200, { left: true, node: this.d.name }];
      },
      false,
      { member: true },
    );
  }

  route(method: string, pattern: RegExp, handler: Handler, open = false, opts: RouteOptions = {}): void {
    this.routes.push({ method, pattern, handler, open, stream: opts.stream, member: opts.member });
  }

  /** Serves HTTPS with the node certificate when `tls` says so (see node/api/tls.ts), else HTTP. */
  async listen(hostPort: string, tls?: ApiTls): Promise<void> {
    const { host, port } = parseHostPort(hostPort);
    const handler = (req: IncomingMessage, res: ServerResponse) => void this.handle(req, res);
    this.server = tls ? tls.createServer(serverOptions(this.limits), handler) : createServer(serverOptions(this.limits), handler);
    capConnections(this.server, this.limits, this.log, 'api');
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(port, host, () => resolve());
    });
    this.url = apiUrlFor(tls?.scheme ?? 'http', this.server.address() as AddressInfo);
  }

  /**
   * The node-local control socket (in the 0700 data dir): requests on it are trusted, the way
   * dockerd trusts its socket. `omnid leave` uses it; a joined node has no admin token.
   */
  async listenControl(socketPath: string): Promise<void> {
    await rm(socketPath, { force: true });
    this.control = createServer(serverOptions(this.limits), (req, res) => void this.handle(req, res, true));
    capConnections(this.control, this.limits, this.log, 'control socket');
    await new Promise<void>((resolve, reject) => {
      this.control!.once('error', reject);
      this.control!.listen(socketPath, () => resolve());
    });
    await chmod(socketPath, 0o600);
  }

  async close(): Promise<void> {
    for (const server of [this.server, this.control]) {
      if (!server) continue;
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  }

  /** Told of every answered request (the node's /metrics): method, status code, time to the end of the answer. */
  onRequest: ((method: string, status: number, durationMs: number) => void) | undefined;

  private async handle(req: IncomingMessage, res: ServerResponse, trusted = false): Promise<void> {
    const t0 = performance.now();
    if (timelineOn && req.method === 'PUT') {
      mark('http-in');
      res.once('finish', () => mark('http-out'));
    }
    try {
      await this.answer(req, res, trusted);
    } finally {
      this.onRequest?.(req.method ?? '', res.statusCode, performance.now() - t0);
    }
  }

  /**
   * The role of the request's bearer token when it is one of `roles` (an open route that accepts
   * more than admin tokens checks it itself: /metrics takes a pull token too); else undefined.
   */
  async tokenRole(req: IncomingMessage, roles: readonly TokenRecord['role'][]): Promise<TokenRecord['role'] | undefined> {
    const token = bearerToken(req.headers.authorization);
    if (!token) return undefined;
    const match = await this.freshTokens.check(() => matchToken(token, this.d.raft.state.tokens().filter((t) => roles.includes(t.role))));
    return match?.role;
  }

  private async answer(req: IncomingMessage, res: ServerResponse, trusted: boolean): Promise<void> {
    let status = 500;
    let body: unknown;
    let release: (() => void) | undefined;
    try {
      const url = parseRequestUrl(req.url);
      const matching = this.routes.filter((r) => r.pattern.test(url.pathname));
      const route = matching.find((r) => r.method === req.method);
      // Only open routes answer without a token; even "no such route" needs one.
      const caller = route?.open || trusted ? SELF : await this.authorize(req);
      if (timelineOn && req.method === 'PUT') mark('authed');
      if (matching.length === 0) throw new OmniError('NOT_FOUND', `no route ${url.pathname.slice(0, 200)}`);
      if (!route) throw new OmniError('METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${url.pathname.slice(0, 200)}`);
      if (trusted && !route.open && !route.member && req.method !== 'GET') {
        throw new OmniError('FORBIDDEN', `the control socket acts for this node only (reads, leave): ${req.method} ${url.pathname.slice(0, 200)} needs an admin token`);
      }
      // Open routes (liveness) and the trusted control socket are never refused as BUSY.
      if (!route.open && !trusted) release = (route.stream ? this.streams : this.inFlight).enter();
      const params = route.pattern.exec(url.pathname)!.slice(1).map(decodePathParam);
      const out = await route.handler(req, url, params, res, caller);
      if (out === undefined) return;
      [status, body] = out;
    } catch (err) {
      const e = asOmniError(err);
      if (e.code === 'INTERNAL') this.log.error(`api: ${req.method} ${req.url?.slice(0, 200)}: ${(err as Error).stack}`);
      status = httpStatusFor(e.code);
      body = { error: { code: e.code, message: e.message, ...e.detail } };
      if (res.headersSent) {
        res.end(`\nerror: ${e.message}\n`);
        return;
      }
    } finally {
      release?.();
    }
    const text = JSON.stringify(body) + '\n';
    const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) };
    if (status === 503) headers['retry-after'] = BUSY_RETRY_AFTER_S;
    // A body left unread (refused before or while reading it, e.g. 413 on a chunked upload):
    // answer, then close instead of reading the rest to reuse the connection.
    if (!req.complete) {
      headers.connection = 'close';
      lingeringClose(req);
    }
    res.writeHead(status, headers);
    res.end(text);
  }

  /** The admin caller of a request (UNAUTHORIZED without a valid admin token). */
  private async authorize(req: IncomingMessage): Promise<Caller> {
    const header = req.headers.authorization;
    const token = bearerToken(header);
    const match = token ? await this.freshTokens.check(() => matchToken(token, this.d.raft.state.tokens().filter((t) => t.role === 'admin'))) : undefined;
    if (!match) {
      throw new OmniError('UNAUTHORIZED', header ? 'invalid API token' : 'missing API token (Authorization: Bearer <token>; see OMNI_TOKEN)');
    }
    return adminCaller(token, match.id);
  }

  health(): HealthReport {
    const raft = this.d.raft.raft;
    const state = this.d.raft.state;
    const now = Date.now();
    const seen = this.d.liveness?.seen;
    return assessHealth({
      selfId: this.d.id,
      leader: raft.lead,
      voters: [...raft.voters],
      voterTarget: state.config().voterTarget,
      nodes: state.nodes(),
      silentMs: (id) => {
        const at = seen?.get(id)?.lastSeenMs;
        return at === undefined ? undefined : now - at;
      },
      silentAfterMs: SILENT_VOTER_MS,
      stateBytes: state.sizeBytes,
      quotaBytes: quotaBytes(state.config()),
    });
  }

  private status(): Record<string, unknown> {
    const raft = this.d.raft.raft;
    const state = this.d.raft.state;
    const cfg = state.config();
    const health = this.health();
    const nameOf = (id: string) => state.node(id)?.name ?? id;
    return {
      clusterId: cfg.clusterId,
      node: this.d.name,
      nodeId: this.d.id,
      role: raft.role === Role.Leader ? 'leader' : raft.voters.has(this.d.id) ? 'voter' : raft.learners.has(this.d.id) ? 'non-voter' : 'none',
      leader: raft.lead === '' ? null : nameOf(raft.lead),
      leaderId: raft.lead === '' ? null : raft.lead,
      term: raft.term,
      commitIndex: raft.log.committed,
      appliedIndex: raft.log.applied,
      voters: [...raft.voters].map(nameOf).sort(),
      nonVoters: [...raft.learners].map(nameOf).sort(),
      voterTarget: cfg.voterTarget,
      root: cfg.rootNodeId === '' ? null : nameOf(cfg.rootNodeId),
      rootRetired: cfg.rootRetired,
      health: health.status,
      healthReasons: health.reasons,
      // Raft messages dropped unread (leader or candidate messages, or a higher term, from a
      // node that is not a voter here): see README, Security model.
      refusedRaftMessages: raft.refusedMessages,
      // The replicated state quota (protocol/cluster/quota.ts) and how much of it is used.
      stateBytes: state.sizeBytes,
      maxStateBytes: quotaBytes(cfg),
    };
  }

  private nodes(): unknown[] {
    const raft = this.d.raft.raft;
    const now = Date.now();
    return this.d.raft.state.nodes().map((n) => {
      const seen = n.id === this.d.id ? now : this.d.liveness?.seen.get(n.id)?.lastSeenMs;
      const live = this.d.liveness?.seen.get(n.id);
      return {
        name: n.name,
        id: n.id,
        role: raft.lead === n.id ? 'leader' : n.role === 'voter' ? 'voter' : n.role === 'learner' ? 'non-voter' : 'none',
        status: n.status,
        statusReason: n.statusReason,
        eligibility: n.eligibility ?? 'eligible',
        root: n.root,
        apiUrl: n.apiUrl,
        addrs: n.addrs,
        resources: n.resources,
        labels: n.labels,
        load1: live?.load1 ?? null,
        lastHeartbeatAgoMs: seen === undefined ? null : now - seen,
      };
    });
  }

  private async readConsistency(url: URL): Promise<void> {
    if (queryBool(url, 'stale')) return;
    await this.d.readBarrier();
  }

  private async kvGet(key: string, url: URL): Promise<[number, unknown]> {
    key = kvKeyParam(key);
    await this.readConsistency(url);
    const rec = await this.d.raft.kvGet(key);
    if (!rec) throw new OmniError('NOT_FOUND', `key ${key.slice(0, 200)} not found`);
    return [200, kvJson(rec)];
  }

  private async kvList(url: URL): Promise<[number, unknown]> {
    const prefix = queryParam(url, 'prefix') ?? '';
    if (prefix.length > MAX_KV_PREFIX_CHARS) throw new OmniError('BAD_REQUEST', `prefix must be at most ${MAX_KV_PREFIX_CHARS} characters`);
    // Above the maximum is not an error: the list is capped, as documented.
    const limit = Math.min(MAX_KV_LIST, queryInt(url, 'limit', 1, Number.MAX_SAFE_INTEGER) ?? DEFAULT_KV_LIST);
    await this.readConsistency(url);
    return [200, { items: (await this.d.raft.kvList(prefix, limit)).map(kvJson) }];
  }

  private async kvPut(key: string, body: unknown, caller: Caller): Promise<[number, unknown]> {
    key = kvKeyParam(key);
    mark('body-read');
    const b = objectBody(body, ['value', 'expectedVersion'], '{"value": "<string>", "expectedVersion": <integer>?}');
    if (typeof b.value !== 'string') throw new OmniError('BAD_REQUEST', 'body must be {"value": "<string>"} (optional "expectedVersion": <number>)');
    const expectedVersion = b.expectedVersion === undefined ? undefined : readVersion(b.expectedVersion, 'expectedVersion');
    const value = await this.d.proposeOk({ type: 'kv.put', key, value: b.value, ...(expectedVersion !== undefined ? { expectedVersion } : {}) }, caller);
    return [200, value];
  }

  private async kvDelete(key: string, url: URL, caller: Caller): Promise<[number, unknown]> {
    key = kvKeyParam(key);
    const expectedVersion = queryInt(url, 'expectedVersion', 0, Number.MAX_SAFE_INTEGER);
    await this.d.proposeOk({ type: 'kv.delete', key, ...(expectedVersion !== undefined ? { expectedVersion } : {}) }, caller);
    return [200, { deleted: key }];
  }

  private async createToken(body: unknown, caller: Caller): Promise<[number, unknown]> {
    const b = objectBody(body, ['role', 'name'], '{"role": "join"|"admin"|"pull", "name": "<label>"}');
    if (b.role !== 'join' && b.role !== 'admin' && b.role !== 'pull') throw new OmniError('BAD_REQUEST', 'body must be {"role": "join"|"admin"|"pull", "name": "<label>"}');
    if (b.name !== undefined && (typeof b.name !== 'string' || b.name.length > MAX_TOKEN_NAME_CHARS || /[\u0000-\u001f\u007f-\u009f]/.test(b.name))) {
      throw new OmniError('BAD_REQUEST', `name must be a label of at most ${MAX_TOKEN_NAME_CHARS} characters without control characters`);
    }
    const name = b.name ?? '';
    const token = b.role === 'join' ? newJoinToken(Buffer.from(this.networkKeyHex(), 'hex')) : b.role === 'pull' ? newPullToken() : newAdminToken();
    const id = newTokenId();
    await this.d.proposeOk({ type: 'token.add', token: { id, hash: sha256Hex(token), role: b.role, name } }, caller);
    return [201, { id, role: b.role, token }];
  }

  /** The replicated state quota (protocol/cluster/quota.ts): its size, what is used, and the alarm. */
  private quota(): Record<string, unknown> {
    const state = this.d.raft.state;
    const maxStateBytes = quotaBytes(state.config());
    const alarmAtBytes = quotaAlarmAtBytes(maxStateBytes);
    return { stateBytes: state.sizeBytes, maxStateBytes, alarmAtBytes, alarm: state.sizeBytes >= alarmAtBytes, reserveBytes: STATE_RESERVE_BYTES };
  }

  /**
   * Changes the quota on every node (`omni quota set`): one config.set through Raft. A quota below
   * what the state holds is refused unless `force`: every write that grows the state would be
   * refused — an admin's, and past the reserve the cluster's own (node records, placements) —
   * until enough is deleted (deletes always pass). Needs every member to read the new field
   * (command schema 3): an older member would refuse the entry and diverge.
   */
  private async setQuota(body: unknown, caller: Caller): Promise<[number, unknown]> {
    const what = `{"maxStateBytes": <bytes from ${MIN_MAX_STATE_BYTES} to ${MAX_MAX_STATE_BYTES}>, "force": <true to set it below the state's size>}`;
    const b = objectBody(body, ['maxStateBytes', 'force'], what);
    const n = b.maxStateBytes;
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < MIN_MAX_STATE_BYTES || n > MAX_MAX_STATE_BYTES) throw new OmniError('BAD_REQUEST', `maxStateBytes must be an integer from ${MIN_MAX_STATE_BYTES} to ${MAX_MAX_STATE_BYTES} bytes, got ${JSON.stringify(n)}`);
    if (b.force !== undefined && typeof b.force !== 'boolean') throw new OmniError('BAD_REQUEST', `force must be true or false (expected ${what})`);
    const schema = this.d.clusterSchema();
    if (schema < SCHEMA_QUOTA_SET) {
      throw new OmniError('CONFLICT', `the quota cannot be changed until every member runs an omnid that reads the change (command schema ${SCHEMA_QUOTA_SET}; the cluster's is ${schema}): upgrade the older members, or remove dead ones (omni nodes remove)`);
    }
    await this.d.readBarrier();
    const state = this.d.raft.state;
    const before = quotaBytes(state.config());
    if (n < state.sizeBytes && b.force !== true) {
      throw new OmniError(
        'CONFLICT',
        `the state holds ${state.sizeBytes} bytes, more than a quota of ${n}: every write that grows it would be refused — an admin's, and past ${n + STATE_RESERVE_BYTES} bytes the cluster's own (node records, task placements) — until enough is deleted. Delete first, or set it anyway with force (omni quota set SIZE --force)`,
      );
    }
    // config.set carries the voter target too: the current one, read after the barrier (no
    // other route writes config.set; one that did would need a compare to avoid a lost update).
    await this.d.proposeOk({ type: 'config.set', voterTarget: state.config().voterTarget, maxStateBytes: n }, caller);
    // Applied here too before answering (a follower may not have applied the leader's commit yet).
    await this.d.readBarrier();
    const q = this.quota();
    this.log.info(`api: the state quota was changed from ${before} to ${n} bytes (${q.stateBytes} held)`);
    return [200, { ...q, previousMaxStateBytes: before }];
  }

  /** The cluster's tokens: id, role, name and when it was made (log index) — never a hash. */
  private tokenList(): { id: string; role: string; name: string; createdIndex: number }[] {
    return this.d.raft.state
      .tokens()
      .map((t) => ({ id: t.id, role: t.role, name: t.name, createdIndex: t.createdIndex }))
      .sort((a, b) => a.role.localeCompare(b.role) || a.createdIndex - b.createdIndex);
  }

  /**
   * Revokes a token at once on every node (join, admin or pull; omnid init's too). The last admin
   * token is refused — nobody could use the API after it — judged on this node's replica after a
   * read barrier (two revocations racing for the last two could still both pass).
   */
  private async revokeToken(id: string, caller: Caller): Promise<[number, unknown]> {
    if (!/^[0-9a-f]{1,64}$/.test(id)) throw new OmniError('BAD_REQUEST', 'a token id is lower-case hex (see omni token ls)');
    await this.d.readBarrier();
    const state = this.d.raft.state;
    const t = state.tokenById(id);
    if (!t) throw new OmniError('NOT_FOUND', `token ${id} not found (already revoked?)`);
    if (t.role === 'admin' && state.tokens().filter((x) => x.role === 'admin').length === 1) {
      throw new OmniError('CONFLICT', 'this is the last admin token: create another (omni token create --role admin) before revoking it');
    }
    await this.d.proposeOk({ type: 'token.revoke', id }, caller);
    return [200, { revoked: id, role: t.role, name: t.name }];
  }

  private networkKeyHex(): string {
    return this.d.networkKeyHex;
  }
}

function kvJson(r: KvRecord): Record<string, unknown> {
  return { key: r.key, value: r.value, version: r.version, createIndex: r.createIndex, modIndex: r.modIndex };
}

/**
 * Errors as the API reports them. A command the state machine's validation refuses was built
 * from request input, so it is the client's error (400), not ours.
 */
function asOmniError(err: unknown): OmniError {
  if (err instanceof OmniError) return err;
  if (err instanceof CommandEncodeError) return new OmniError(err.code, err.message);
  return new OmniError('INTERNAL', (err as Error)?.message ?? String(err));
}

export function parseHostPort(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new OmniError('BAD_REQUEST', `expected HOST:PORT, got ${s.slice(0, 100)}`);
  return { host: m[1] ?? m[2], port };
}
