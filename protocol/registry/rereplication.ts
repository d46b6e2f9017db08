// Re-replication, the pure decision: the leader restores the durability target of blobs whose
// copies were lost (a holder removed from the cluster, or not heard from for longer than the
// liveness threshold). Given the catalog's blobs, who holds each, the live nodes and the target,
// which live node should fetch which blob. The leader carries the copies out
// (node/registry/rereplicator.ts); nothing here has a clock or I/O.

export interface RereplicationInput {
  /** Copies each blob should have (--registry-replicas), bounded by the live nodes. */
  replicas: number;
  /** A blob's own target when it differs (its repositories' `omni images replicas`); default `replicas`. */
  replicasOf?: (digest: string) => number | undefined;
  /** The blobs the catalog records. */
  blobs: readonly { digest: string; createdAtMs: number }[];
  /** Nodes known to hold each blob (the holdings gossip and the leader's own store); any node, live or not. */
  holders: (digest: string) => readonly string[];
  /** Nodes that are up and heard from within the threshold: their copies count. */
  live: readonly string[];
  /** Live nodes that may receive copies (e.g. not draining). */
  targets: readonly string[];
  nowMs: number;
  /** Blobs recorded less than this long ago are left alone: their push is still making its copies. */
  settleMs: number;
  /** Blobs being copied already (not planned again). */
  inFlight: ReadonlySet<string>;
  /** Most copies one plan asks for. */
  maxCopies: number;
  /** A node's load (e.g. blobs it holds): copies go to the least loaded first. */
  load?: (node: string) => number;
  /** A target not to use for a blob now (e.g. its last copy of it failed a moment ago). */
  avoid?: (digest: string, node: string) => boolean;
}

export interface RereplicationPlan {
  /** Copies to make: `target` fetches `digest` (from the live holders). */
  copies: { digest: string; target: string }[];
  /** Blobs below their target (copies planned or not). */
  under: number;
  /** Blobs no live node holds (nothing to copy from until a holder comes back). */
  lost: string[];
}

/**
 * Blobs with the fewest live copies first (most at risk), then by digest; for each, the least
 * loaded live targets that lack it, until the blob has min(its target, live nodes) live copies or
 * the plan has maxCopies copies. Planned copies count towards the load of their target.
 */
export function planRereplication(i: RereplicationInput): RereplicationPlan {
  const live = new Set(i.live);
  const targetOf = (digest: string) => Math.max(1, Math.min(i.replicasOf?.(digest) ?? i.replicas, live.size));
  const planned = new Map<string, number>();
  const load = (n: string) => (i.load?.(n) ?? 0) + (planned.get(n) ?? 0);
  const candidates = [...new Set(i.targets)].filter((t) => live.has(t));
  const rows = i.blobs
    .filter((b) => !i.inFlight.has(b.digest) && i.nowMs - b.createdAtMs >= i.settleMs)
    .map((b) => {
      const holders = new Set(i.holders(b.digest));
      return { digest: b.digest, holders, have: [...holders].filter((h) => live.has(h)).length, target: targetOf(b.digest) };
    })
    .filter((r) => r.have < r.target)
    .sort((a, b) => a.have - b.have || (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
  const copies: RereplicationPlan['copies'] = [];
  const lost: string[] = [];
  for (const r of rows) {
    if (r.have === 0) {
      lost.push(r.digest);
      continue;
    }
    const order = candidates.filter((t) => !r.holders.has(t) && !i.avoid?.(r.digest, t)).sort((a, b) => load(a) - load(b) || (a < b ? -1 : a > b ? 1 : 0));
    for (const t of order.slice(0, r.target - r.have)) {
      if (copies.length >= i.maxCopies) break;
      copies.push({ digest: r.digest, target: t });
      planned.set(t, (planned.get(t) ?? 0) + 1);
    }
  }
  return { copies, under: rows.length, lost };
}
