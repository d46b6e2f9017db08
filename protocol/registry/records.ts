// The registry's metadata as typed records, and where each lives in the replicated key space
// (under the reserved prefix `registry/`). The first store is the replicated KV; the records
// and the RegistryCatalog interface (node/registry/catalog.ts) stay when they move to typed
// tables. Blob bytes are never here: only their digests, sizes and piece digests.
//
//   registry/blob/<hex>                  BlobRecord: size, piece size, piece digests
//   registry/manifest/<hex>              ManifestRecord: media type, the bytes (a JSON text), what it references
//   registry/tag/<repo>:<tag>            TagRecord: the manifest digest a tag points to
//   registry/repo-manifest/<repo>@<hex>  RepoLink: the manifest is in that repository
//   registry/repo-blob/<repo>@<hex>      RepoLink: the blob is in that repository
//   registry/gc-fence                    bumped by every write that adds a reference (a manifest,
//                                        a tag, a blob upload or mount, an app deploy): garbage
//                                        collection compares its version, so a plan marked before
//                                        such a write is refused and marked again
//   registry/gc-policy                   GcPolicy: the grace period and retention every run uses
//                                        unless told otherwise (omni images gc --save)
//   registry/gc-last                     GcRunRecord: the last real run (its number: a node that
//                                        missed it sweeps its own copies when it is back)
//   registry/replicas/<repo>             RepoReplicas: copies each blob of the repository must have
//
// ':' and '@' never occur in repository names, so a repository's keys are one prefix each.
import { isDigest, hexOf, digestOfHex } from './digest.js';
import { validPieces } from './pieces.js';
import { isRepositoryName, isTag } from './reference.js';
import type { Descriptor } from './manifest.js';
import { manifestKind } from './media-types.js';
import { MAX_REPLICAS } from './durability.js';

export const REGISTRY_PREFIX = 'registry/';
export const BLOB_PREFIX = 'registry/blob/';
export const MANIFEST_PREFIX = 'registry/manifest/';
export const TAG_PREFIX = 'registry/tag/';
export const REPO_MANIFEST_PREFIX = 'registry/repo-manifest/';
export const REPO_BLOB_PREFIX = 'registry/repo-blob/';
export const GC_FENCE_KEY = 'registry/gc-fence';
export const GC_POLICY_KEY = 'registry/gc-policy';
export const GC_LAST_KEY = 'registry/gc-last';
export const REPO_REPLICAS_PREFIX = 'registry/replicas/';
export const repoReplicasKey = (repo: string) => REPO_REPLICAS_PREFIX + repo;

/**
 * The write that tells garbage collection a reference was added (see GC_FENCE_KEY): part of every
 * transaction that records a manifest, a tag, a blob or a link, and of app deploys with an image.
 */
export function fenceOp(): { op: 'put'; key: string; value: string } {
  return { op: 'put', key: GC_FENCE_KEY, value: '' };
}
/** Largest blob a node accepts (a push or a fetch). */
export const MAX_BLOB_BYTES = 16 * 1024 * 1024 * 1024;

export interface BlobRecord {
  digest: string;
  sizeBytes: number;
  pieceSizeBytes: number;
  /** sha256 hex of each piece, in order. */
  pieces: string[];
  createdAtMs: number;
}

export interface ManifestRecord {
  digest: string;
  mediaType: string;
  sizeBytes: number;
  /** The manifest bytes exactly as pushed (manifests are UTF-8 JSON; the round trip is checked at push). */
  content: string;
  /** Digests of the blobs it needs (config and layers). */
  blobs: string[];
  /** Digests of the manifests an index lists. */
  manifests: string[];
  subject?: string;
  artifactType?: string;
  /** Platforms of an index's entries, for `omni images inspect`. */
  platforms?: { digest: string; os?: string; architecture?: string; variant?: string }[];
  createdAtMs: number;
}

export interface TagRecord {
  digest: string;
  updatedAtMs: number;
}

export interface RepoLink {
  createdAtMs: number;
}

