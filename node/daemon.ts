// omnid: one process per host. Wires the libp2p host, the Raft transport and RPC, durable
// storage, the Raft driver with the cluster state machine, heartbeats, the autopilot and the
// HTTP API. Lifecycle entry points: Omnid.init, Omnid.join, Omnid.start.
import { codeCacheState } from './code-cache-state.js';
import { processAllocator } from './allocator.js';
import { secretKey } from './apps/secret-seal.js';
import { parseSamples, sampleTasks, TASK_STATS_TIMEOUT_MS, type TaskStatsSample } from './apps/task-stats.js';
import { buildCacheNodes } from '../protocol/forge/cache-placement.js';
import type { BuildRetention } from '../protocol/forge/retention.js';
import { mkdir, readdir, rm, chmod } from 'node:fs/promises';
import { writeFileAtomic } from './files.js';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { multiaddr } from '@multiformats/multiaddr';
import { peerIdFromString, peerIdFromPrivateKey } from '@libp2p/peer-id';
import { xsalsa20Backend } from './p2p/xsalsa20.js';
import { DEFAULT_DISK_CHECK_MS, diskMoved } from '../protocol/cluster/disk-report.js';
import { createHost, loadOrCreateIdentity, type OmniHost } from './p2p/host.js';
import { RaftTransport } from './raft/raft-transport.js';
import { Rpc } from './p2p/rpc.js';
import { Forwarder } from './p2p/forwarder.js';
import { RaftStorage } from './raft/raft-storage.js';
import { RaftNode, DEFAULT_TIMING, guardSink, stagedSnapshotData, type RaftTiming } from './raft/raft-node.js';
import { SnapshotStream } from './raft/snapshot-stream.js';
import { decodeRaftMessage, encodeRaftMessage } from '../protocol/codec.js';
import { MessageType } from '../protocol/raft/types.js';
import { bootstrapState } from '../protocol/raft/raft.js';
import { NONE, type ConfChange } from '../protocol/raft/types.js';
import type { Command, ApplyResult } from '../protocol/cluster/state.js';
import { LEADER_DUTY, SELF, type Caller, type WireCaller } from './cluster/caller.js';
import { ClusterWrites } from './cluster/writes.js';
import { DEFINITE_JOIN_REFUSALS, Membership, type SelfRecord } from './cluster/membership.js';
import { isTrustedSender, registerClusterRpc, requireMember } from './cluster/rpc-handlers.js';
import type { RemovedMemberNotice } from './cluster/ports.js';
import { Heartbeats, DEFAULT_HEARTBEAT_INTERVAL_MS } from './cluster/heartbeats.js';
import { Autopilot, DEFAULT_DOWN_AFTER_MS, DEFAULT_REPLACE_AFTER_MS } from './cluster/autopilot.js';
import { ApiServer, parseHostPort, type ApiServerDeps } from './api/server.js';
import { ApiTls } from './api/tls.js';
import { initClusterCa, loadClusterCa } from './api/cluster-ca.js';
import { TaskLogService } from './apps/task-logs.js';
import { TaskWorkspaces } from './sync/task-workspace.js';
import { NodeBuildRegistry } from './forge/node-registry.js';
import { APP_RE } from './sync/engine.js';
import { Registry, DEFAULT_REGISTRY_ADDR } from './registry/registry.js';
import type { GcRequest } from './registry/gc.js';
import { caCertPath } from './api/cluster-ca.js';
import { readFile } from 'node:fs/promises';
import type { ApiLimits } from './api/limits.js';
import { registerAppRoutes, type AppsRoutesDeps } from './api/apps-routes.js';
import { registerNodeRoutes, type MemberRemovalDeps } from './api/nodes-routes.js';
import { registerImageRoutes } from './api/images-routes.js';
import { registerSyncRoutes } from './api/sync-routes.js';
import { registerStackRoutes, type StackController } from './api/stacks-routes.js';
import { Orchestrator } from './apps/orchestrator.js';
import { Agent } from './apps/agent.js';
import { writeLeaseFile } from './apps/lease-file.js';
import { EXCLUSIVE_LEASE_MS } from '../protocol/apps/spec.js';
import { jobPhase } from '../protocol/apps/model.js';
import { isBuildAppName } from '../protocol/forge/build-request.js';
import { createDrivers, DockerDriver, type ForgeBuildParts } from './apps/drivers/index.js';
import { NodeMetrics } from './metrics/node-metrics.js';
import { registerMetricsRoute } from './metrics/metrics-route.js';
import { quotaBytes } from '../protocol/cluster/quota.js';
import { SCHEMA_NODE_DRIVERS, SCHEMA_RECORDS, clusterSchema } from '../protocol/cluster/schema.js';
import type { DriverSet, TaskDriver } from './apps/drivers/types.js';
import { nodeBuildParts } from './forge/node-build-parts.js';
import { Mesh } from './net/mesh.js';
import { DEFAULT_DOCKER_VIP_RANGE, DEFAULT_VIP_RANGE, parseVipRange } from '../protocol/net/vip.js';
import { measureDisk, measureResources } from './apps/resources.js';
import { OmniError } from './errors.js';
import { createLogger, type Logger, type LogLevel } from './logger.js';
import { newAdminToken, newJoinToken, newNetworkKey, newTokenId, networkKeyFromChosenJoinToken, networkKeyFromJoinToken, sha256Hex } from './api/tokens.js';

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
  /** Entries a compaction keeps in the log (default 5,000). */
  snapshotTailEntries?: number;
  heartbeatIntervalMs?: number;
  /** How often the free disk of the data dir is measured again (default 30 s; the record follows a real change). */
  diskCheckMs?: number;
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
  /**
   * omnid init --join-token: the cluster's join token (and so its network key) chosen in advance,
   * so hosts provisioned together can all start at once (README: Hosts provisioned together).
   */
  joinToken?: string;
  /** omnid join --join-timeout: how long the join keeps trying (default 30 s). */
  joinTimeoutMs?: number;
  /** Stops a join still trying (omnid join interrupted): its data dir is removed when nothing ever accepted a connection. */
  joinSignal?: AbortSignal;
  /** --registry HOST:PORT for the image registry's /v2/ (default 127.0.0.1:5000; 'off': none). */
  registry?: string;
  /** --vip-range CIDR: loopback range of this node's service VIPs (default DEFAULT_VIP_RANGE). */
  vipRange?: string;
  /** --docker-vip-range CIDR|off: addresses docker containers' service names point at (default DEFAULT_DOCKER_VIP_RANGE). */
  dockerVipRange?: string;
  /** --publish-host HOST: where published ports listen (default 0.0.0.0; 'off': nowhere). */
  publishHost?: string;
  /** --publish-port-offset N: published port P listens on P+N here (several nodes on one host). */
  publishPortOffset?: number;
  /** --registry-replicas N: nodes each pushed blob must be on before the push completes (default 2). */
  registryReplicas?: number;
  /** --registry-tls: serve /v2/ over HTTPS even on a loopback address. */
  registryTls?: boolean;
  /** --registry-gc-every: the leader's scheduled garbage collection interval (default 6 h; 0: off). */
  registryGcEveryMs?: number;
  /** Finished Forge builds kept (--build-keep, --build-ttl; default DEFAULT_BUILD_RETENTION). */
  buildRetention?: BuildRetention;
  /** How often the node reads its running services' and labs' files back into their workspaces (--workspace-sync; 0: off). */
  workspaceSyncMs?: number;
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

