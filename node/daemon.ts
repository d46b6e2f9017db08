// omnid: one process per host. Wires the libp2p host, the Raft transport and RPC, durable
// storage, the Raft driver with the cluster state machine, heartbeats, the autopilot and the
// HTTP API. Lifecycle entry points: Omnid.init, Omnid.join, Omnid.start.
import { mkdir, readdir, rm, chmod } from 'node:fs/promises';
import { writeFileAtomic } from './files.js';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { multiaddr } from '@multiformats/multiaddr';
import { peerIdFromString, peerIdFromPrivateKey } from '@libp2p/peer-id';
import { createHost, loadOrCreateIdentity, type OmniHost } from './p2p/host.js';
import { RaftTransport } from './raft/raft-transport.js';
import { Rpc } from './p2p/rpc.js';
import { Forwarder } from './p2p/forwarder.js';
import { RaftStorage } from './raft/raft-storage.js';
import { RaftNode, DEFAULT_TIMING, type RaftTiming } from './raft/raft-node.js';
import { bootstrapState } from '../protocol/raft/raft.js';
import { ConfChangeType, NONE, type ConfChange } from '../protocol/raft/types.js';
import { encodeCommand, decodeCommand, type Command, type ApplyResult, type NodeRecord } from '../protocol/cluster/state.js';
import { authorize, authzView, type Principal, type ConfChangeKind } from '../protocol/cluster/authz.js';
import { growthBytes, quotaBytes, quotaRefusal } from '../protocol/cluster/quota.js';
import { LEADER_DUTY, SELF, forwardedPrincipal, localPrincipal, readWireCaller, toWire, type Caller, type WireCaller } from './cluster/caller.js';
import { Heartbeats, DEFAULT_HEARTBEAT_INTERVAL_MS } from './cluster/heartbeats.js';
import { Autopilot, DEFAULT_DOWN_AFTER_MS, DEFAULT_REPLACE_AFTER_MS } from './cluster/autopilot.js';
import { ApiServer, parseHostPort } from './api/server.js';
import { ApiTls } from './api/tls.js';
import { initClusterCa, loadClusterCa } from './api/cluster-ca.js';
import { TaskLogService } from './apps/task-logs.js';
import type { ApiLimits } from './api/limits.js';
import { registerAppRoutes } from './api/apps-routes.js';
import { registerNodeRoutes } from './api/nodes-routes.js';
import { Orchestrator } from './apps/orchestrator.js';
import { Agent } from './apps/agent.js';
import { createDrivers } from './apps/drivers/index.js';
import { measureResources } from './apps/resources.js';
import { OmniError } from './errors.js';
import { createLogger, type Logger, type LogLevel } from './logger.js';
import { newAdminToken, newJoinToken, newNetworkKey, newTokenId, networkKeyFromJoinToken, sha256Hex, tokenMatches } from './api/tokens.js';

export interface DaemonOptions {
  dataDir: string;
  /** libp2p listen multiaddrs, e.g. /ip4/0.0.0.0/tcp/7946 */
  listen: string[];
  /** HTTP API host:port (port 0 picks a free one). */
  api: string;
  name?: string;
  labels?: Record<string, string>;
  voterTarget?: number;
  ephemeralRoot?: boolean;
  timing?: RaftTiming;
  snapshotEveryEntries?: number;
  heartbeatIntervalMs?: number;
  downAfterMs?: number;
  replaceAfterMs?: number;
  logLevel?: LogLevel;
  /** --tls / --insecure-http: see node/api/tls.ts for the loopback rule. */
  tls?: boolean;
  insecureHttp?: boolean;
  /** Overrides of the HTTP API's connection and request limits (see node/api/limits.ts). */
  apiLimits?: Partial<ApiLimits>;
  /** omnid init --max-state-bytes: the replicated state quota (protocol/cluster/quota.ts). */
  maxStateBytes?: number;
}

/** Node-local facts kept in the data dir (never replicated). */
interface ClusterMeta {
  clusterId: string;
  networkKeyHex: string;
  name: string;
  apiAddr: string;
  listen: string[];
  /** The addresses actually bound last time (a requested port 0 becomes a real port). */
  boundListen?: string[];
  /** Hashes for the bootstrap proposals, kept until they are applied (crash during init). */
  bootstrap?: { adminTokenHash: string; adminTokenId: string; joinTokenHash: string; joinTokenId: string; voterTarget: number; ephemeralRoot: boolean; maxStateBytes?: number };
  left?: boolean;
  /** Set from before the join request until the cluster id is known (a join can be resumed). */
  joining?: boolean;
}

/** What `omnid init` hands the operator (also written to <data>/client.json, mode 0600). */
export interface ClientConfig {
  addr: string;
  token: string;
  joinToken?: string;
  joinAddr?: string;
  /** The cluster CA certificate (PEM) the CLI verifies https API addresses with. */
  ca?: string;
}

const META_KEY = 'cluster';
const CLIENT_FILE = 'client.json';
const FORWARD_RETRY_MS = 100;
const FORWARD_DEADLINE_MS = 10_000;
const READ_ATTEMPT_MS = 2000;
/** Join errors that prove the cluster did not add this node (its data dir can be removed). */
const DEFINITE_JOIN_REFUSALS = ['UNAUTHORIZED', 'FORBIDDEN', 'BAD_REQUEST', 'BAD_TOKEN', 'CONFLICT', 'INVALID_COMMAND', 'NAME_TAKEN'];
const PEER_MAINTENANCE_MS = 1000;
const REGISTER_RETRY_MS = 500;
const MAX_JOIN_ATTEMPT_MS = 30_000;
const JOIN_ATTEMPT_MS = 8000;
/** How often refused leader claims are checked with this node's voters (see checkLeaderClaims). */
const LEADER_CLAIM_CHECK_MS = 1000;
const LEADER_CLAIM_RPC_MS = 2000;
const MAX_CLAIMS_CHECKED = 4;
/** Leader addresses a NOT_LEADER answer to a joining node carries (and the joiner reads). */
const MAX_REDIRECT_ADDRS = 16;
/** ConfChangeType → the name authz uses. */
const CONF_KINDS: Record<ConfChangeType, ConfChangeKind> = { [ConfChangeType.AddVoter]: 'addVoter', [ConfChangeType.AddLearner]: 'addLearner', [ConfChangeType.RemoveNode]: 'remove' };

