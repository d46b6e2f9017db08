// Cleanup of finished build apps (issue 15): every `omni build` on the cluster is a job app
// `build-<hex>` (protocol/forge/build-request.ts), which would otherwise stay in `omni ps` and the
// replicated state for ever. The leader's orchestrator removes a finished one (its run succeeded,
// failed or was stopped) once it is older than the TTL, or once it is not among the newest
// keepLast finished builds of its repository. A build still running or placed is never removed.
// Its image and build record stay: a later `omni build` of the same source is `reused` from the
// tag REPO:sha-<source digest>, not from the app. Pure.

export interface BuildRetention {
  /** Finished builds kept per repository (the newest by finish time). */
  keepLast: number;
  /** A finished build is removed this long after it finished, whatever keepLast says. */
  ttlMs: number;
}

export const DEFAULT_BUILD_RETENTION: BuildRetention = { keepLast: 5, ttlMs: 24 * 3600_000 };

export interface FinishedBuild {
  name: string;
  repo: string;
  finishedAtMs: number;
}

/** The names of the finished builds to remove, sorted. */
export function buildsToRemove(finished: readonly FinishedBuild[], nowMs: number, r: BuildRetention = DEFAULT_BUILD_RETENTION): string[] {
  const byRepo = new Map<string, FinishedBuild[]>();
  for (const b of finished) {
    if (!byRepo.has(b.repo)) byRepo.set(b.repo, []);
    byRepo.get(b.repo)!.push(b);
  }
  const out: string[] = [];
  for (const list of byRepo.values()) {
    list.sort((a, b) => b.finishedAtMs - a.finishedAtMs || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    list.forEach((b, i) => {
      if (i >= Math.max(0, r.keepLast) || nowMs - b.finishedAtMs > r.ttlMs) out.push(b.name);
    });
  }
  return out.sort();
}
