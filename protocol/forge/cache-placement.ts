// Where a build would rather run (issue 15: soft placement for a warm cache). A build request with
// a deps hint (protocol/forge/build-request.ts) names the dependency layer last built for the same
// lockfile: the tag lock-<hint hex> of forge-cache/deps, a one-layer image. The nodes that hold
// that layer's blob (the registry's holdings: by gossip, plus the deciding node's own store) are
// the build's preferred nodes — the scheduler gives them a bonus, never a filter
// (protocol/apps/scheduler.ts, preferNodeIds). Pure: the replicated state and the holdings are
// given as functions.
import type { AppSpec } from '../apps/spec.js';
import { manifestKey, readManifestRecord, readTagRecord, tagKey } from '../registry/records.js';
import { DEPS_CACHE_REPO_NAME, depsHintTag, parseBuildCommand } from './build-request.js';

/** At most this many preferred nodes (a blob replicated everywhere gives no useful preference anyway). */
const MAX_PREFERRED = 16;

export function buildCacheNodes(spec: AppSpec, kvGet: (key: string) => string | undefined, holders: (digest: string) => readonly string[]): ReadonlySet<string> | undefined {
  if (spec.driver !== 'forge' || !spec.command) return undefined;
  const parsed = parseBuildCommand(spec.command);
  if (!parsed.ok || !parsed.request.depsHint) return undefined;
  const tag = readTagRecord(kvGet(tagKey(DEPS_CACHE_REPO_NAME, depsHintTag(parsed.request.depsHint))));
  if (!tag) return undefined;
  const m = readManifestRecord(kvGet(manifestKey(tag.digest)), tag.digest);
  if (!m) return undefined;
  // Nodes that hold every layer of it (one: the dependency layer; the small config blob may be elsewhere).
  let layers: string[];
  try {
    const parsed = JSON.parse(m.content) as { layers?: { digest?: unknown }[] };
    layers = (Array.isArray(parsed.layers) ? parsed.layers : []).map((l) => l?.digest).filter((d): d is string => typeof d === 'string' && m.blobs.includes(d));
  } catch {
    return undefined;
  }
  let nodes: string[] | undefined;
  for (const b of layers) {
    const h = new Set(holders(b));
    nodes = nodes === undefined ? [...h] : nodes.filter((n) => h.has(n));
  }
  return nodes && nodes.length > 0 ? new Set(nodes.sort().slice(0, MAX_PREFERRED)) : undefined;
}