/** A leader duty off the leader: it is not forwarded (the new leader runs its own duties). */
function leadershipLost(): OmniError {
  return new OmniError('LEADERSHIP_LOST', 'this node is no longer the leader; the new leader runs its own duties');
}

export class Omnid {
  readonly host: OmniHost;
  readonly raft: RaftNode;
  readonly rpc: Rpc;
  readonly transport: RaftTransport;
  readonly storage: RaftStorage;
  readonly log: Logger;
  readonly opts: DaemonOptions;
  readonly name: string;
  readonly clusterId: string;
  readonly networkKeyHex: string;
  heartbeats!: Heartbeats;
  forwarder!: Forwarder;
  orchestrator: Orchestrator | undefined;
  agent: Agent | undefined;
  api!: ApiServer;
  apiTls!: ApiTls;
  taskLogs!: TaskLogService;
  private autopilot!: Autopilot;
  private timers: NodeJS.Timeout[] = [];
  private stopping = false;
  private registered = false;
  private readonly knownAddrs = new Map<string, string>();
  /** Resolves when the daemon has stopped (leave, removal, signal, or a fatal error). */
  readonly stopped: Promise<{ reason: string; exitCode: number }>;
  private resolveStopped!: (v: { reason: string; exitCode: number }) => void;

  private constructor(opts: DaemonOptions, host: OmniHost, storage: RaftStorage, raft: RaftNode, transport: RaftTransport, rpc: Rpc, meta: ClusterMeta, log: Logger) {
    this.opts = opts;
    this.host = host;
    this.storage = storage;
    this.raft = raft;
    this.transport = transport;
    this.rpc = rpc;
    this.name = meta.name;
    this.clusterId = meta.clusterId;
    this.networkKeyHex = meta.networkKeyHex;
    this.log = log;
    this.stopped = new Promise((r) => (this.resolveStopped = r));
  }

  get id(): string {
    return this.host.peerId.toString();
  }

  get apiUrl(): string {
    return this.api.url;
  }

  /** This node's dialable multiaddrs (with /p2p/<id>). */
  addrs(): string[] {
    return this.host.getMultiaddrs().map(String);
  }

  // ------------------------------------------------------------------ lifecycle entry points

  /** Creates a new one-voter cluster in an empty data dir and starts serving it. */
  static async init(opts: DaemonOptions): Promise<{ daemon: Omnid; client: ClientConfig; joinCommand: string }> {
    await requireEmptyDir(opts.dataDir, 'init');
    const networkKey = newNetworkKey();
    const adminToken = newAdminToken();
    const joinToken = newJoinToken(networkKey);
    const voterTarget = opts.voterTarget ?? 3;
    const meta: ClusterMeta = {
      clusterId: randomUUID(),
      networkKeyHex: Buffer.from(networkKey).toString('hex'),
      name: opts.name ?? defaultName(),
      apiAddr: opts.api,
      listen: opts.listen,
      bootstrap: {
        adminTokenHash: sha256Hex(adminToken),
        adminTokenId: newTokenId(),
        joinTokenHash: sha256Hex(joinToken),
        joinTokenId: newTokenId(),
        voterTarget,
        ephemeralRoot: opts.ephemeralRoot ?? false,
        ...(opts.maxStateBytes !== undefined ? { maxStateBytes: opts.maxStateBytes } : {}),
      },
    };
    const identity = await loadOrCreateIdentity(opts.dataDir);
    const ca = await initClusterCa(opts.dataDir, meta.clusterId);
    const storage = await RaftStorage.open(storageDir(opts.dataDir));
    const selfId = peerIdFromPrivateKey(identity).toString();
    const boot = bootstrapState([selfId]);
    // The tokens are saved before the hashes that make them valid, so a crash anywhere here
    // never leaves a cluster whose admin token nobody has; omnid start finishes the bootstrap.
    await writeClientFile(opts.dataDir, { addr: '', token: adminToken, joinToken, ca: ca.certPem });
    await storage.save({ hardState: boot.hardState, entries: boot.entries }, true);
    await storage.putMeta(META_KEY, meta);
    const daemon = await Omnid.run(opts, storage, meta);
    await daemon.waitBootstrapped();
    const joinAddr = daemon.dialableAddr();
    const client: ClientConfig = { addr: daemon.apiUrl, token: adminToken, joinToken, joinAddr, ca: ca.certPem };
    await writeClientFile(opts.dataDir, client);
    return { daemon, client, joinCommand: `omnid join ${joinAddr} --token ${joinToken}` };
  }