export function readRepoLink(value: string | undefined): RepoLink {
  const o = json(value);
  return { createdAtMs: o && nonNegInt(o.createdAtMs) ? o.createdAtMs : 0 };
}

export const blobKey = (digest: string) => BLOB_PREFIX + hexOf(digest);
export const manifestKey = (digest: string) => MANIFEST_PREFIX + hexOf(digest);
export const tagKey = (repo: string, tag: string) => `${TAG_PREFIX}${repo}:${tag}`;
export const tagPrefix = (repo: string) => `${TAG_PREFIX}${repo}:`;
export const repoManifestKey = (repo: string, digest: string) => `${REPO_MANIFEST_PREFIX}${repo}@${hexOf(digest)}`;
export const repoManifestPrefix = (repo: string) => `${REPO_MANIFEST_PREFIX}${repo}@`;
export const repoBlobKey = (repo: string, digest: string) => `${REPO_BLOB_PREFIX}${repo}@${hexOf(digest)}`;
export const repoBlobPrefix = (repo: string) => `${REPO_BLOB_PREFIX}${repo}@`;

/** `<repo>@<hex>` (after a repo-link prefix) → its parts, or undefined for a foreign key. */
export function parseRepoLinkKey(rest: string): { repo: string; digest: string } | undefined {
  const at = rest.lastIndexOf('@');
  if (at <= 0) return undefined;
  const repo = rest.slice(0, at);
  const digest = digestOfHex(rest.slice(at + 1));
  return isRepositoryName(repo) && isDigest(digest) ? { repo, digest } : undefined;
}

/** `<repo>:<tag>` (after TAG_PREFIX) → its parts. */
export function parseTagKey(rest: string): { repo: string; tag: string } | undefined {
  const colon = rest.lastIndexOf(':');
  if (colon <= 0) return undefined;
  const repo = rest.slice(0, colon);
  const tag = rest.slice(colon + 1);
  return isRepositoryName(repo) && isTag(tag) ? { repo, tag } : undefined;
}

