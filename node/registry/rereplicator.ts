// Re-replication on the leader: every few seconds, the blobs the catalog records whose copies on
// live nodes fell below their target (--registry-replicas, or their repositories' own: omni images
// replicas) (a holder removed from the cluster, or silent for
// longer than the liveness threshold) get new copies: the plan is protocol/registry/rereplication.ts,
// the copies are `replicate` requests on the pieces protocol (the target fetches the blob from the
// holders like any pull and answers once it holds it). Only the leader acts, and only once its
// holdings gossip has heard every node's full list (a node that just started or just became
// leader with an empty view would otherwise think every blob lost a copy).
import type { Logger } from '../logger.js';
import type { ClusterState } from '../../protocol/cluster/state.js';
import { planRereplication } from '../../protocol/registry/rereplication.js';
import { listBlobRecords } from './catalog.js';

export const REREPLICATE_INTERVAL_MS = 5_000;
/** Blobs recorded less than this long ago are left to their push (which makes its own copies). */
export const REREPLICATE_SETTLE_MS = 30_000;
/** Copies in flight at once (each is a whole blob fetched by its target). */
const MAX_COPIES_IN_FLIGHT = 4;
/** A target whose copy of a blob failed is not asked for that blob again before this. */
const RETRY_AFTER_FAILURE_MS = 60_000;
/** Failures remembered (memory bound). */
const MAX_REMEMBERED_FAILURES = 10_000;
/** Lost blobs logged per leadership (memory bound; the count is always complete). */
const MAX_LOGGED_LOST = 1000;

export interface RereplicatorDeps {
  state(): ClusterState;
  isLeader(): boolean;
  /** Nodes whose copies count: members up and heard from within the threshold (this node included). */
  live(): string[];
  /** Live members that may receive copies (not draining). */
  targets(): string[];
  /** Nodes known to hold a blob (this node's store and the holdings gossip). */
  holders(digest: string): string[];
  /** Blobs a node is known to hold (a load measure). */
  load(node: string): number;
  /** Makes `target` fetch and keep `digest`; resolves once it holds it. */
  copy(target: string, digest: string, signal: AbortSignal): Promise<void>;
  replicas: number;
  /** Blobs whose repositories set their own target (omni images replicas), read once a round. */
  blobTargets?: () => ReadonlyMap<string, number>;
  log: Logger;
  /** Time the holdings gossip needs after this node starts before its view is complete. */
  warmupMs: number;
  intervalMs?: number;
  settleMs?: number;
}

export interface ReplicationStatus {
  /** Copies each blob should have. */
  replicas: number;
  /** Blobs below that on live nodes, at the last round. */
  under: number;
  /** Blobs no live node holds, at the last round. */
  lost: number;
  copying: number;
  /** Copies made since this node became leader. */
  copied: number;
  failed: number;
  atMs: number;
}

export class Rereplicator {
  private timer: NodeJS.Timeout | undefined;
  private readonly startedAtMs = Date.now();
  private readonly abort = new AbortController();
  /** digest → copies in flight. */
  private readonly inFlight = new Map<string, number>();
  private readonly failedAt = new Map<string, number>();
  private readonly loggedLost = new Set<string>();
  private wasLeader = false;
  private busy = false;
  private status: ReplicationStatus | undefined;

  constructor(private readonly d: RereplicatorDeps) {}

  start(): void {
    this.timer = setInterval(() => this.round(), this.d.intervalMs ?? REREPLICATE_INTERVAL_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.abort.abort();
  }

  /** The last round's figures (undefined off the leader). */
  current(): ReplicationStatus | undefined {
    return this.d.isLeader() ? this.status : undefined;
  }

  /** One round (exposed for tests); a no-op off the leader and during the warm-up. */
  round(nowMs = Date.now()): void {
    if (!this.d.isLeader()) {
      if (this.wasLeader) this.resetLeadership();
      return;
    }
    this.wasLeader = true;
    if (this.busy || nowMs - this.startedAtMs < this.d.warmupMs) return;
    this.busy = true;
    try {
      this.plan(nowMs);
    } catch (err) {
      this.d.log.warn(`registry: re-replication round failed: ${(err as Error).message}`);
    } finally {
      this.busy = false;
    }
  }

  private resetLeadership(): void {
    this.wasLeader = false;
    this.loggedLost.clear();
    this.status = undefined;
  }

  private plan(nowMs: number): void {
    const inFlightTotal = [...this.inFlight.values()].reduce((a, b) => a + b, 0);
    for (const [k, at] of this.failedAt) if (nowMs - at > RETRY_AFTER_FAILURE_MS) this.failedAt.delete(k);
    const own = this.d.blobTargets?.() ?? new Map<string, number>();
    const plan = planRereplication({
      replicas: this.d.replicas,
      replicasOf: (digest) => own.get(digest),
      blobs: listBlobRecords(this.d.state()),
      holders: (digest) => this.d.holders(digest),
      live: this.d.live(),
      targets: this.d.targets(),
      nowMs,
      settleMs: this.d.settleMs ?? REREPLICATE_SETTLE_MS,
      inFlight: new Set(this.inFlight.keys()),
      maxCopies: Math.max(0, MAX_COPIES_IN_FLIGHT - inFlightTotal),
      load: (n) => this.d.load(n),
      avoid: (digest, node) => this.failedAt.has(`${digest} ${node}`),
    });
    const prev = this.status;
    this.status = { replicas: this.d.replicas, under: plan.under, lost: plan.lost.length, copying: inFlightTotal + plan.copies.length, copied: prev?.copied ?? 0, failed: prev?.failed ?? 0, atMs: nowMs };
    for (const digest of plan.lost) {
      if (this.loggedLost.has(digest) || this.loggedLost.size >= MAX_LOGGED_LOST) continue;
      this.loggedLost.add(digest);
      this.d.log.warn(`registry: no live node holds blob ${digest}; it gets new copies when a node that holds it comes back`);
    }
    for (const c of plan.copies) void this.copy(c.digest, c.target);
  }

  private async copy(digest: string, target: string): Promise<void> {
    this.inFlight.set(digest, (this.inFlight.get(digest) ?? 0) + 1);
    try {
      await this.d.copy(target, digest, this.abort.signal);
      if (this.status) this.status.copied++;
      this.d.log.info(`registry: re-replicated blob ${digest} to ${target} (it had fewer live copies than its target)`);
    } catch (err) {
      if (this.abort.signal.aborted) return;
      if (this.status) this.status.failed++;
      if (this.failedAt.size < MAX_REMEMBERED_FAILURES) this.failedAt.set(`${digest} ${target}`, Date.now());
      this.d.log.warn(`registry: re-replicating blob ${digest} to ${target} failed: ${(err as Error).message}`);
    } finally {
      const n = (this.inFlight.get(digest) ?? 1) - 1;
      if (n <= 0) this.inFlight.delete(digest);
      else this.inFlight.set(digest, n);
      if (this.status) this.status.copying = Math.max(0, this.status.copying - 1);
    }
  }
}