  /** Joins an existing cluster through any member, as a learner; the leader promotes as needed. */
  static async join(opts: DaemonOptions, peerAddr: string, token: string): Promise<Omnid> {
    let target;
    try {
      target = multiaddr(peerAddr);
    } catch {
      throw new OmniError('BAD_REQUEST', `not a multiaddr: ${peerAddr.slice(0, 200)} (expected e.g. /ip4/10.0.0.5/tcp/7946/p2p/12D3Koo…)`);
    }
    const networkKey = networkKeyFromJoinToken(token);
    await requireEmptyDir(opts.dataDir, 'join');
    const meta: ClusterMeta = {
      clusterId: '',
      networkKeyHex: Buffer.from(networkKey).toString('hex'),
      name: opts.name ?? defaultName(),
      apiAddr: opts.api,
      listen: opts.listen,
    };
    const storage = await RaftStorage.open(storageDir(opts.dataDir));
    // Recorded before asking: once the request may have reached the leader, this node may be
    // a member, and its identity and log must survive (omnid start resumes the join).
    await storage.putMeta(META_KEY, { ...meta, joining: true });
    let daemon: Omnid | undefined;
    try {
      daemon = await Omnid.run(opts, storage, meta, false);
      const reply = await daemon.requestJoin(target, token);
      // The leader that admitted us may lead before our log shows its promotion.
      if (typeof reply.leader === 'string' && reply.leader !== NONE) daemon.raft.vouch(reply.leader);
      await daemon.apiTls.adoptJoinedCa(reply.ca);
      await daemon.joined(reply.clusterId);
      return daemon;
    } catch (err) {
      if (daemon) await daemon.shutdown('join failed');
      else await storage.close();
      const refused = err instanceof OmniError && DEFINITE_JOIN_REFUSALS.includes(err.code);
      if (refused) {
        await rm(opts.dataDir, { recursive: true, force: true });
        throw err;
      }
      const e = err as Error;
      throw new OmniError((err as OmniError).code ?? 'JOIN_UNKNOWN', `${e.message}; the join may or may not have happened: resume with omnid start --data ${opts.dataDir}, or remove that dir to start over`);
    }
  }

  /** The join was accepted: remember the cluster and start the background duties. */
  private async joined(clusterId: string): Promise<void> {
    (this as { clusterId: string }).clusterId = clusterId;
    const meta = (await this.storage.getMeta<ClusterMeta>(META_KEY))!;
    await this.storage.putMeta(META_KEY, { ...meta, clusterId, joining: false });
    this.startBackground();
  }

  /** Restarts an existing member from its data dir. */
  static async start(opts: DaemonOptions): Promise<Omnid> {
    const storage = await RaftStorage.open(storageDir(opts.dataDir));
    const meta = await storage.getMeta<ClusterMeta>(META_KEY);
    if (meta?.joining && !meta.clusterId) {
      const daemon = await Omnid.run({ ...opts, listen: restartListen(opts, meta) }, storage, meta, false);
      void daemon.resumeJoin();
      return daemon;
    }
    if (!meta || !meta.clusterId) {
      await storage.close();
      throw new OmniError('NOT_INITIALIZED', `${opts.dataDir} holds no cluster member; run omnid init or omnid join first`);
    }
    if (meta.left) {
      await storage.close();
      throw new OmniError('LEFT', `this node left the cluster; join again with a fresh data dir`);
    }
    const daemon = await Omnid.run({ ...opts, listen: restartListen(opts, meta) }, storage, meta);
    if (meta.bootstrap) {
      // An init that crashed before its first proposals were applied is completed now.
      void daemon.waitBootstrapped().catch((err: Error) => daemon.log.error(`bootstrap: ${err.message}`));
    }
    return daemon;
  }

  private static async run(opts: DaemonOptions, storage: RaftStorage, meta: ClusterMeta, background = true): Promise<Omnid> {
    const log = createLogger(meta.name, opts.logLevel ?? 'info');
    const identity = await loadOrCreateIdentity(opts.dataDir);
    const networkKey = Buffer.from(meta.networkKeyHex, 'hex');
    let host: OmniHost;
    try {
      host = await createHost({ privateKey: identity, networkKey, listen: opts.listen });
    } catch (err) {
      // The port used last time may be taken now: fall back to what the operator asked for.
      if (opts.listen === meta.boundListen && meta.listen.join() !== opts.listen.join()) {
        log.warn(`cannot listen on ${opts.listen.join(', ')} again (${(err as Error).message}); using ${meta.listen.join(', ')}`);
        host = await createHost({ privateKey: identity, networkKey, listen: meta.listen });
      } else throw err;
    }
    // Remember the real ports, so a restart comes back where the other members look for it
    // (until it can re-register, they only know its old address).
    const bound = host.getMultiaddrs().map((a) => a.toString().replace(/\/p2p\/[^/]+$/, ''));
    await storage.putMeta(META_KEY, { ...((await storage.getMeta<ClusterMeta>(META_KEY)) ?? meta), boundListen: [...new Set(bound)] });
    let daemon!: Omnid;
    const transport = new RaftTransport({ host, onMessage: (m) => daemon.raft.step(m), isTrustedSender: (peer) => daemon.isTrustedSender(peer), log });
    const raft = await RaftNode.open({
      id: host.peerId.toString(),
      storage,
      send: (msgs) => transport.send(msgs),
      log,
      timing: opts.timing ?? DEFAULT_TIMING,
      snapshotEveryEntries: opts.snapshotEveryEntries,
      onApplied: () => daemon.afterApply(),
      onFatal: (err) => void daemon.shutdown(`fatal: ${err.message}`, 1),
    });
    const rpc = new Rpc(host, log);
    daemon = new Omnid(opts, host, storage, raft, transport, rpc, meta, log);
    daemon.registerRpc();
    daemon.forwarder = new Forwarder(host, (from, data, caller) => daemon.proposeForwarded(from, data, caller), log);
    await transport.start();
    await rpc.start();
    await daemon.forwarder.start();
    raft.start();
    daemon.taskLogs = new TaskLogService(host, { authorize: (peer) => daemon.requireMember(peer), localLogs: (id, o) => daemon.agent?.driverFor(id)?.logs(id, o), log });
    await daemon.taskLogs.start();
    daemon.api = new ApiServer(daemon, log, opts.apiLimits);
    registerAppRoutes(daemon.api, daemon);
    registerNodeRoutes(daemon.api, daemon);
    daemon.apiTls = await ApiTls.prepare({ dataDir: opts.dataDir, apiHost: parseHostPort(opts.api).host, addrs: () => daemon.addrs(), nodeName: meta.name, flags: opts, log });
    await daemon.api.listen(opts.api, daemon.apiTls);
    await daemon.api.listenControl(controlSocketPath(opts.dataDir));
    log.info(`node ${meta.name} (${daemon.id}) listening on ${daemon.addrs().join(', ')}; API ${daemon.apiUrl}`);
    if (background) daemon.startBackground();
    return daemon;
  }

