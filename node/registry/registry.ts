// The registry on one node: its blob store, upload sessions, the replicated catalog, the /v2/
// listener, and (given by the daemon) the way to bring a blob from peers. daemon.ts builds one
// with the narrow parts it needs and starts it; nothing here knows the daemon.
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { isLoopbackHost } from '../api/tls.js';
import { parseImageReference } from '../../protocol/registry/reference.js';
import { choosePlatform, platformForArch } from '../../protocol/registry/image-archive.js';
import type { Logger } from '../logger.js';
import type { ClusterAccess } from '../cluster/ports.js';
import type { ApiTls } from '../api/tls.js';
import { OmniError } from '../errors.js';
import type { BlobRecord } from '../../protocol/registry/records.js';
import { BlobStore, type BlobStoreOptions } from './blob-store.js';
import { UploadSessions } from './uploads.js';
import { KvRegistryCatalog, type RegistryCatalog } from './catalog.js';
import { OciApi } from './oci-api.js';
import { RegistryServer } from './registry-server.js';
import type { OmniHost } from '../p2p/host.js';
import { Holdings } from './holdings.js';
import { DATA_FRAME_BYTES, INLINE_REPLICA_BYTES, MAX_OFFERED_PIECES, PieceService, type PushedCopy, type ReplicaOffer } from './piece-transfer.js';
import { BlobFetcher, type FetchLimits, type TransferReport } from './blob-fetcher.js';
import { DEFAULT_REPLICAS, planReplicas } from '../../protocol/registry/durability.js';
import { RegistryGc, readGcOptions, readSweepReport, SWEEP_RPC, SWEEP_TIMEOUT_MS } from './gc.js';
import { GcSchedule, DEFAULT_GC_EVERY_MS, type GcScheduleStatus } from './gc-schedule.js';
import { RepoReplicaTargets } from './repo-replicas.js';
import { Rereplicator, type ReplicationStatus } from './rereplicator.js';
import { DEFAULT_ANNOUNCE_INTERVAL_MS } from './holdings.js';

/** The default `--registry` address: loopback, for this node's own Docker engine. */
export const DEFAULT_REGISTRY_ADDR = '127.0.0.1:5000';
const UPLOAD_SWEEP_MS = 60_000;
/** A held blob is read in runs of this many bytes when it is streamed to a peer (each sent as a few data frames). */
const PUSH_READ_BYTES = 4 * DATA_FRAME_BYTES;

export interface RegistryDeps {
  cluster: Pick<ClusterAccess, 'raft' | 'readBarrier' | 'proposeOk'>;
  log: Logger;
  dataDir: string;
  /** Overrides of the store's limits (tests: a small piece size, a full disk). */
  store?: Partial<Omit<BlobStoreOptions, 'dir' | 'log'>>;
  /** Nodes each pushed blob must be on before the push completes (default 2; fewer members: all of them). */
  replicas?: number;
  /** Interval of the leader's scheduled garbage collection (default 6 h; 0: none). */
  gcEveryMs?: number;
}

/** What the peer-to-peer side needs (given once the node knows its cluster). */
export interface RegistryPeerDeps {
  host: OmniHost;
  clusterId: string;
  /** Throws FORBIDDEN unless `peer` is a current member. */
  authorize(peer: string): void;
  /** This node's id. */
  selfId: string;
  /** The other current members that are up. */
  members(): string[];
  /** Node-to-node calls (the GC sweep). */
  rpc: {
    on(method: string, handler: (params: unknown, from: string) => Promise<unknown>): void;
    call<T>(peer: string, method: string, params: unknown, timeoutMs?: number): Promise<T>;
  };
  fetchLimits?: Partial<FetchLimits>;
  announceIntervalMs?: number;
  /** The leader's re-replication duty (absent: none). */
  rereplication?: {
    isLeader(): boolean;
    /** Members whose copies count: up and heard from within the liveness threshold (this node included). */
    live(): string[];
    /** Live members that may receive copies. */
    targets(): string[];
  };
}

/** Brings a blob the catalog knows into the local store. */
export type FetchFn = (record: BlobRecord, signal: AbortSignal) => Promise<void>;

/** Blobs of one image fetched at once by a prefetch. */
const PREFETCH_PARALLEL_BLOBS = 4;
const MAX_PREFETCH_REPORTS = 20;
/** A prefetch gives up after this (the engine's own pull goes on regardless). */
const PREFETCH_TIMEOUT_MS = 10 * 60 * 1000;

