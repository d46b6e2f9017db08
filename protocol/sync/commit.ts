// File sync, the pure core: the body of a one-request commit of a small change (POST
// /v1/sync/<app>/commit, node/api/sync-routes.ts): a u32 big-endian header length, the header
// (JSON), then the blobs' bytes in order, then the manifests' bytes in order (the last manifest
// is the index the tag names). decodeSyncCommit checks sizes, counts and the digests' form; the
// node checks the digests against the bytes.
import { isDigest } from '../registry/digest.js';
import { MAX_MANIFEST_BYTES } from '../registry/manifest.js';

/** Largest blob in a commit: the node sends it whole to its copies (INLINE_REPLICA_BYTES, node/registry/piece-transfer.ts). */
export const SYNC_COMMIT_BLOB_BYTES = 512 * 1024;
/** Largest commit body; a change over it goes through /v2/. */
export const SYNC_COMMIT_MAX_BYTES = 4 * 1024 * 1024;
/** Blobs (each at most SYNC_COMMIT_BLOB_BYTES: sent whole to its copies) and manifests in one commit. */
export const SYNC_COMMIT_MAX_BLOBS = 64;
export const SYNC_COMMIT_MAX_MANIFESTS = 64;
/**
 * What a client sends this way at most, for the node's one Raft transaction (MAX_TXN_COMPARES
 * 1,000 and MAX_COMMAND_BYTES 2 MiB, protocol/cluster/commands.ts) with room to spare: compares
 * (estimated) and manifest bytes (they are written into the state, escaped once more).
 */
export const SYNC_COMMIT_MAX_COMPARES = 800;
export const SYNC_COMMIT_MAX_MANIFEST_BYTES = 512 * 1024;
const MAX_HEADER_BYTES = 64 * 1024;
const MAX_RECORD_CHARS = 16 * 1024;
const TAG_RE = /^ws-[1-9]\d{0,14}$/;

export interface SyncCommitHeader {
  expectedVersion: number;
  record: string;
  blobs: { digest: string; size: number }[];
  manifests: { digest: string; mediaType: string; size: number }[];
  tag: string;
  /**
   * An older revision's tag (`ws-<n>`, n below this one's) removed in the same transaction: the
   * revision that falls out of the kept ones (the CLI would otherwise remove it after the commit,
   * best effort). A node of an earlier version ignores it (the tag then stays until a GC with --keep-last).
   */
  untag?: string;
}

/** A malformed commit body (the node answers 400). */
export class SyncCommitError extends Error {
  readonly code = 'BAD_REQUEST';
}

/** The body of a commit: header then payloads (what the CLI sends). */
export function encodeSyncCommit(header: SyncCommitHeader, blobs: Uint8Array[], manifests: Uint8Array[]): Buffer {
  const h = Buffer.from(JSON.stringify(header));
  const len = Buffer.allocUnsafe(4);
  len.writeUInt32BE(h.length, 0);
  return Buffer.concat([len, h, ...blobs, ...manifests]);
}

/** A commit body, checked (sizes, counts, digests' form); payloads are views into `body`. */
export function decodeSyncCommit(body: Buffer): { header: SyncCommitHeader; blobs: Buffer[]; manifests: Buffer[] } {
  const bad = (why: string) => new SyncCommitError(`sync commit: ${why}`);
  if (body.length < 4) throw bad('the body is cut short');
  const hl = body.readUInt32BE(0);
  if (hl > MAX_HEADER_BYTES || 4 + hl > body.length) throw bad('bad header length');
  let h: Partial<SyncCommitHeader>;
  try {
    h = JSON.parse(body.toString('utf8', 4, 4 + hl)) as Partial<SyncCommitHeader>;
  } catch {
    throw bad('the header is not JSON');
  }
  if (!h || typeof h !== 'object') throw bad('the header is not an object');
  if (!Number.isSafeInteger(h.expectedVersion) || h.expectedVersion! < 0) throw bad('expectedVersion must be an integer ≥ 0');
  if (typeof h.record !== 'string' || h.record.length === 0 || h.record.length > MAX_RECORD_CHARS) throw bad('record must be a non-empty string');
  if (typeof h.tag !== 'string' || !TAG_RE.test(h.tag)) throw bad('tag must be ws-<revision>');
  if (h.untag !== undefined && (typeof h.untag !== 'string' || !TAG_RE.test(h.untag) || Number(h.untag.slice(3)) >= Number(h.tag.slice(3)))) throw bad('untag must be ws-<an earlier revision>');
  if (!Array.isArray(h.blobs) || h.blobs.length > SYNC_COMMIT_MAX_BLOBS) throw bad(`blobs must be a list of at most ${SYNC_COMMIT_MAX_BLOBS}`);
  if (!Array.isArray(h.manifests) || h.manifests.length === 0 || h.manifests.length > SYNC_COMMIT_MAX_MANIFESTS) throw bad(`manifests must be a list of 1 to ${SYNC_COMMIT_MAX_MANIFESTS} (the index last)`);
  let at = 4 + hl;
  const take = (size: unknown, max: number, what: string): Buffer => {
    if (!Number.isSafeInteger(size) || (size as number) < 0 || (size as number) > max) throw bad(`${what}: size must be from 0 to ${max}`);
    if (at + (size as number) > body.length) throw bad(`${what}: the body is cut short`);
    const b = body.subarray(at, at + (size as number));
    at += size as number;
    return b;
  };
  const blobs = h.blobs.map((b, i) => {
    if (!b || !isDigest(b.digest)) throw bad(`blob ${i}: bad digest`);
    return take(b.size, SYNC_COMMIT_BLOB_BYTES, `blob ${b.digest}`);
  });
  const manifests = h.manifests.map((m, i) => {
    if (!m || !isDigest(m.digest) || typeof m.mediaType !== 'string' || m.mediaType.length > 200) throw bad(`manifest ${i}: bad digest or media type`);
    return take(m.size, MAX_MANIFEST_BYTES, `manifest ${m.digest}`);
  });
  if (at !== body.length) throw bad(`${body.length - at} bytes after the payloads`);
  return { header: h as SyncCommitHeader, blobs, manifests };
}

