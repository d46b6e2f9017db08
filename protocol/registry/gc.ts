// Garbage collection of the registry, the pure part: given the catalog (tags, manifests, blobs and
// their repository links), the images every kept app version names, the clock and the policy,
// which tags, manifests and blobs are live and which records go.
//
// Mark: the roots are
//   - every tag (after the retention policy: keepLast N keeps the N most recently pushed tags of
//     each repository, plus any tag an app spec names by tag);
//   - every digest an app spec names (`repo@sha256:…`, as `omni run` pins them) — every version
//     the cluster state keeps, which includes the version of every running task;
//   - every manifest younger than the grace period (pushed by digest before its tag or index,
//     as docker and skopeo do for multi-arch images).
// From a live manifest: its blobs (config, layers) and, for an index, its manifests; a manifest
// whose `subject` is live (a signature, an SBOM: the referrers API) is live too.
//
// Sweep plan: manifest records that are not live go, with their repository links; blob records
// that no live manifest references go with theirs, unless the blob (its record or a repository
// link to it) is younger than the grace period (an upload whose manifest is not pushed yet).
// Nothing here touches files: each node deletes its own copies of blobs the catalog no longer
// has (node/registry/gc.ts).
import { isDigest } from './digest.js';
import { parseImageReference } from './reference.js';

/** The default grace period: blobs and manifests younger than this are never collected. */
export const DEFAULT_GC_GRACE_MS = 60 * 60 * 1000;
/** Longest grace period accepted (a year). */
export const MAX_GC_GRACE_MS = 366 * 24 * 60 * 60 * 1000;
/** Largest keep-last value accepted. */
export const MAX_KEEP_LAST = 100_000;

export interface GcTag {
  repo: string;
  tag: string;
  digest: string;
  updatedAtMs: number;
}

export interface GcManifest {
  digest: string;
  blobs: readonly string[];
  manifests: readonly string[];
  subject?: string;
  createdAtMs: number;
}

export interface GcBlob {
  digest: string;
  sizeBytes: number;
  createdAtMs: number;
}

export interface GcLink {
  repo: string;
  digest: string;
  createdAtMs: number;
}

export interface GcInput {
  nowMs: number;
  graceMs: number;
  /** Retention: keep the last N tags (by push time) of each repository; undefined keeps all. */
  keepLast?: number;
  tags: readonly GcTag[];
  manifests: readonly GcManifest[];
  manifestLinks: readonly GcLink[];
  blobs: readonly GcBlob[];
  blobLinks: readonly GcLink[];
  /** The `image` of every app spec version kept in the cluster state (running tasks included). */
  appImages: readonly string[];
}

export interface GcPlan {
  liveManifests: Set<string>;
  liveBlobs: Set<string>;
  /** Tags the retention policy removes. */
  removeTags: { repo: string; tag: string; digest: string }[];
  /** Manifest records to remove (not live). */
  removeManifests: string[];
  /** Repository links to remove: of removed manifests, and links to manifests that do not exist. */
  removeManifestLinks: { repo: string; digest: string }[];
  /** Blob records to remove (not live, older than the grace period). */
  removeBlobs: string[];
  /** Repository links of removed blobs, and links to blobs that do not exist and are not live. */
  removeBlobLinks: { repo: string; digest: string }[];
  /** Unreferenced records kept because they are younger than the grace period. */
  keptYoung: { manifests: number; blobs: number };
  /** Bytes of the blob records removed. */
  reclaimBytes: number;
}

const byKey = <T>(key: (x: T) => string) => (a: T, b: T) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0);