/** What a prefetch did (GET /v1/registry, `prefetches`). */
export interface PrefetchReport {
  image: string;
  /** The image manifest whose blobs were fetched (the platform's, for an index). */
  digest: string;
  blobs: number;
  /** Blobs this node lacked when the prefetch began. */
  missing: number;
  /** Of those, the blobs now here (fetched by the prefetch, or by a transfer it joined). */
  fetched: number;
  bytes: number;
  ms: number;
  error?: string;
}

export class Registry {
  readonly catalog: RegistryCatalog;
  /** Garbage collection (omni images gc). */
  readonly gc: RegistryGc;
  /** Per-repository durability targets (omni images replicas). */
  readonly repoReplicas: RepoReplicaTargets;
  private gcSchedule: GcSchedule | undefined;
  server: RegistryServer | undefined;
  private uploads!: UploadSessions;
  private sweepTimer: NodeJS.Timeout | undefined;
  private fetcher: FetchFn = async (rec) => {
    throw new OmniError('BLOB_UNKNOWN', `blob ${rec.digest} is not on this node`);
  };
  private readonly addedListeners: ((digest: string) => void)[] = [];
  private readonly removedListeners: ((digest: string, why: 'deleted' | 'corrupt') => void)[] = [];
  private holdings: Holdings | undefined;
  private pieces: PieceService | undefined;
  private fetcherImpl: BlobFetcher | undefined;
  private rereplicator: Rereplicator | undefined;
  private peerDeps: RegistryPeerDeps | undefined;
  private readonly prefetches: PrefetchReport[] = [];
  /** This node's own pull credential, for its Docker engine (in memory only; new at every start). */
  private readonly nodeSecret = `OMNIN1.${randomBytes(24).toString('base64url')}`;

  private constructor(
    private readonly d: RegistryDeps,
    readonly store: BlobStore,
  ) {
    this.catalog = new KvRegistryCatalog(d.cluster);
    this.gc = new RegistryGc({ cluster: d.cluster, store, log: d.log, nodeName: () => this.nodeName(), sweptFile: join(d.dataDir, 'registry', 'gc-swept.json') });
    this.repoReplicas = new RepoReplicaTargets(d.cluster, d.replicas ?? DEFAULT_REPLICAS);
  }

  private nodeName(): string {
    const self = this.peerDeps?.selfId;
    return self ? (this.d.cluster.raft.state.node(self)?.name ?? self) : 'this node';
  }

  static async open(d: RegistryDeps): Promise<Registry> {
    let reg: Registry | undefined;
    const store = await BlobStore.open({
      dir: join(d.dataDir, 'registry'),
      log: d.log,
      ...d.store,
      onAdded: (digest) => reg?.addedListeners.forEach((f) => f(digest)),
      onRemoved: (digest, why) => reg?.removedListeners.forEach((f) => f(digest, why)),
    });
    reg = new Registry(d, store);
    reg.uploads = new UploadSessions(store);
    return reg;
  }

  /** Listeners for blobs arriving in or leaving this node's store (the holdings gossip). */
  onBlobAdded(f: (digest: string) => void): void {
    this.addedListeners.push(f);
  }

  onBlobRemoved(f: (digest: string, why: 'deleted' | 'corrupt') => void): void {
    this.removedListeners.push(f);
  }

  /** How blobs missing here are fetched (the peer-to-peer transfer). */
  setFetcher(f: FetchFn): void {
    this.fetcher = f;
  }