  /** A join whose reply never arrived: wait to learn the cluster from the leader's log. */
  private async resumeJoin(): Promise<void> {
    this.log.info('resuming an unfinished join: waiting for the leader to replicate the cluster state');
    while (!this.stopping) {
      const clusterId = this.raft.state.config().clusterId;
      if (clusterId !== '') return this.joined(clusterId);
      await sleep(200);
    }
  }

  private startBackground(): void {
    this.heartbeats = new Heartbeats(this.host, this.clusterId, this.opts.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS, () => ({ applied: this.raft.appliedIndex, term: this.raft.raft.term }), this.log);
    this.heartbeats.start();
    this.autopilot = new Autopilot(this, {
      downAfterMs: this.opts.downAfterMs ?? DEFAULT_DOWN_AFTER_MS,
      replaceAfterMs: this.opts.replaceAfterMs ?? DEFAULT_REPLACE_AFTER_MS,
    });
    this.autopilot.start();
    this.orchestrator = new Orchestrator(this);
    this.orchestrator.start();
    this.agent = new Agent(this, createDrivers(this.opts.dataDir));
    this.agent.start();
    void this.apiTls.ensureCa(() => this.rpc.call([this.raft.leader, ...this.raft.raft.voters].find((p) => p !== NONE && p !== this.id) ?? NONE, 'cluster-ca', {}));
    this.every(PEER_MAINTENANCE_MS, () => this.maintainPeers());
    this.every(LEADER_CLAIM_CHECK_MS, () => this.checkLeaderClaims());
    this.every(REGISTER_RETRY_MS, () => this.registerSelf());
    this.maintainPeers();
  }

  private every(ms: number, fn: () => void | Promise<void>): void {
    let busy = false;
    this.timers.push(
      setInterval(() => {
        if (busy || this.stopping) return;
        busy = true;
        Promise.resolve(fn())
          .catch((err: Error) => this.log.debug(`background task: ${err.message}`))
          .finally(() => (busy = false));
      }, ms),
    );
  }