/** Digests and `repo:tag` names the app images refer to (anything unparsable yields its digests, if any). */
export function appImageRefs(images: readonly string[]): { digests: Set<string>; tags: Set<string> } {
  const digests = new Set<string>();
  const tags = new Set<string>();
  for (const image of images) {
    if (typeof image !== 'string') continue;
    const r = parseImageReference(image);
    if (r.ok) {
      if (r.ref.digest) digests.add(r.ref.digest);
      else tags.add(`${r.ref.repository}:${r.ref.tag ?? 'latest'}`);
    }
    // Conservative: any sha256 digest written anywhere in the reference keeps its manifest.
    for (const m of image.slice(0, 1024).matchAll(/sha256:[a-f0-9]{64}/g)) digests.add(m[0]);
  }
  return { digests, tags };
}

/** The tags the retention policy removes: all but the `keepLast` newest of each repository (protected ones stay). */
export function retentionRemovals(tags: readonly GcTag[], keepLast: number | undefined, protectedTags: ReadonlySet<string>): GcTag[] {
  if (keepLast === undefined) return [];
  const byRepo = new Map<string, GcTag[]>();
  for (const t of tags) byRepo.set(t.repo, [...(byRepo.get(t.repo) ?? []), t]);
  const out: GcTag[] = [];
  for (const list of byRepo.values()) {
    // Newest first; ties by tag name, descending, so the order is total and deterministic.
    const sorted = [...list].sort((a, b) => b.updatedAtMs - a.updatedAtMs || (a.tag < b.tag ? 1 : a.tag > b.tag ? -1 : 0));
    for (const t of sorted.slice(Math.max(0, keepLast))) if (!protectedTags.has(`${t.repo}:${t.tag}`)) out.push(t);
  }
  return out.sort(byKey((t) => `${t.repo}:${t.tag}`));
}

/** Marks what is live and plans which records go (see the top of this file). */
export function planGc(input: GcInput): GcPlan {
  const cutoffMs = input.nowMs - Math.max(0, input.graceMs);
  const young = (atMs: number) => atMs > cutoffMs;
  const refs = appImageRefs(input.appImages);
  const removeTags = retentionRemovals(input.tags, input.keepLast, refs.tags);
  const removedTag = new Set(removeTags.map((t) => `${t.repo}:${t.tag}`));

  const manifests = new Map(input.manifests.map((m) => [m.digest, m]));
  const referrers = new Map<string, string[]>();
  for (const m of input.manifests) if (m.subject) referrers.set(m.subject, [...(referrers.get(m.subject) ?? []), m.digest]);
  // A manifest's age: its record's, or its newest repository link (pushed again into another repository).
  const manifestAge = new Map<string, number>();
  for (const m of input.manifests) manifestAge.set(m.digest, m.createdAtMs);
  for (const l of input.manifestLinks) if (manifests.has(l.digest)) manifestAge.set(l.digest, Math.max(manifestAge.get(l.digest) ?? 0, l.createdAtMs));

  const roots: string[] = [];
  for (const t of input.tags) if (!removedTag.has(`${t.repo}:${t.tag}`)) roots.push(t.digest);
  roots.push(...refs.digests);
  let keptYoungManifests = 0;
  const liveManifests = new Set<string>();
  const liveBlobs = new Set<string>();
  const queue: string[] = [];
  const markManifest = (d: string) => {
    if (!isDigest(d) || liveManifests.has(d)) return;
    liveManifests.add(d);
    queue.push(d);
  };
  const drain = () => {
    while (queue.length > 0) {
      const d = queue.pop()!;
      const m = manifests.get(d);
      if (m) {
        for (const b of m.blobs) liveBlobs.add(b);
        m.manifests.forEach(markManifest);
      }
      referrers.get(d)?.forEach(markManifest);
    }
  };
  roots.forEach(markManifest);
  drain();
  // Young manifests nothing else keeps: kept (with what they reference) until the grace period ends.
  for (const [d, at] of manifestAge) {
    if (young(at) && !liveManifests.has(d)) {
      keptYoungManifests++;
      markManifest(d);
      drain();
    }
  }

  const removeManifests = input.manifests.filter((m) => !liveManifests.has(m.digest)).map((m) => m.digest).sort();
  const removeManifestLinks = input.manifestLinks.filter((l) => !liveManifests.has(l.digest)).map(({ repo, digest }) => ({ repo, digest }));

  const blobRecords = new Map(input.blobs.map((b) => [b.digest, b]));
  const blobAge = new Map<string, number>();
  for (const b of input.blobs) blobAge.set(b.digest, b.createdAtMs);
  for (const l of input.blobLinks) if (blobRecords.has(l.digest)) blobAge.set(l.digest, Math.max(blobAge.get(l.digest) ?? 0, l.createdAtMs));
  let keptYoungBlobs = 0;
  const removeBlobs: string[] = [];
  let reclaimBytes = 0;
  for (const b of input.blobs) {
    if (liveBlobs.has(b.digest)) continue;
    if (young(blobAge.get(b.digest) ?? 0)) {
      keptYoungBlobs++;
      continue;
    }
    removeBlobs.push(b.digest);
    reclaimBytes += b.sizeBytes;
  }
  removeBlobs.sort();
  const removedBlob = new Set(removeBlobs);
  // A link goes with its blob's record; a link to no record at all goes unless a live manifest needs that digest.
  const removeBlobLinks = input.blobLinks
    .filter((l) => removedBlob.has(l.digest) || (!blobRecords.has(l.digest) && !liveBlobs.has(l.digest) && !young(l.createdAtMs)))
    .map(({ repo, digest }) => ({ repo, digest }));

  const linkOrder = byKey((l: { repo: string; digest: string }) => `${l.repo}@${l.digest}`);
  return {
    liveManifests,
    liveBlobs,
    removeTags: removeTags.map(({ repo, tag, digest }) => ({ repo, tag, digest })),
    removeManifests,
    removeManifestLinks: removeManifestLinks.sort(linkOrder),
    removeBlobs,
    removeBlobLinks: removeBlobLinks.sort(linkOrder),
    keptYoung: { manifests: keptYoungManifests, blobs: keptYoungBlobs },
    reclaimBytes,
  };
}