  /**
   * Starts the peer-to-peer side: the pieces protocol, the holdings gossip and the fetcher that
   * brings blobs this node lacks from the peers that hold them.
   */
  async startPeers(p: RegistryPeerDeps): Promise<void> {
    this.holdings = new Holdings({ host: p.host, clusterId: p.clusterId, held: () => this.store.held(), log: this.d.log, announceIntervalMs: p.announceIntervalMs });
    this.peerDeps = p;
    this.pieces = new PieceService(p.host, {
      authorize: p.authorize,
      store: this.store,
      log: this.d.log,
      replicate: async (digest, signal, offer) => {
        const t0 = performance.now();
        await takeReplica({ store: this.store, catalogRecord: (d) => this.catalog.blob(d), fetch: (rec, sig) => this.ensureLocal(rec, sig) }, digest, signal, offer);
        this.d.log.debug(`registry: copy of ${digest} kept (${offer ? 'sent with the request' : 'fetched'}) in ${(performance.now() - t0).toFixed(1)} ms`);
      },
      readPartial: (digest, index) => {
        if (!this.fetcherImpl) throw new OmniError('BLOB_UNKNOWN', `blob ${digest} is not on this node`);
        return this.fetcherImpl.readPartial(digest, index);
      },
    });
    await this.pieces.start();
    const holdings = this.holdings;
    this.fetcherImpl = new BlobFetcher({
      store: this.store,
      source: this.pieces,
      holders: (digest) => holdings.holders(digest),
      members: p.members,
      learned: (peer, digest, has) => holdings.learned(peer, digest, has),
      partialHolders: (digest) => holdings.partialHolders(digest),
      fetching: (digest, pieces) => holdings.fetching(digest, pieces),
      log: this.d.log,
      limits: p.fetchLimits,
    });
    const fetcher = this.fetcherImpl;
    this.setFetcher((rec, signal) => fetcher.fetch(rec, signal));
    p.rpc.on(SWEEP_RPC, async (params, from) => {
      p.authorize(from);
      return this.gc.sweepLocal(readGcOptions(params));
    });
    this.gc.setPeers({
      members: () => p.members().map((id) => ({ id, name: this.d.cluster.raft.state.node(id)?.name ?? id })),
      sweep: async (peer, o) => readSweepReport(await p.rpc.call(peer, SWEEP_RPC, o, SWEEP_TIMEOUT_MS)),
    });
    this.gcSchedule = new GcSchedule({ gc: this.gc, isLeader: () => p.rereplication?.isLeader() ?? false, log: this.d.log, everyMs: this.d.gcEveryMs ?? DEFAULT_GC_EVERY_MS });
    this.gcSchedule.start();
    this.onBlobAdded((d) => holdings.added(d));
    this.onBlobRemoved((d) => holdings.removed(d));
    holdings.start();
    if (p.rereplication) {
      const pieces = this.pieces;
      this.rereplicator = new Rereplicator({
        state: () => this.d.cluster.raft.state,
        ...p.rereplication,
        holders: (digest) => this.holders(digest, p.selfId),
        load: (node) => (node === p.selfId ? this.store.held().length : holdings.heldBy(node)),
        copy: async (target, digest, signal) => {
          if (target !== p.selfId) {
            await this.copyTo(pieces, target, digest, signal);
            holdings.learned(target, digest, true);
            return;
          }
          const rec = await this.catalog.blob(digest);
          if (!rec) throw new OmniError('BLOB_UNKNOWN', `blob ${digest} is not in the registry`);
          await this.ensureLocal(rec, signal);
        },
        replicas: this.d.replicas ?? DEFAULT_REPLICAS,
        blobTargets: () => this.repoReplicas.byBlob(),
        log: this.d.log,
        // one full holdings announcement from every node, with margin
        warmupMs: Math.round((p.announceIntervalMs ?? DEFAULT_ANNOUNCE_INTERVAL_MS) * 1.5),
      });
      this.rereplicator.start();
    }
  }

  /** The leader's garbage collection schedule (undefined on other nodes). */
  gcScheduleStatus(): GcScheduleStatus | undefined {
    return this.gcSchedule?.status();
  }

  /** The leader's re-replication figures (undefined on other nodes). */
  replicationStatus(): ReplicationStatus | undefined {
    return this.rereplicator?.current();
  }

  /**
   * Waits until a blob pushed here into `repo` is on as many nodes as its target (the repository's
   * own, else --registry-replicas; this node included), asking the least loaded members that lack
   * it to fetch it; fails UNAVAILABLE when too few could. With an offer (a small blob's record and
   * bytes) the members keep those bytes: no catalog read, no fetch.
   */
  async replicate(digest: string, signal: AbortSignal, repo?: string, offer?: ReplicaOffer, o: { selfHolds?: boolean } = {}): Promise<void> {
    const p = this.peerDeps;
    const pieces = this.pieces;
    const replicas = repo !== undefined ? this.repoReplicas.forRepo(repo) : (this.d.replicas ?? DEFAULT_REPLICAS);
    if (!p || !pieces || replicas <= 1) return;
    // `selfHolds`: the caller is storing it here meanwhile (a sync commit): this node counts.
    const holders = new Set(this.holders(digest, p.selfId));
    if (o.selfHolds) holders.add(p.selfId);
    // Least loaded first: the members known to hold the fewest blobs.
    const plan = planReplicas(replicas, p.selfId, p.members(), holders, (id) => this.holdings?.heldBy(id) ?? 0);
    let have = plan.have;
    const failures: string[] = [];
    const queue = [...plan.candidates];
    // Ask as many at once as copies are missing; a refusal moves on to the next candidate.
    const worker = async () => {
      while (have < plan.target && queue.length > 0) {
        const peer = queue.shift()!;
        try {
          await this.copyTo(pieces, peer, digest, signal, offer);
          have++;
          this.holdings?.learned(peer, digest, true);
        } catch (err) {
          failures.push(`${peer.slice(-12)}: ${(err as Error).message}`);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.max(0, plan.target - have) }, worker));
    if (have < plan.target) throw new OmniError('UNAVAILABLE', `blob ${digest} is on ${have} of the ${plan.target} nodes a push needs${failures.length ? ` (${failures.join('; ').slice(0, 400)})` : ''}; push again`);
  }