  /** Stops every component; resolves `stopped` with the reason. Safe to call twice. */
  async shutdown(reason: string, exitCode = 0): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.log.info(`shutting down: ${reason}`);
    for (const t of this.timers) clearInterval(t);
    this.autopilot?.stop();
    this.orchestrator?.stop();
    this.agent?.stop();
    this.heartbeats?.stop();
    await this.api?.close();
    await this.raft.stop();
    await this.forwarder?.stop();
    await this.taskLogs?.stop();
    await this.transport.stop();
    await this.rpc.stop();
    await Promise.resolve(this.host.stop()).catch(() => undefined);
    await this.storage.close();
    this.resolveStopped({ reason, exitCode });
  }

  // ------------------------------------------------------------------ writes and reads

  /**
   * Proposes a command through the leader, from any node, on behalf of `caller`
   * (node/cluster/caller.ts); the leader authorizes it before it enters the log. Retries only when it
   * is safe. A leader duty is never forwarded: it fails LEADERSHIP_LOST off the leader.
   */
  async propose(cmd: Command, caller: Caller): Promise<ApplyResult> {
    const data = encodeCommand(cmd);
    const principal = localPrincipal(caller, this.id);
    const local = () => this.proposeOnLeader(principal, cmd, data);
    if (caller.kind === 'leader-duty') return this.onLeader(local, leadershipLost);
    const wire = toWire(caller);
    return this.viaLeader(local, (leader) => this.forwarder.propose(leader, data, wire));
  }

  /** Proposes and turns a refused command into an OmniError. */
  async proposeOk(cmd: Command, caller: Caller): Promise<unknown> {
    const r = await this.propose(cmd, caller);
    if (!r.ok) throw new OmniError(r.error.code, r.error.message);
    return r.value;
  }

  /** A membership change on behalf of `caller`, decided (authorized) by the leader. */
  async changeMembership(cc: ConfChange, caller: Caller): Promise<void> {
    const principal = localPrincipal(caller, this.id);
    const local = () => this.confOnLeader(principal, cc);
    if (caller.kind === 'leader-duty') {
      await this.onLeader(local, leadershipLost);
      return;
    }
    const params = { type: cc.type, node: cc.node, caller: toWire(caller) };
    await this.viaLeader(local, (leader) => this.rpc.call<ApplyResult>(leader, 'conf', params));
  }

  /**
   * The leader's gate for every command: who asks and whether they may (authz), then whether
   * the state has room for it (the replicated quota, counting what is proposed and not applied
   * yet). A command refused here never enters the Raft log.
   */
  private proposeOnLeader(principal: Principal, cmd: Command, data: Uint8Array): Promise<ApplyResult> {
    if (!this.raft.isLeader) return Promise.reject(new OmniError('NOT_LEADER', 'not the leader', { leader: this.raft.leader }));
    const state = this.raft.state;
    const allowed = authorize(principal, { kind: 'command', command: cmd }, authzView(state));
    if (!allowed.ok) return Promise.reject(new OmniError('FORBIDDEN', allowed.error.message));
    const growth = growthBytes(cmd, state);
    const full = quotaRefusal({ principal: principal.kind, growthBytes: growth, stateBytes: state.sizeBytes, pendingBytes: this.pendingGrowthBytes, quotaBytes: quotaBytes(state.config()) });
    if (full) return Promise.reject(new OmniError(full.code, full.message));
    if (growth <= 0) return this.raft.propose(data);
    this.pendingGrowthBytes += growth;
    return this.raft.propose(data).finally(() => (this.pendingGrowthBytes -= growth));
  }

  /** The leader's gate for membership changes: only the leader decides promotions. */
  private confOnLeader(principal: Principal, cc: ConfChange): Promise<ApplyResult> {
    if (!this.raft.isLeader) return Promise.reject(new OmniError('NOT_LEADER', 'not the leader', { leader: this.raft.leader }));
    const allowed = authorize(principal, { kind: 'conf', change: { type: CONF_KINDS[cc.type], node: cc.node } }, authzView(this.raft.state));
    if (!allowed.ok) return Promise.reject(new OmniError('FORBIDDEN', allowed.error.message));
    return this.raft.proposeConfChange(cc);
  }

  /** Linearizable read barrier (ReadIndex), from any node. */
  async readBarrier(): Promise<void> {
    const deadline = Date.now() + FORWARD_DEADLINE_MS;
    for (;;) {
      try {
        // A ReadIndex request can be lost (leader change, reconnect): re-issue it; reads are idempotent.
        return await this.raft.readBarrier(Math.max(1, Math.min(READ_ATTEMPT_MS, deadline - Date.now())));
      } catch (err) {
        const retryable = err instanceof OmniError && ['NO_LEADER', 'TIMEOUT'].includes(err.code);
        if (!retryable || Date.now() >= deadline || this.stopping) throw err;
        await sleep(FORWARD_RETRY_MS);
      }
    }
  }

  /**
   * Runs `local` while this node leads, retrying the refusals that prove nothing was proposed;
   * once it does not lead, fails with offLeader() (no forwarding).
   */
  private async onLeader(local: () => Promise<ApplyResult>, offLeader: () => OmniError): Promise<ApplyResult> {
    const deadline = Date.now() + FORWARD_DEADLINE_MS;
    for (;;) {
      if (!this.raft.isLeader) throw offLeader();
      try {
        return await local();
      } catch (err) {
        if (err instanceof OmniError && err.code === 'NOT_LEADER') throw offLeader();
        const retryable = err instanceof OmniError && ['TRANSFERRING', 'PROPOSAL_DROPPED', 'CONF_CHANGE_PENDING'].includes(err.code);
        if (!retryable || Date.now() > deadline || this.stopping) throw err;
        await sleep(FORWARD_RETRY_MS);
      }
    }
  }

  private async viaLeader(local: () => Promise<ApplyResult>, remote: (leader: string) => Promise<ApplyResult>): Promise<ApplyResult> {
    const deadline = Date.now() + FORWARD_DEADLINE_MS;
    for (;;) {
      try {
        if (this.raft.isLeader) return await local();
        const leader = this.raft.leader;
        if (leader === NONE) throw new OmniError('NO_LEADER', 'no leader is known; the cluster may have lost quorum');
        return await remote(leader);
      } catch (err) {
        // Only refusals that guarantee nothing was proposed are retried.
        const retryable = err instanceof OmniError && ['NO_LEADER', 'NOT_LEADER', 'TRANSFERRING', 'PROPOSAL_DROPPED', 'CONF_CHANGE_PENDING'].includes(err.code);
        if (!retryable || Date.now() > deadline || this.stopping) throw err;
        await sleep(FORWARD_RETRY_MS);
      }
    }
  }

  // ------------------------------------------------------------------ RPC handlers

  private registerRpc(): void {

    // A membership change forwarded to the leader: a member may only remove itself (leave),
    // an admin token may remove a member; promotions are the autopilot's alone.
    this.rpc.on('conf', async (params, from) => {
      this.requireMember(from);
      const p = params as { type?: unknown; node?: unknown; caller?: unknown };
      if (typeof p?.node !== 'string' || ![0, 1, 2].includes(p.type as number)) throw new OmniError('BAD_REQUEST', 'conf needs {type, node, caller}');
      const caller = readWireCaller(p.caller);
      if (!this.raft.isLeader) throw new OmniError('NOT_LEADER', 'not the leader', { leader: this.raft.leader });
      return this.confOnLeader(forwardedPrincipal(caller, from, this.raft.state.tokens()), { type: p.type as ConfChangeType, node: p.node });
    });
    this.rpc.on('join', async (params, from) => this.handleJoin(params, from));
    // Which voters this node's applied configuration has: a member that refuses a leader it
    // does not know as a voter asks its own voters (checkLeaderClaims).
    this.rpc.on('raft-voters', async (_params, from) => {
      this.requireMember(from);
      return { voters: [...this.raft.raft.voters] };
    });
    this.rpc.on('cluster-ca', async (_params, from) => {
      this.requireMember(from);
      return loadClusterCa(this.opts.dataDir);
    });
    // The leader tells a node it removed (Raft cannot: the node is no longer replicated to).
    this.rpc.on('removed', async (_params, from) => {
      if (!this.raft.raft.voters.has(from)) throw new OmniError('FORBIDDEN', 'only a voter may say this node was removed');
      if (!this.leaving) {
        this.leaving = true;
        const ephemeral = this.raft.state.config().ephemeralRoot && this.raft.state.config().rootNodeId === this.id;
        void this.finishLeaving(ephemeral ? 'ephemeral root retired and left the cluster' : 'this node was removed from the cluster');
      }
      return { ok: true };
    });
  }

  /**
   * Leader side of a forwarded write: members only, only while this node leads, and only what
   * the caller may propose (the member itself, or an admin token verified here).
   */
  private proposeForwarded(from: string, data: Uint8Array, caller: WireCaller): Promise<ApplyResult> {
    this.requireMember(from);
    if (!this.raft.isLeader) throw new OmniError('NOT_LEADER', 'not the leader', { leader: this.raft.leader });
    const decoded = decodeCommand(data);
    // Bytes that are no command are refused here: they never reach the log.
    if (!decoded.ok) return Promise.resolve(decoded);
    return this.proposeOnLeader(forwardedPrincipal(caller, from, this.raft.state.tokens()), decoded.command, data);
  }

  /** Current voters and non-voters only; a node that left (or was removed) is refused. */
  private requireMember(peer: string): void {
    const raft = this.raft.raft;
    const inConf = raft.voters.has(peer) || raft.learners.has(peer);
    if (!inConf || this.raft.state.node(peer)?.status === 'left') throw new OmniError('FORBIDDEN', 'only current cluster members may call this');
  }

  /** Raft messages are taken from members (and, before this node has a configuration, from its leader-to-be). */
  isTrustedSender(peer: string): boolean {
    const raft = this.raft.raft;
    if (raft.voters.size === 0 && raft.learners.size === 0) return true;
    if (raft.voters.has(peer) || raft.learners.has(peer)) return true;
    const n = this.raft.state.node(peer);
    return n !== undefined && n.status !== 'left';
  }

  /**
   * Leader side of a join. Only the leader admits a node: another member answers NOT_LEADER
   * with the leader's id and addresses, and the joining node asks the leader itself (so the
   * leader sees its authenticated identity, not another member's word for it). The reply
   * carries the cluster CA (trust model: README, Security model).
   */
  private async handleJoin(params: unknown, from: string): Promise<{ clusterId: string; leader: string; ca: unknown }> {
    const p = params as { token?: unknown; node?: Partial<NodeRecord> };
    if (typeof p?.token !== 'string' || typeof p.node !== 'object' || p.node === null) throw new OmniError('BAD_REQUEST', 'join needs {token, node}');
    if (p.node.id !== from) throw new OmniError('FORBIDDEN', 'a node may only join as itself');
    if (!this.raft.isLeader) throw new OmniError('NOT_LEADER', 'joins are decided by the leader', this.leaderContact());
    const joinHashes = this.raft.state.tokens().filter((t) => t.role === 'join').map((t) => t.hash);
    if (!tokenMatches(p.token, joinHashes)) throw new OmniError('UNAUTHORIZED', 'invalid join token');
    const existing = this.raft.state.node(from);
    if (existing?.status === 'left') throw new OmniError('CONFLICT', 'this node id left the cluster; join with a fresh data dir');
    const n = p.node;
    const joiner: Principal = { kind: 'joiner', nodeId: from };
    const register = { type: 'node.register', node: { id: from, name: String(n.name), addrs: n.addrs ?? [], apiUrl: String(n.apiUrl), resources: n.resources!, labels: n.labels ?? {} } } as Command;
    const data = encodeCommand(register);
    const redirect = () => new OmniError('NOT_LEADER', 'leadership moved during the join', this.leaderContact());
    const r = await this.onLeader(() => this.proposeOnLeader(joiner, register, data), redirect);
    if (!r.ok) throw new OmniError(r.error.code, r.error.message);
    if (!this.raft.raft.voters.has(from) && !this.raft.raft.learners.has(from)) {
      await this.onLeader(() => this.confOnLeader(joiner, { type: ConfChangeType.AddLearner, node: from }), redirect);
    }
    this.log.info(`node ${String(n.name)} (${from}) joined as a learner`);
    // Every member holds the CA, so it can sign its own API certificate (trust model: README).
    return { clusterId: this.clusterId, leader: this.raft.leader, ca: await loadClusterCa(this.opts.dataDir) };
  }

  /** Who leads and where, for a NOT_LEADER answer to a joining node. */
  private leaderContact(): Record<string, unknown> {
    const leader = this.raft.leader;
    return { leader, leaderAddrs: leader === NONE ? [] : (this.raft.state.node(leader)?.addrs ?? []).slice(0, MAX_REDIRECT_ADDRS) };
  }

  private async requestJoin(first: ReturnType<typeof multiaddr>, token: string): Promise<{ clusterId: string; leader?: unknown; ca: unknown }> {
    const node = await this.selfRecord();
    const deadline = Date.now() + MAX_JOIN_ATTEMPT_MS;
    let target: string | ReturnType<typeof multiaddr> = first;
    for (;;) {
      try {
        return await this.rpc.call<{ clusterId: string; leader?: unknown; ca: unknown }>(target, 'join', { token, node }, JOIN_ATTEMPT_MS);
      } catch (err) {
        const e = err as OmniError;
        if (e.code === 'UNAVAILABLE' && target === first && /EncryptionFailed|ECONNRESET|handshake/i.test(e.message)) {
          throw new OmniError('UNAUTHORIZED', `cannot connect to ${first.toString()}: the private-network handshake failed (wrong cluster key in the join token?)`);
        }
        // A member that does not lead names the leader: ask it (the join is decided there).
        const leader = e.code === 'NOT_LEADER' ? this.learnLeader(e.detail) : undefined;
        // A wrong network key shows as a reset, or (on a busy host) as a handshake that never
        // completes: retry the latter, the join handler is idempotent.
        if (!['NO_LEADER', 'NOT_LEADER', 'UNAVAILABLE', 'TIMEOUT', 'TRANSFERRING', 'CONF_CHANGE_PENDING', 'PROPOSAL_DROPPED'].includes(e.code)) throw err;
        if (Date.now() > deadline) {
          throw new OmniError('UNAVAILABLE', `cannot join through ${first.toString()}: ${e.message} (is that node up, and is the join token from its cluster?)`);
        }
        if (leader !== undefined && leader !== target) {
          this.log.info(`join: ${String(target).slice(0, 120)} does not lead; asking the leader ${leader}`);
          target = leader;
          continue;
        }
        // The leader named earlier did not answer: start again from the address we were given.
        target = first;
        await sleep(500);
      }
    }
  }

  /** The leader a NOT_LEADER answer names (untrusted input), added to the peer store; its id. */
  private learnLeader(detail: Record<string, unknown>): string | undefined {
    const leader = detail.leader;
    if (typeof leader !== 'string' || leader === NONE || leader === this.id) return undefined;
    let pid;
    try {
      pid = peerIdFromString(leader);
    } catch {
      return undefined;
    }
    const addrs = Array.isArray(detail.leaderAddrs) ? detail.leaderAddrs.slice(0, MAX_REDIRECT_ADDRS) : [];
    const multiaddrs = addrs.flatMap((a) => {
      try {
        return typeof a === 'string' && a.length <= 256 ? [multiaddr(a)] : [];
      } catch {
        return [];
      }
    });
    if (multiaddrs.length === 0) return undefined;
    void Promise.resolve(this.host.peerStore.merge(pid, { multiaddrs })).catch(() => undefined);
    return leader;
  }

  private async selfRecord(): Promise<Omit<NodeRecord, 'role' | 'status' | 'statusReason' | 'root' | 'joinedIndex' | 'updatedIndex'>> {
    return {
      id: this.id,
      name: this.name,
      addrs: this.addrs().slice(0, 16),
      apiUrl: this.apiUrl,
      resources: await measureResources(this.opts.dataDir),
      labels: this.opts.labels ?? {},
    };
  }

  // ------------------------------------------------------------------ background duties

  /** Completes a crashed or fresh init: cluster.init, tokens and the root's record. */
  async waitBootstrapped(): Promise<void> {
    while (!this.stopping) {
      const log = this.raft.raft.log;
      // Judge only a state that has applied everything committed (after a restart, replay).
      const meta = (await this.storage.getMeta<ClusterMeta>(META_KEY))!;
      const b = meta.bootstrap!;
      const state = this.raft.state;
      const done = state.config().clusterId !== '' && state.tokenById(b.adminTokenId) && state.tokenById(b.joinTokenId) && state.node(this.id);
      if (done) return;
      // Judge only as a leader that has applied an entry of its own term, i.e. everything
      // committed before it (after a restart the log is replayed first).
      const current = this.raft.isLeader && log.term(log.applied) === this.raft.raft.term;
      if (current) {
        // Each step is checked on its own, so a crash between any two is completed on restart.
        if (state.config().clusterId === '') {
          const quota = b.maxStateBytes !== undefined ? { maxStateBytes: b.maxStateBytes } : {};
          await this.proposeOk({ type: 'cluster.init', clusterId: meta.clusterId, voterTarget: b.voterTarget, rootNodeId: this.id, ephemeralRoot: b.ephemeralRoot, ...quota }, LEADER_DUTY);
        }
        if (!state.tokenById(b.adminTokenId)) await this.proposeOk({ type: 'token.add', token: { id: b.adminTokenId, hash: b.adminTokenHash, role: 'admin', name: 'admin (omnid init)' } }, LEADER_DUTY);
        if (!state.tokenById(b.joinTokenId)) await this.proposeOk({ type: 'token.add', token: { id: b.joinTokenId, hash: b.joinTokenHash, role: 'join', name: 'join (omnid init)' } }, LEADER_DUTY);
        if (!this.raft.state.node(this.id)) await this.proposeOk({ type: 'node.register', node: await this.selfRecord() }, SELF);
        this.registered = true;
        continue;
      }
      await sleep(50);
    }
  }

  /** Every (re)start re-registers this node: its addresses, API URL or resources may have changed. */
  private async registerSelf(): Promise<void> {
    if (this.registered || this.raft.state.config().clusterId === '') return;
    const self = this.raft.state.node(this.id);
    if (!self) return; // the join handler registers a new node
    if (self.status === 'left') return;
    await this.proposeOk({ type: 'node.register', node: await this.selfRecord() }, SELF);
    this.registered = true;
  }

  /**
   * Raft refuses leader messages from a node that is not a voter in this node's configuration
   * (a forged heartbeat from a learner, or a real leader promoted while this node was away).
   * Ask this node's voters: when a majority of them count the claimant as a voter, it is one.
   */
  private async checkLeaderClaims(): Promise<void> {
    const raft = this.raft.raft;
    const claims = [...raft.leaderClaims.keys()].slice(0, MAX_CLAIMS_CHECKED);
    if (claims.length === 0) return;
    const others = [...raft.voters].filter((v) => v !== this.id);
    const answers = await Promise.all(
      others.map((v) =>
        this.rpc
          .call<{ voters?: unknown }>(v, 'raft-voters', {}, LEADER_CLAIM_RPC_MS)
          .then((r) => (Array.isArray(r?.voters) ? new Set(r.voters.filter((x): x is string => typeof x === 'string')) : undefined))
          .catch(() => undefined),
      ),
    );
    const majority = Math.floor(raft.voters.size / 2) + 1;
    for (const claimant of claims) {
      const yes = answers.filter((a) => a?.has(claimant)).length;
      if (yes >= majority) {
        this.log.info(`raft: ${yes} of ${raft.voters.size} voters say ${this.raft.state.node(claimant)?.name ?? claimant} is a voter now; following it`);
        this.raft.vouch(claimant);
      } else {
        raft.leaderClaims.delete(claimant);
        this.log.warn(`raft: refused leader messages from ${this.raft.state.node(claimant)?.name ?? claimant}, which is not a voter (${yes} of ${raft.voters.size} voters say it is)`);
      }
    }
  }

  /** Keeps the peer store and connections in line with the member list. */
  private maintainPeers(): void {
    for (const n of this.raft.state.nodes()) {
      if (n.id === this.id || n.status === 'left') continue;
      const addrs = n.addrs.join(' ');
      let pid;
      try {
        pid = peerIdFromString(n.id);
      } catch {
        continue;
      }
      if (this.knownAddrs.get(n.id) !== addrs) {
        this.knownAddrs.set(n.id, addrs);
        const multiaddrs = n.addrs.flatMap((a) => {
          try {
            return [multiaddr(a)];
          } catch {
            return [];
          }
        });
        void Promise.resolve(this.host.peerStore.merge(pid, { multiaddrs })).catch(() => undefined);
      }
      if (this.host.getConnections(pid).length === 0) void this.host.dial(pid, { signal: AbortSignal.timeout(3000) }).catch(() => undefined);
    }
  }

  /** Runs after every applied Ready: notices our own departure. */
  private afterApply(): void {
    if (this.stopping) return;
    this.agent?.kick();
    this.orchestrator?.kick();
    const self = this.raft.state.node(this.id);
    if (self?.status === 'left' && !this.raft.isLeader && !this.leaving) {
      this.leaving = true;
      const ephemeral = this.raft.state.config().ephemeralRoot && this.raft.state.config().rootNodeId === this.id;
      void this.finishLeaving(ephemeral ? 'ephemeral root retired and left the cluster' : 'this node was removed from the cluster');
    }
  }

  private leaving = false;
  /** Bytes that proposals admitted by the quota may add once applied (see proposeOnLeader). */
  private pendingGrowthBytes = 0;

  /** Leaves the cluster cleanly: hands off leadership, marks itself left, leaves the Raft configuration. */
  async leave(): Promise<void> {
    if (this.raft.raft.voters.size === 1 && this.raft.raft.voters.has(this.id)) {
      throw new OmniError('CONFLICT', 'cannot leave: this is the last voter (the cluster would end)');
    }
    this.leaving = true;
    await this.handOffLeadership();
    await this.proposeOk({ type: 'node.remove', id: this.id }, SELF);
    await this.handOffLeadership();
    await this.changeMembership({ type: ConfChangeType.RemoveNode, node: this.id }, SELF).catch((err: Error) => {
      this.log.warn(`leave: membership change failed (${err.message}); the leader's autopilot will remove this node`);
    });
    void this.finishLeaving('left the cluster (omnid leave)');
  }

  private async handOffLeadership(): Promise<void> {
    for (let i = 0; i < 50 && this.raft.isLeader; i++) {
      const to = [...this.raft.raft.voters].find((v) => v !== this.id && this.raft.state.node(v)?.status === 'up');
      if (!to) throw new OmniError('UNAVAILABLE', 'no healthy voter to hand leadership to');
      this.raft.transferLeader(to);
      await sleep(100);
    }
  }

  private async finishLeaving(reason: string): Promise<void> {
    const meta = await this.storage.getMeta<ClusterMeta>(META_KEY);
    if (meta) await this.storage.putMeta(META_KEY, { ...meta, left: true });
    // Its tasks are rescheduled on the remaining nodes; none may keep running here.
    await this.agent?.stopAll().catch((err: Error) => this.log.warn(`leave: stopping tasks: ${err.message}`));
    // Give the last replies a moment to leave before the sockets close.
    await sleep(300);
    await this.shutdown(reason);
  }

  /** The address other hosts should use in `omnid join` (loopback-only listeners give loopback). */
  dialableAddr(): string {
    const all = this.addrs();
    return all.find((a) => !a.includes('/ip4/127.') && !a.includes('/ip6/::1/')) ?? all[0];
  }
}

