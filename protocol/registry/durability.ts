// Durability of pushed blobs: a push completes only once each of its blobs is on `replicas`
// nodes (the pushing node counts), or on every member that is up when the cluster has fewer.

/** The default number of nodes each pushed blob must be on before the push completes. */
export const DEFAULT_REPLICAS = 2;
export const MAX_REPLICAS = 9;

export interface ReplicaPlan {
  /** Copies the blob must reach (bounded by the members up). */
  target: number;
  /** Copies known now (holders among the members up, this node included). */
  have: number;
  /** Members to ask, in order, until `target - have` of them hold it. */
  candidates: string[];
}

/**
 * Which members to ask for copies. `up`: the members that are up (this node included);
 * `holders`: nodes known to hold the blob. Candidates are the up members that do not hold it,
 * least loaded first (`load`: e.g. bytes held, lower is better), ties by id for determinism.
 */
export function planReplicas(replicas: number, self: string, up: readonly string[], holders: ReadonlySet<string>, load: (id: string) => number = () => 0): ReplicaPlan {
  const members = [...new Set([self, ...up])];
  const target = Math.max(1, Math.min(replicas, members.length));
  const have = members.filter((m) => holders.has(m)).length;
  const candidates = members.filter((m) => m !== self && !holders.has(m)).sort((a, b) => load(a) - load(b) || (a < b ? -1 : a > b ? 1 : 0));
  return { target, have, candidates };
}

/**
 * Each blob's durability target when repositories have their own (`omni images replicas REPO N`):
 * the largest target among the repositories that link it, a repository without one counting as
 * `defaultReplicas` (--registry-replicas). With no repository target set, empty (every blob has
 * the default).
 */
export function blobReplicaTargets(settings: ReadonlyMap<string, number>, links: Iterable<{ repo: string; digest: string }>, defaultReplicas: number): Map<string, number> {
  const out = new Map<string, number>();
  if (settings.size === 0) return out;
  for (const l of links) {
    const t = settings.get(l.repo) ?? defaultReplicas;
    out.set(l.digest, Math.max(out.get(l.digest) ?? 0, t));
  }
  return out;
}