  /**
   * Makes `peer` keep a copy of `digest`: a small offered blob goes inside the request; a larger
   * one — offered, or held here — is streamed to it (PieceService.push: read once, no piece
   * requests); otherwise, or when the peer refuses the push (BAD_REQUEST: a peer of an older
   * version), the peer fetches it by the catalog's record from the nodes that hold it.
   */
  private async copyTo(pieces: PieceService, peer: string, digest: string, signal: AbortSignal, offer?: ReplicaOffer): Promise<void> {
    if (offer && offer.bytes.length <= INLINE_REPLICA_BYTES) return pieces.replicate(peer, digest, signal, offer);
    const held = this.store.info(digest);
    const copy: PushedCopy | undefined =
      offer && offer.record.pieces.length <= MAX_OFFERED_PIECES
        ? { record: offer.record, read: () => [offer.bytes] }
        : held && held.pieces.length <= MAX_OFFERED_PIECES
          ? { record: held, read: () => this.store.readUnverified(digest, PUSH_READ_BYTES) }
          : undefined;
    if (copy) {
      try {
        await pieces.push(peer, digest, copy, signal);
        return;
      } catch (err) {
        // only a peer of an older version (it refuses the request) is asked the plain way: any
        // other failure (its disk, a timeout) would befall that too
        if (signal.aborted || !(err instanceof OmniError && err.code === 'BAD_REQUEST')) throw err;
        this.d.log.debug(`registry: ${peer.slice(-12)} refused a pushed copy of ${digest} (${err.message}); it fetches it instead`);
      }
    }
    await pieces.replicate(peer, digest, signal);
  }

  /**
   * Where this node's Docker engine pulls app images from, with this node's pull credential:
   * only a plain-HTTP loopback registry (the engine trusts it without configuration).
   */
  engineAccess(): { hostPort: string; username: string; password: string; prefetch(image: string): Promise<unknown> } | undefined {
    const s = this.server;
    if (!s || !s.url.startsWith('http://')) return undefined;
    const host = s.hostPort.replace(/:\d+$/, '');
    if (!isLoopbackHost(host)) return undefined;
    const prefetch = (image: string) =>
      this.prefetchImage(image, AbortSignal.timeout(PREFETCH_TIMEOUT_MS)).catch((err: Error) => this.d.log.warn(`registry: prefetch of ${image} failed: ${err.message}`));
    return { hostPort: s.hostPort, username: 'omni-node', password: this.nodeSecret, prefetch };
  }

  /**
   * An app's image pinned to a digest when it names an image in this registry: `repo:tag` (or
   * `127.0.0.1:PORT/repo:tag`) → `repo@sha256:…`, resolved once at deploy so a retagged image
   * never changes a running app. Anything else is returned as given.
   */
  async pinImage(image: string): Promise<string> {
    const r = parseImageReference(image);
    if (!r.ok) return image;
    const { host, repository, tag, digest } = r.ref;
    if (host && !isLoopbackHost(host.replace(/:\d+$/, ''))) return image;
    if (digest) return (await this.catalog.manifest(repository, digest)) ? `${repository}@${digest}` : image;
    const pinned = await this.catalog.resolveTag(repository, tag ?? 'latest');
    return pinned ? `${repository}@${pinned}` : image;
  }

  /** Nodes (ids) the gossip says hold a blob, this node first when it does. */
  holders(digest: string, selfId: string): string[] {
    return [...(this.store.has(digest) ? [selfId] : []), ...(this.holdings?.holders(digest) ?? [])];
  }

  /** The last transfers from peers (newest last). */
  recentTransfers(): TransferReport[] {
    return this.fetcherImpl?.recent ?? [];
  }