/**
 * Whether a node may delete its copy of a blob (the sweep): never a live blob; in a real run only
 * one the catalog no longer records (the catalog's removal is committed first, so a blob is never
 * gone from disk while the catalog still offers it); in a dry run, also one the plan would remove
 * (`doomed`). The file's own age (`storedAtMs`: when it arrived on this node, or was pushed again)
 * must be past the grace period, so a blob uploaded a moment ago, whose record is not written yet,
 * stays.
 */
export function sweepDecision(o: { live: boolean; recorded: boolean; doomed: boolean; dryRun: boolean; storedAtMs: number; nowMs: number; graceMs: number }): 'delete' | 'live' | 'recorded' | 'young' {
  if (o.live) return 'live';
  if (o.recorded && !(o.dryRun && o.doomed)) return 'recorded';
  if (o.storedAtMs > o.nowMs - Math.max(0, o.graceMs)) return 'young';
  return 'delete';
}

/**
 * Whether a scheduled run is due: `everyMs` after the last real run the cluster recorded (or, with
 * none, after this node became leader); after a failed attempt, not before a tenth of the interval
 * (at least a minute, at most the interval) has passed. `everyMs` 0: never.
 */
export function gcDue(i: { nowMs: number; everyMs: number; lastRunAtMs?: number; leaderSinceMs: number; lastAttemptMs?: number }): { due: boolean; nextAtMs?: number } {
  if (!(i.everyMs > 0)) return { due: false };
  let next = (i.lastRunAtMs ?? i.leaderSinceMs) + i.everyMs;
  if (i.lastAttemptMs !== undefined) next = Math.max(next, i.lastAttemptMs + Math.max(i.everyMs / 10, Math.min(60_000, i.everyMs)));
  return { due: i.nowMs >= next, nextAtMs: next };
}