/** How long a node may take to read a task's workspace back for POST /v1/apps/NAME/workspace/sync. */
const WORKSPACE_SYNC_TIMEOUT_MS = 300_000;
const META_KEY = 'cluster';
const CLIENT_FILE = 'client.json';
const PEER_MAINTENANCE_MS = 1000;
const REGISTER_RETRY_MS = 500;
/** How often this node checks which task drivers it can run (an engine started or stopped: the record follows). */
const DRIVER_FINGERPRINT_MS = 5000;
/** How often the leader advances compose stacks whose services wait for their dependencies. */
const STACK_TICK_MS = 500;
/** How often refused leader claims are checked with this node's voters (Membership.checkLeaderClaims). */
const LEADER_CLAIM_CHECK_MS = 1000;

export class Omnid {
  readonly host: OmniHost;
  readonly raft: RaftNode;
  readonly rpc: Rpc;
  readonly transport: RaftTransport;
  /** Stops the snapshot stream (both ways). */
  private stopSnapshots: (() => Promise<void>) | undefined;
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
  mesh: Mesh | undefined;
  api!: ApiServer;
  apiTls!: ApiTls;
  taskLogs!: TaskLogService;
  stacks?: StackController;
  /** The image registry (undefined with --registry off). */
  registry: Registry | undefined;
  /** This node's task drivers (made with the agent). */
  private driverSet: DriverSet | undefined;
  /** What this node's Forge builds use (made once the registry is open). */
  private forgeParts: ForgeBuildParts | undefined;
  private autopilot!: Autopilot;
  /** Writes and linearizable reads from this node (node/cluster/writes.ts). */
  readonly writes: ClusterWrites;
  /** The join and leave protocol (node/cluster/membership.ts). */
  readonly membership: Membership;
  /** What the HTTP API's routes are given (node/api/*: server, apps and node routes). */
  readonly apiDeps: ApiServerDeps & AppsRoutesDeps & MemberRemovalDeps;
  private readonly peers: RemovedMemberNotice;
  private timers: NodeJS.Timeout[] = [];
  private stopping = false;
  private registered = false;
  /** Leader, voter, learner and node-record counts at the last afterApply (see there). */
  private lastMembership = '';
  /**
   * True from the start of a root that has not created its cluster yet until waitBootstrapped
   * ends (the root's first proposals): a join that arrives meanwhile waits for it (untilBootstrapped).
   */
  private bootstrapping = false;
  /** Joins held until the bootstrap ends (woken by waitBootstrapped). */
  private bootstrapWaiters: (() => void)[] = [];
  /** Resolved by the next afterApply (waitBootstrapped waits on it instead of polling). */
  private appliedWaiters: (() => void)[] = [];
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
    this.bootstrapping = meta.bootstrap !== undefined;
    this.clusterId = meta.clusterId;
    this.networkKeyHex = meta.networkKeyHex;
    this.log = log;
    this.stopped = new Promise((r) => (this.resolveStopped = r));
    this.writes = new ClusterWrites({
      id: this.id,
      raft,
      link: {
        forwardCommand: (leader, data, caller) => this.forwarder.propose(leader, data, caller),
        forwardConf: (leader, params) => this.rpc.call<ApplyResult>(leader, 'conf', params),
      },
      isStopping: () => this.stopping,
      recordsInCommands: () => this.clusterSchema() >= SCHEMA_RECORDS,
    });
    this.membership = new Membership({
      id: this.id,
      log,
      raft,
      clusterSchema: () => this.clusterSchema(),
      writes: this.writes,
      rpc,
      peerStore: host.peerStore,
      clusterId: () => this.clusterId,
      selfRecord: () => this.selfRecord(),
      clusterCa: () => loadClusterCa(opts.dataDir),
      initialising: () => this.bootstrapping || raft.state.config().clusterId === '',
      untilInitialised: (maxMs) => this.untilBootstrapped(maxMs),
      finishLeaving: (reason) => this.finishLeaving(reason),
    });
    this.peers = {
      dropPeer: (nodeId) => transport.dropPeer(nodeId),
      tellRemoved: (nodeId, reason, timeoutMs) => rpc.call(nodeId, 'removed', { reason }, timeoutMs).then(() => undefined, () => undefined),
    };
    const d = this;
    this.apiDeps = {
      id: this.id,
      name: this.name,
      log,
      raft,
      networkKeyHex: this.networkKeyHex,
      secretKey: secretKey(Buffer.from(this.networkKeyHex, 'hex')),
      get liveness() {
        return d.heartbeats as Heartbeats | undefined;
      },
      get taskLogs() {
        return d.taskLogs;
      },
      proposeOk: (cmd, caller) => this.writes.proposeOk(cmd, caller),
      readBarrier: () => this.writes.readBarrier(),
      changeMembership: (cc, caller) => this.writes.changeMembership(cc, caller),
      leave: () => this.membership.leave(),
      clusterSchema: () => this.clusterSchema(),
      kickOrchestrator: () => this.orchestrator?.kick(),
      localDriver: (taskId) => this.agent?.driverFor(taskId),
      syncWorkspace: (app) => this.syncWorkspace(app),
      taskStats: (app) => this.taskStats(app),
      pinImage: async (image) => (this.registry ? this.registry.pinImage(image) : image),
      peers: this.peers,
    };
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
    const networkKey = opts.joinToken !== undefined ? networkKeyFromChosenJoinToken(opts.joinToken) : newNetworkKey();
    const adminToken = newAdminToken();
    const joinToken = opts.joinToken ?? newJoinToken(networkKey);
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
    // The CA (loading @peculiar/x509 and signing: ~50 ms) is made while the log opens.
    const creatingCa = initClusterCa(opts.dataDir, meta.clusterId);
    creatingCa.catch(() => undefined); // awaited below; not unhandled if the log fails first
    const storage = await RaftStorage.open(storageDir(opts.dataDir));
    const ca = await creatingCa;
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
      const reply = await daemon.membership.requestJoin(target, token, opts.joinTimeoutMs, opts.joinSignal);
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
        // The name defaults to the host name: a second daemon on one host (or a host cloned from another) collides.
        if (err.code === 'NAME_TAKEN' && opts.name === undefined) throw new OmniError('NAME_TAKEN', `${err.message}; this host's name is the default: give this node another with --name NAME`);
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
    if (xsalsa20Backend() === 'js') log.warn('libsodium (sodium-native) did not load on this platform: the private network cipher runs in JavaScript (slower transfers between nodes)');
    await storage.putMeta(META_KEY, { ...((await storage.getMeta<ClusterMeta>(META_KEY)) ?? meta), boundListen: [...new Set(bound)] });
    let daemon!: Omnid;
    const transport = new RaftTransport({
      host,
      onMessage: (m) => daemon.raft.step(m),
      isTrustedSender: (peer) => isTrustedSender(daemon.raft, peer),
      onUnreachable: (peer) => daemon?.raft?.reportUnreachable(peer),
      log,
    });
    // Snapshots stream on their own protocol, row by row from a LevelDB view into the
    // follower's staging rows; the Raft message that installs them follows the last row.
    const snapshots = new SnapshotStream({ host, log, isTrustedSender: (peer) => isTrustedSender(daemon.raft, peer) });
    const stopSnapshots = new AbortController();
    const raft = await RaftNode.open({
      id: host.peerId.toString(),
      storage,
      send: (msgs) => transport.send(msgs),
      log,
      timing: opts.timing ?? DEFAULT_TIMING,
      snapshotEveryEntries: opts.snapshotEveryEntries,
      snapshotTailEntries: opts.snapshotTailEntries,
      sendSnapshot: async (m, view) => {
        const header = encodeRaftMessage({ ...m, snapshot: { meta: m.snapshot!.meta, data: new Uint8Array(0) } });
        return (await snapshots.sendSnapshot(m.to, header, view, stopSnapshots.signal)) === 'finish';
      },
      onApplied: () => daemon.afterApply(),
      onFatal: (err) => void daemon.shutdown(`fatal: ${err.message}`, 1),
    });
    // A leader whose process died closes its connections at once: its followers need not wait
    // out an election timeout to notice (RaftNode.peerDisconnected).
    host.addEventListener('peer:disconnect', (evt) => daemon?.raft?.peerDisconnected(evt.detail.toString()));
    const rpc = new Rpc(host, log);
    daemon = new Omnid(opts, host, storage, raft, transport, rpc, meta, log);
    registerClusterRpc({ raft, rpc, writes: daemon.writes, membership: daemon.membership, clusterCa: () => loadClusterCa(opts.dataDir) });
    // Leader side of a forwarded write: members only, and only what the caller may propose.
    const proposeForwarded = (from: string, data: Uint8Array, caller: WireCaller) => {
      requireMember(raft, from);
      return daemon.writes.proposeForwarded(from, data, caller);
    };
    daemon.forwarder = new Forwarder(host, proposeForwarded, log);
    await transport.start();
    await snapshots.handle((from, header, id) => {
      let m;
      try {
        m = decodeRaftMessage(header);
      } catch {
        return;
      }
      if (m.type !== MessageType.Snap || !m.snapshot || m.from !== from) return;
      daemon.raft.step({ ...m, snapshot: { meta: m.snapshot.meta, data: stagedSnapshotData(from, id) } });
    }, guardSink(storage.snapshotSink(), () => daemon.raft.stagedSnapshotPending, () => performance.now()));
    daemon.stopSnapshots = async () => {
      stopSnapshots.abort();
      await snapshots.stop();
    };
    await rpc.start();
    await daemon.forwarder.start();
    raft.start();
    // omni sync of a running app: the node running a task of it reads the task's files back (node/sync/task-workspace.ts)
    rpc.on('workspace-sync', async (params, from) => {
      requireMember(raft, from);
      const app = (params as { app?: unknown } | null)?.app;
      if (typeof app !== 'string' || !APP_RE.test(app) || app.length > 100) throw new OmniError('INVALID_ARGUMENT', 'workspace-sync: need {app}');
      return (await daemon.agent?.syncWorkspaces(app)) ?? [];
    });
    // omni stats: a sample of this node's tasks of an app (node/apps/task-stats.ts)
    rpc.on('task-stats', async (params, from) => {
      requireMember(raft, from);
      const app = (params as { app?: unknown } | null)?.app;
      if (typeof app !== 'string' || !APP_RE.test(app) || app.length > 100) throw new OmniError('INVALID_ARGUMENT', 'task-stats: need {app}');
      return sampleTasks(daemon.agent?.tasksOf(app) ?? []);
    });
    daemon.taskLogs = new TaskLogService(host, { authorize: (peer) => requireMember(raft, peer), localLogs: (id, o) => daemon.agent?.driverFor(id)?.logs(id, o), log });
    await daemon.taskLogs.start();
    daemon.api = new ApiServer(daemon.apiDeps, log, opts.apiLimits);
    registerAppRoutes(daemon.api, daemon.apiDeps);
    registerNodeRoutes(daemon.api, daemon.apiDeps);
    registerMetricsRoute(daemon.api, new NodeMetrics({
      node: { id: daemon.id, name: daemon.name, clusterId: () => raft.state.config().clusterId },
      raft: () => {
        const r = raft.raft;
        return { term: r.term, commitIndex: r.log.committed, appliedIndex: r.log.applied, isLeader: raft.isLeader, hasLeader: r.lead !== NONE, voters: r.voters.size, learners: r.learners.size };
      },
      state: () => ({ bytes: raft.state.sizeBytes, quotaBytes: quotaBytes(raft.state.config()), nodes: raft.state.nodes(), apps: raft.state.tables.apps().length, recordsAsText: raft.state.recordsKeptAsText().length }),
      localTasks: () =>
        raft.state.tables.tasksOnNode(daemon.id).filter((t) => t.desired === 'run').map((t) => {
          const st = raft.state.tables.status(t.id);
          return { id: t.id, app: t.app, state: st?.state ?? 'pending', health: st?.health ?? 'none', restarts: st?.restarts ?? 0 };
        }),
      sampleTasks: () => sampleTasks(daemon.agent?.localTasks() ?? []),
      registry: () => {
        const r = daemon.registry;
        if (!r) return undefined;
        const rep = r.replicationStatus();
        return { blobs: r.store.held().length, bytes: r.store.heldBytes(), ...(rep ? { underReplicated: rep.under, lost: rep.lost } : {}) };
      },
      builds: () =>
        raft.state.tables.apps().filter((a) => isBuildAppName(a.name)).map((a) => {
          const j = jobPhase(a, raft.state.tables.tasksOfApp(a.name).filter((t) => t.desired === 'run').map((t) => raft.state.tables.status(t.id)));
          return { phase: j.phase, outcome: j.outcome };
        }),
    }));
    daemon.stacks = registerStackRoutes(daemon.api, daemon.apiDeps);
    registerImageRoutes(daemon.api, {
      readBarrier: () => daemon.writes.readBarrier(),
      get registry() {
        const r = daemon.registry;
        return r?.server
          ? {
              catalog: r.catalog,
              url: () => r.server!.url,
              heldBlobs: () => ({ count: r.store.held().length, bytes: r.store.heldBytes() }),
              recentTransfers: () => r.recentTransfers(),
              recentPrefetches: () => r.recentPrefetches(),
              replication: () => r.replicationStatus() ?? null,
              gc: (req: GcRequest, caller: Caller) => r.gc.request(req, caller),
              gcPolicy: () => r.gc.policy(),
              gcLastRun: () => r.gc.lastRun(),
              gcSchedule: () => r.gcScheduleStatus(),
              replicas: r.repoReplicas,
            }
          : undefined;
      },
      caPem: () => readFile(caCertPath(opts.dataDir), 'utf8').catch(() => undefined),
      holders: (digest) => (daemon.registry?.holders(digest, daemon.id) ?? []).map((id) => daemon.raft.state.node(id)?.name ?? id),
    });
    registerSyncRoutes(daemon.api, {
      syncRegistry: () => {
        const r = daemon.registry;
        return r ? { store: r.store, catalog: r.catalog, replicate: (digest, signal, repo, offer, o) => r.replicate(digest, signal, repo, offer, o) } : undefined;
      },
      log,
    });
    daemon.apiTls = await ApiTls.prepare({ dataDir: opts.dataDir, apiHost: parseHostPort(opts.api).host, addrs: () => daemon.addrs(), nodeName: meta.name, flags: opts, log });
    await daemon.api.listen(opts.api, daemon.apiTls);
    await daemon.api.listenControl(controlSocketPath(opts.dataDir));
    await daemon.startRegistry();
    // glibc, or jemalloc when bin/omnid preloads it (OMNI_MALLOC=jemalloc; README: Memory allocator); said once, for operators
    // and what became of the start-up code cache (dist/omnid.cjs, cli/code-cache.ts)
    log.info(`memory allocator: ${processAllocator()}; start-up code cache: ${codeCacheState()}`);
    log.info(`node ${meta.name} (${daemon.id}) listening on ${daemon.addrs().join(', ')}; API ${daemon.apiUrl}`);
    if (background) daemon.startBackground();
    return daemon;
  }

  /** Opens the blob store and serves /v2/ (a busy default port is a warning; an explicit --registry must bind). */
  private async startRegistry(): Promise<void> {
    const addr = this.opts.registry ?? DEFAULT_REGISTRY_ADDR;
    if (addr === 'off') return;
    const registry = await Registry.open({ cluster: { raft: this.raft, readBarrier: () => this.writes.readBarrier(), proposeOk: (cmd, caller) => this.writes.proposeOk(cmd, caller) }, log: this.log, dataDir: this.opts.dataDir, replicas: this.opts.registryReplicas, gcEveryMs: this.opts.registryGcEveryMs });
    const tls = await ApiTls.prepare({ dataDir: this.opts.dataDir, apiHost: parseHostPort(addr).host, addrs: () => this.addrs(), nodeName: this.name, flags: { tls: this.opts.registryTls === true }, log: this.log });
    try {
      await registry.listen(addr, tls);
    } catch (err) {
      if (this.opts.registry !== undefined) throw new OmniError('REGISTRY_LISTEN', `cannot serve the registry on ${addr}: ${(err as Error).message}`);
      this.log.warn(`registry: cannot listen on ${addr} (${(err as Error).message}); this node serves no /v2/ (use --registry HOST:PORT, or --registry off)`);
    }
    this.registry = registry;
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
    const proposeOk = (cmd: Command, caller: Caller) => this.writes.proposeOk(cmd, caller);
    const changeMembership = (cc: ConfChange, caller: Caller) => this.writes.changeMembership(cc, caller);
    this.autopilot = new Autopilot({ id: this.id, log: this.log, raft: this.raft, liveness: this.heartbeats, peers: this.peers, proposeOk, changeMembership }, {
      downAfterMs: this.opts.downAfterMs ?? DEFAULT_DOWN_AFTER_MS,
      replaceAfterMs: this.opts.replaceAfterMs ?? DEFAULT_REPLACE_AFTER_MS,
    });
    this.autopilot.start();
    void this.registry
      ?.startPeers({
        host: this.host,
        clusterId: this.clusterId,
        selfId: this.id,
        authorize: (peer) => requireMember(this.raft, peer),
        members: () => this.raft.state.nodes().filter((n) => n.id !== this.id && n.status === 'up').map((n) => n.id),
        rpc: this.rpc,
        rereplication: {
          isLeader: () => this.raft.isLeader,
          live: () => this.liveMembers(),
          targets: () => this.liveMembers().filter((id) => this.raft.state.node(id)?.eligibility !== 'draining'),
        },
      })
      .catch((err: Error) => this.log.error(`registry: cannot start the peer-to-peer side: ${err.message}`));
    this.orchestrator = new Orchestrator({
      log: this.log,
      raft: this.raft,
      proposeOk,
      ...(this.opts.buildRetention ? { buildRetention: this.opts.buildRetention } : {}),
      // A build prefers the nodes that hold its warm dependency layer (soft: protocol/forge/cache-placement.ts).
      preferNodeIds: (_app, spec) => {
        const reg = this.registry;
        if (!reg || spec.driver !== 'forge') return undefined;
        return buildCacheNodes(spec, (k) => this.raft.state.kvGet(k)?.value, (digest) => reg.holders(digest, this.id));
      },
    });
    this.orchestrator.start();
    const vip = parseVipRange(this.opts.vipRange ?? DEFAULT_VIP_RANGE);
    if (!vip.ok) throw new Error(vip.message);
    const dockerVip = this.opts.dockerVipRange === 'off' ? null : parseVipRange(this.opts.dockerVipRange ?? DEFAULT_DOCKER_VIP_RANGE, 'docker');
    if (dockerVip && !dockerVip.ok) throw new Error(dockerVip.message);
    const publishHost = this.opts.publishHost ?? '0.0.0.0';
    this.mesh = new Mesh(
      { id: this.id, log: this.log, raft: this.raft, host: this.host, dataDir: this.opts.dataDir, authorize: (peer) => requireMember(this.raft, peer),
        // which task a connection to a docker VIP comes from (containers of other networks are refused)
        containerAddresses: () => {
          const docker = this.driverSet?.docker;
          return docker instanceof DockerDriver ? docker.containerAddresses() : undefined;
        },
      },
      { vipRange: vip.range, dockerVipRange: dockerVip ? dockerVip.range : null, publish: publishHost === 'off' ? null : { host: publishHost, portOffset: this.opts.publishPortOffset ?? 0 } },
    );
    void this.mesh.start().catch((err: Error) => this.log.error(`mesh: cannot start: ${err.message}`));
    const mesh = this.mesh;
    this.agent = new Agent(
      {
        network: (spec) => mesh.forTask(spec),
        id: this.id,
        log: this.log,
        raft: this.raft,
        dataDir: this.opts.dataDir,
        secretKey: this.apiDeps.secretKey,
        proposeOk,
        readBarrier: () => this.writes.readBarrier(),
        // For the exclusive tasks' watchdogs outside omnid: they stop the tasks a quarter lease after the agent would.
        publishLease: (untilMs) => writeLeaseFile(this.opts.dataDir, untilMs, EXCLUSIVE_LEASE_MS / 4),
        ...(this.opts.workspaceSyncMs !== undefined ? { workspaceSyncMs: this.opts.workspaceSyncMs } : {}),
        workspaces: new TaskWorkspaces({
          dataDir: this.opts.dataDir,
          log: this.log,
          // through the node: the record's value may live on disk only
          readRecord: (key) => this.raft.kvGet(key),
          writeRecord: async (key, value, expectedVersion) => {
            await proposeOk({ type: 'kv.put', key, value, expectedVersion }, SELF);
          },
          // the node's registry in process, writing as the node itself (protocol/cluster/authz.ts)
          registry: () => {
            const reg = this.registry;
            if (!reg) return undefined;
            return new NodeBuildRegistry({ catalog: reg.catalog, store: reg.store, ensureLocal: (rec, s) => reg.ensureLocal(rec, s), replicate: (digest, s, repo, offer) => reg.replicate(digest, s, repo, offer), caller: SELF });
          },
        }),
      },
      (this.driverSet = createDrivers(this.opts.dataDir, {
        registry: () => this.registry?.engineAccess(),
        forge: { log: this.log, parts: () => (this.registry ? (this.forgeParts ??= nodeBuildParts({ registry: this.registry, proposeOk })) : undefined) },
      })),
    );
    this.agent.start();
    void this.fingerprintDrivers().catch((err: Error) => this.log.debug(`drivers: ${err.message}`));
    this.every(DRIVER_FINGERPRINT_MS, () => this.fingerprintDrivers());
    this.every(this.opts.diskCheckMs ?? DEFAULT_DISK_CHECK_MS, () => this.remeasureDisk());
    void this.apiTls.ensureCa(() => this.rpc.call([this.raft.leader, ...this.raft.raft.voters].find((p) => p !== NONE && p !== this.id) ?? NONE, 'cluster-ca', {}));
    this.every(PEER_MAINTENANCE_MS, () => this.maintainPeers());
    this.every(LEADER_CLAIM_CHECK_MS, () => this.membership.checkLeaderClaims());
    this.every(REGISTER_RETRY_MS, () => this.registerSelf());
    this.every(STACK_TICK_MS, () => this.stacks?.tick());
    this.maintainPeers();
  }

  /**
   * POST /v1/apps/NAME/workspace/sync: every node holding a task of the app reads the task's
   * files back into the workspace (this node directly, the others over RPC).
   */
  private async syncWorkspace(app: string): Promise<{ node: string; tasks?: unknown[]; error?: string }[]> {
    const nodes = [...new Set(this.raft.state.tables.tasksOfApp(app).map((t) => t.nodeId))];
    return Promise.all(
      nodes.map(async (node) => {
        try {
          const tasks = node === this.id ? ((await this.agent?.syncWorkspaces(app)) ?? []) : await this.rpc.call<unknown[]>(node, 'workspace-sync', { app }, WORKSPACE_SYNC_TIMEOUT_MS);
          return { node, tasks };
        } catch (err) {
          return { node, error: (err as Error).message };
        }
      }),
    );
  }

  /** omni stats: each node holding tasks of `app` samples them (this node directly, the others over RPC). */
  private async taskStats(app: string): Promise<{ node: string; samples?: TaskStatsSample[]; error?: string }[]> {
    const nodes = [...new Set(this.raft.state.tables.tasksOfApp(app).map((t) => t.nodeId))];
    return Promise.all(
      nodes.map(async (node) => {
        try {
          const samples = node === this.id ? await sampleTasks(this.agent?.tasksOf(app) ?? []) : parseSamples(await this.rpc.call<unknown>(node, 'task-stats', { app }, TASK_STATS_TIMEOUT_MS + 2000));
          return { node, samples };
        } catch (err) {
          return { node, error: (err as Error).message.slice(0, 300) };
        }
      }),
    );
  }

  /** Members that are up and were heard from within --down-after-ms (this node included). */
  private liveMembers(): string[] {
    const now = Date.now();
    const deadAfterMs = this.opts.downAfterMs ?? DEFAULT_DOWN_AFTER_MS;
    return this.raft.state
      .nodes()
      .filter((n) => n.status === 'up' && (n.id === this.id || now - (this.heartbeats.seen.get(n.id)?.lastSeenMs ?? 0) <= deadAfterMs))
      .map((n) => n.id);
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
    await this.mesh?.stop();
    this.heartbeats?.stop();
    await this.api?.close();
    await this.registry?.stop();
    await this.stopSnapshots?.();
    await this.raft.stop();
    await this.forwarder?.stop();
    await this.taskLogs?.stop();
    await this.transport.stop();
    await this.rpc.stop();
    await Promise.resolve(this.host.stop()).catch(() => undefined);
    await this.storage.close();
    this.resolveStopped({ reason, exitCode });
  }

  // ------------------------------------------------------------------ writes and reads (node/cluster/writes.ts)

  propose(cmd: Command, caller: Caller): Promise<ApplyResult> {
    return this.writes.propose(cmd, caller);
  }

  proposeOk(cmd: Command, caller: Caller): Promise<unknown> {
    return this.writes.proposeOk(cmd, caller);
  }

  changeMembership(cc: ConfChange, caller: Caller): Promise<void> {
    return this.writes.changeMembership(cc, caller);
  }

  readBarrier(): Promise<void> {
    return this.writes.readBarrier();
  }

  /** Leaves the cluster cleanly (node/cluster/membership.ts). */
  leave(): Promise<void> {
    return this.membership.leave();
  }

  /** The command schema every member speaks (protocol/cluster/schema.ts), from their heartbeats. */
  clusterSchema(): number {
    return clusterSchema(this.id, this.raft.state.nodes(), (id) => this.heartbeats?.seen.get(id)?.schema);
  }

  private async selfRecord(): Promise<SelfRecord> {
    // Drivers are a field of schema 2: left out while a member could not read them.
    const drivers = this.clusterSchema() >= SCHEMA_NODE_DRIVERS ? await this.availableDrivers() : undefined;
    return {
      id: this.id,
      name: this.name,
      addrs: this.addrs().slice(0, 16),
      apiUrl: this.apiUrl,
      resources: { ...(await measureResources(this.opts.dataDir, this.agent?.workspaceBytesInUse() ?? 0)), ...(drivers ? { drivers } : {}) },
      labels: this.opts.labels ?? {},
    };
  }

  /** The task drivers this node can run now, sorted (Nomad's driver fingerprint); undefined before they exist. */
  private async availableDrivers(): Promise<string[] | undefined> {
    const set = this.driverSet;
    if (!set) return undefined;
    const names: string[] = [];
    for (const [name, d] of Object.entries(set) as [string, TaskDriver | undefined][]) if (d && (await d.available().catch(() => ({ ok: false }))).ok) names.push(name);
    return names.sort();
  }

  /**
   * Re-registers this node when the drivers it can run differ from its record (an engine started
   * or stopped after omnid), so the scheduler places a docker task only where an engine answers.
   */
  private async fingerprintDrivers(): Promise<void> {
    const self = this.raft.state.node(this.id);
    if (!self || self.status === 'left' || this.raft.state.config().clusterId === '') return;
    if (this.clusterSchema() < SCHEMA_NODE_DRIVERS) return; // an older member: reported once every member reads them
    const now = await this.availableDrivers();
    if (!now || now.join(',') === (self.resources.drivers ?? []).join(',')) return;
    this.log.info(`drivers: ${now.join(', ') || 'none'} available (the record said ${self.resources.drivers?.join(', ') ?? 'nothing'})`);
    await this.proposeOk({ type: 'node.register', node: await this.selfRecord() }, SELF);
  }

  /**
   * Re-registers this node when its free disk (plus what its tasks' workspaces hold) moved enough
   * since its record (protocol/cluster/disk-report.ts): the scheduler reserves apps' disk sizes
   * against it, so a disk that filled up (or was cleaned) is seen within --disk-check-ms.
   */
  private async remeasureDisk(): Promise<void> {
    const self = this.raft.state.node(this.id);
    if (!self || self.status === 'left' || this.raft.state.config().clusterId === '') return;
    const now = await measureDisk(this.opts.dataDir, this.agent?.workspaceBytesInUse() ?? 0);
    if (!diskMoved(self.resources.diskBytes, now)) return;
    const gib = (n: number) => `${(n / 1024 ** 3).toFixed(1)} GiB`;
    this.log.info(`disk: ${gib(now)} for workspaces in ${this.opts.dataDir} (the record said ${gib(self.resources.diskBytes)})`);
    await this.proposeOk({ type: 'node.register', node: await this.selfRecord() }, SELF);
  }

  // ------------------------------------------------------------------ background duties

  /** Completes a crashed or fresh init: cluster.init, tokens and the root's record. */
  async waitBootstrapped(): Promise<void> {
    this.bootstrapping = true;
    try {
      await this.bootstrap();
    } finally {
      this.bootstrapping = false;
      for (const wake of this.bootstrapWaiters.splice(0)) wake();
    }
  }

  /** Resolves once this node is not (or no longer) creating its cluster, or after `maxMs`. */
  private untilBootstrapped(maxMs: number): Promise<void> {
    return this.bootstrapping ? wokenOrAfter(this.bootstrapWaiters, maxMs) : Promise.resolve();
  }

  private async bootstrap(): Promise<void> {
    while (!this.stopping) {
      const log = this.raft.raft.log;
      // Judge only a state that has applied everything committed (after a restart, replay).
      const meta = (await this.storage.getMeta<ClusterMeta>(META_KEY))!;
      const b = meta.bootstrap!;
      const state = this.raft.state;
      // Done once the cluster exists and the root has registered (its last step, after the
      // tokens): a token missing then was revoked by an admin and must stay so. The record of
      // the bootstrap is dropped, so no later start runs it again.
      if (state.config().clusterId !== '' && state.node(this.id)) {
        const { bootstrap: _done, ...rest } = meta;
        await this.storage.putMeta(META_KEY, rest);
        return;
      }
      // Judge only as a leader that has applied an entry of its own term, i.e. everything
      // committed before it (after a restart the log is replayed first).
      const current = this.raft.isLeader && log.term(log.applied) === this.raft.raft.term;
      if (current) {
        // Each step is checked on its own, so a crash between any two is completed on restart.
        // The leader's three are proposed together, in this order (each is appended when
        // proposed), so they share one append and fsync; the node's record needs the cluster's
        // schema, known once the first is applied.
        const duties: Promise<unknown>[] = [];
        if (state.config().clusterId === '') {
          const quota = b.maxStateBytes !== undefined ? { maxStateBytes: b.maxStateBytes } : {};
          duties.push(this.proposeOk({ type: 'cluster.init', clusterId: meta.clusterId, voterTarget: b.voterTarget, rootNodeId: this.id, ephemeralRoot: b.ephemeralRoot, ...quota }, LEADER_DUTY));
        }
        if (!state.tokenById(b.adminTokenId)) duties.push(this.proposeOk({ type: 'token.add', token: { id: b.adminTokenId, hash: b.adminTokenHash, role: 'admin', name: 'admin (omnid init)' } }, LEADER_DUTY));
        if (!state.tokenById(b.joinTokenId)) duties.push(this.proposeOk({ type: 'token.add', token: { id: b.joinTokenId, hash: b.joinTokenHash, role: 'join', name: 'join (omnid init)' } }, LEADER_DUTY));
        await Promise.all(duties);
        if (!this.raft.state.node(this.id)) await this.proposeOk({ type: 'node.register', node: await this.selfRecord() }, SELF);
        this.registered = true;
        continue;
      }
      // not leader yet (a lone voter campaigns at once): the next applied Ready says more
      await this.nextApplied(50);
    }
  }

  /** Resolves after the next applied Ready, or after `maxMs`. */
  private nextApplied(maxMs: number): Promise<void> {
    return wokenOrAfter(this.appliedWaiters, maxMs);
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

  /**
   * Runs after every applied Ready: nudges the agent and orchestrator, notices our own departure,
   * and connects to members at once when the membership or the leader changed (a cold start's new
   * leader would otherwise reach a member it never dialled only at the next maintenance round).
   */
  private afterApply(): void {
    if (this.appliedWaiters.length > 0) for (const wake of this.appliedWaiters.splice(0)) wake();
    if (this.stopping) return;
    const membership = `${this.raft.leader}/${this.raft.raft.voters.size}/${this.raft.raft.learners.size}/${this.raft.state.nodeCount()}`;
    if (membership !== this.lastMembership) {
      this.lastMembership = membership;
      this.maintainPeers();
      this.autopilot?.kick();
    }
    this.agent?.kick();
    this.mesh?.kick();
    this.orchestrator?.kick();
    this.membership.noticeRemoval();
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

/** Resolves when the wake function it adds to `waiters` is called, or after `maxMs` (then it is removed). */
function wokenOrAfter(waiters: (() => void)[], maxMs: number): Promise<void> {
  return new Promise((resolve) => {
    const wake = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      const i = waiters.indexOf(wake);
      if (i >= 0) waiters.splice(i, 1);
      resolve();
    }, maxMs);
    waiters.push(wake);
  });
}