  /**
   * Fetches every blob of an image of this registry that this node lacks, all at once (at most
   * PREFETCH_PARALLEL_BLOBS; each blob's pieces come from every holder), so the engine's pull —
   * which asks for a few layers at a time and waits for each whole blob — finds them here or joins
   * transfers already under way (concurrent requests for one blob share one transfer). `image` is
   * what an app names (`repo@sha256:…` once pinned, or `repo:tag`); an index is narrowed to this
   * machine's platform. Undefined when the image is not in this registry. The last prefetches are
   * shown by GET /v1/registry.
   */
  async prefetchImage(image: string, signal: AbortSignal): Promise<PrefetchReport | undefined> {
    // pinImage resolves what the app names to repo@digest when it is an image of this registry.
    const r = parseImageReference(await this.pinImage(image));
    if (!r.ok || !r.ref.digest || r.ref.host) return undefined;
    const { repository, digest } = r.ref;
    let man = await this.catalog.manifest(repository, digest);
    if (!man) return undefined;
    if (man.manifests.length > 0) {
      const entries = (man.platforms ?? []).map((p) => ({ digest: p.digest, platform: p }));
      const pick = choosePlatform(entries, platformForArch(process.arch));
      const child = pick.ok ? pick.value.digest : man.manifests.length === 1 ? man.manifests[0] : undefined;
      man = child ? await this.catalog.manifest(repository, child) : undefined;
      if (!man) return undefined;
    }
    const started = Date.now();
    const missing = man.blobs.filter((d) => !this.store.has(d));
    const report: PrefetchReport = { image, digest: man.digest, blobs: man.blobs.length, missing: missing.length, fetched: 0, bytes: 0, ms: 0 };
    const queue = [...missing];
    const errors: string[] = [];
    const worker = async () => {
      for (let d = queue.shift(); d !== undefined; d = queue.shift()) {
        const rec = await this.catalog.blob(d);
        if (!rec) continue;
        try {
          await this.ensureLocal(rec, signal);
          report.fetched++;
          report.bytes += rec.sizeBytes;
        } catch (err) {
          errors.push(`${d.slice(7, 19)}: ${(err as Error).message}`);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(PREFETCH_PARALLEL_BLOBS, missing.length) }, worker));
    report.ms = Date.now() - started;
    if (errors.length > 0) report.error = errors.join('; ').slice(0, 500);
    this.prefetches.push(report);
    if (this.prefetches.length > MAX_PREFETCH_REPORTS) this.prefetches.shift();
    return report;
  }

  /** The last image prefetches (newest last). */
  recentPrefetches(): readonly PrefetchReport[] {
    return this.prefetches;
  }

  /** Makes sure a blob the catalog knows is in the local store. */
  async ensureLocal(record: BlobRecord, signal: AbortSignal): Promise<void> {
    if (this.store.has(record.digest)) return;
    await this.fetcher(record, signal);
  }

  /** Serves /v2/ on HOST:PORT (HTTP on loopback, else HTTPS with the node certificate). */
  async listen(hostPort: string, tls: ApiTls): Promise<void> {
    const api = new OciApi({ catalog: this.catalog, store: this.store, uploads: this.uploads, fetchBlob: (rec, signal) => this.ensureLocal(rec, signal), replicate: (digest, signal, repo, offer) => this.replicate(digest, signal, repo, offer), log: this.d.log });
    const server = new RegistryServer({ api, tokens: () => this.d.cluster.raft.state.tokens(), nodeSecret: this.nodeSecret, readBarrier: () => this.d.cluster.readBarrier(), log: this.d.log });
    await server.listen(hostPort, tls);
    this.server = server;
    this.sweepTimer = setInterval(() => void this.uploads.sweep().catch(() => undefined), UPLOAD_SWEEP_MS);
    this.sweepTimer.unref();
    this.d.log.info(`registry: serving /v2/ on ${server.url} (${this.store.held().length} blobs on this node)`);
  }

  async stop(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.fetcherImpl?.stop();
    this.gcSchedule?.stop();
    this.rereplicator?.stop();
    this.holdings?.stop();
    await this.pieces?.stop();
    await this.server?.close();
    await this.uploads?.closeAll();
  }
}

/**
 * A replicate request from a peer (the pusher): keep blob `digest` here. The bytes it offers (a
 * small blob, whose catalog record may not be written yet) are hashed, checked and committed, no
 * fetch; otherwise the blob is fetched by the catalog's record.
 */
export async function takeReplica(
  d: { store: BlobStore; catalogRecord(digest: string): Promise<BlobRecord | undefined>; fetch(record: BlobRecord, signal: AbortSignal): Promise<void> },
  digest: string,
  signal: AbortSignal,
  offer?: ReplicaOffer,
): Promise<void> {
  if (d.store.has(digest)) return;
  if (offer) {
    await d.store.commitBytes(digest, offer.bytes, offer.record);
    return;
  }
  const rec = await d.catalogRecord(digest);
  if (!rec) throw new OmniError('BLOB_UNKNOWN', `blob ${digest} is not in the registry`);
  await d.fetch(rec, signal);
}