function json(value: string | undefined): Record<string, unknown> | undefined {
  if (value === undefined) return undefined;
  try {
    const v = JSON.parse(value);
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

const nonNegInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/**
 * Records are read back defensively: an admin can write any key with the KV API, so a record
 * that does not have the expected shape is treated as absent, never trusted.
 */
export function readBlobRecord(value: string | undefined, digest: string): BlobRecord | undefined {
  const o = json(value);
  if (!o || o.digest !== digest || !nonNegInt(o.sizeBytes) || o.sizeBytes > MAX_BLOB_BYTES || !nonNegInt(o.pieceSizeBytes)) return undefined;
  if (!validPieces(o.sizeBytes, o.pieceSizeBytes, o.pieces)) return undefined;
  return { digest, sizeBytes: o.sizeBytes, pieceSizeBytes: o.pieceSizeBytes, pieces: o.pieces, createdAtMs: nonNegInt(o.createdAtMs) ? o.createdAtMs : 0 };
}

export function readManifestRecord(value: string | undefined, digest: string): ManifestRecord | undefined {
  const o = json(value);
  if (!o || o.digest !== digest || typeof o.mediaType !== 'string' || !manifestKind(o.mediaType) || typeof o.content !== 'string' || !nonNegInt(o.sizeBytes)) return undefined;
  const digests = (v: unknown) => (Array.isArray(v) && v.every(isDigest) ? (v as string[]) : undefined);
  const blobs = digests(o.blobs);
  const manifests = digests(o.manifests);
  if (!blobs || !manifests) return undefined;
  return {
    digest,
    mediaType: o.mediaType,
    sizeBytes: o.sizeBytes,
    content: o.content,
    blobs,
    manifests,
    ...(isDigest(o.subject) ? { subject: o.subject as string } : {}),
    ...(typeof o.artifactType === 'string' ? { artifactType: o.artifactType } : {}),
    ...(Array.isArray(o.platforms) ? { platforms: o.platforms as ManifestRecord['platforms'] } : {}),
    createdAtMs: nonNegInt(o.createdAtMs) ? o.createdAtMs : 0,
  };
}

export function readTagRecord(value: string | undefined): TagRecord | undefined {
  const o = json(value);
  if (!o || !isDigest(o.digest)) return undefined;
  return { digest: o.digest as string, updatedAtMs: nonNegInt(o.updatedAtMs) ? o.updatedAtMs : 0 };
}

/** The platforms an index lists, as stored in its record. */
export function platformsOf(manifests: (Descriptor & { platform?: { os?: string; architecture?: string; variant?: string } })[]): NonNullable<ManifestRecord['platforms']> {
  return manifests.filter((m) => m.platform).map((m) => ({ digest: m.digest, ...m.platform }));
}

/** The garbage collection policy saved in the cluster (omni images gc --save): what runs use unless told otherwise. */
export interface GcPolicy {
  graceMs?: number;
  keepLast?: number;
  updatedAtMs: number;
}

/** Longest grace period and largest keep-last a policy may hold (MAX_GC_GRACE_MS, MAX_KEEP_LAST of gc.ts). */
const MAX_POLICY_GRACE_MS = 366 * 24 * 60 * 60 * 1000;
const MAX_POLICY_KEEP_LAST = 100_000;

export function readGcPolicy(value: string | undefined): GcPolicy | undefined {
  const o = json(value);
  if (!o) return undefined;
  const graceMs = nonNegInt(o.graceMs) && o.graceMs <= MAX_POLICY_GRACE_MS ? o.graceMs : undefined;
  const keepLast = nonNegInt(o.keepLast) && o.keepLast <= MAX_POLICY_KEEP_LAST ? o.keepLast : undefined;
  return { ...(graceMs !== undefined ? { graceMs } : {}), ...(keepLast !== undefined ? { keepLast } : {}), updatedAtMs: nonNegInt(o.updatedAtMs) ? o.updatedAtMs : 0 };
}

/** The last real garbage collection run (dry runs leave no record). */
export interface GcRunRecord {
  /** 1, 2, …: a node that swept after run N has nothing to catch up until N + 1. */
  run: number;
  atMs: number;
  /** The node that ran it. */
  node: string;
  scheduled: boolean;
  graceMs: number;
  keepLast?: number;
  removed: { tags: number; manifests: number; blobs: number; bytes: number };
}

export function readGcRunRecord(value: string | undefined): GcRunRecord | undefined {
  const o = json(value);
  if (!o || !nonNegInt(o.run) || o.run === 0 || !nonNegInt(o.atMs) || !nonNegInt(o.graceMs)) return undefined;
  const r = (o.removed && typeof o.removed === 'object' ? o.removed : {}) as Record<string, unknown>;
  const n = (v: unknown) => (nonNegInt(v) ? v : 0);
  return {
    run: o.run,
    atMs: o.atMs,
    node: typeof o.node === 'string' ? o.node.slice(0, 64) : '?',
    scheduled: o.scheduled === true,
    graceMs: Math.min(o.graceMs, MAX_POLICY_GRACE_MS),
    ...(nonNegInt(o.keepLast) && o.keepLast <= MAX_POLICY_KEEP_LAST ? { keepLast: o.keepLast } : {}),
    removed: { tags: n(r.tags), manifests: n(r.manifests), blobs: n(r.blobs), bytes: n(r.bytes) },
  };
}

/** A repository's durability target (omni images replicas REPO N). */
export interface RepoReplicas {
  replicas: number;
  updatedAtMs: number;
}


export function readRepoReplicas(value: string | undefined): RepoReplicas | undefined {
  const o = json(value);
  if (!o || !nonNegInt(o.replicas) || o.replicas < 1 || o.replicas > MAX_REPLICAS) return undefined;
  return { replicas: o.replicas, updatedAtMs: nonNegInt(o.updatedAtMs) ? o.updatedAtMs : 0 };
}