/** Without --listen, a restart listens where the node listened before. */
function restartListen(opts: DaemonOptions, meta: ClusterMeta): string[] {
  if (opts.listen.length > 0) return opts.listen;
  return meta.boundListen && meta.boundListen.length > 0 ? meta.boundListen : meta.listen;
}

function storageDir(dataDir: string): string {
  return `${dataDir}/raft`;
}

async function requireEmptyDir(dir: string, verb: string): Promise<void> {
  try {
    const entries = await readdir(dir);
    if (entries.length > 0) {
      throw new OmniError('DATA_DIR_NOT_EMPTY', `cannot ${verb}: ${dir} is not empty (restart an existing node with: omnid start --data ${dir})`);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
}

async function writeClientFile(dataDir: string, client: ClientConfig): Promise<void> {
  await writeFileAtomic(`${dataDir}/${CLIENT_FILE}`, JSON.stringify(client, null, 2) + '\n', 0o600);
}

/** The trusted node-local API socket (see ApiServer.listenControl). */
export function controlSocketPath(dataDir: string): string {
  return `${dataDir}/api.sock`;
}

export function clientFilePath(dataDir: string): string {
  return `${dataDir}/${CLIENT_FILE}`;
}

function defaultName(): string {
  return hostname().replace(/[^a-zA-Z0-9._-]/g, '-').slice(0, 63) || 'node';
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
