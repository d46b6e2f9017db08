// What a node does with a blob pushed to it once the blob is in its store (a push through /v2/,
// or a build or workspace read-back writing through the node's in-process registry): record it in
// the catalog and have it copied to its durability target of nodes — both at once. The copies are
// given the record (the members need not wait to read it from the catalog) and, for a small blob,
// its bytes (no fetch). A member of an older version takes neither and reads the catalog; it is
// asked again, the old way, once the record is written.
import type { Caller } from '../cluster/caller.js';
import type { BlobInfo } from './blob-store.js';
import type { RegistryCatalog } from './catalog.js';
import { INLINE_REPLICA_BYTES, type ReplicaOffer } from './piece-transfer.js';

export interface PushedBlobParts {
  catalog: Pick<RegistryCatalog, 'addBlob'>;
  /** Resolves once blob `digest` of `repo` is on its durability target of nodes (Registry.replicate). */
  replicate?(digest: string, signal: AbortSignal, repo: string, offer?: ReplicaOffer): Promise<void>;
}

/**
 * Records blob `info` (held here) in `repo` and waits for its copies. `bytes`: the whole blob, when
 * the caller has it at hand (sent to the copies if small). A copy made for a record that then
 * fails to be written is unreferenced: garbage collection removes it after its grace period.
 */
export async function recordPushedBlob(p: PushedBlobParts, repo: string, info: BlobInfo, caller: Caller, signal: AbortSignal, bytes?: Buffer): Promise<{ recordedMs: number; copiedMs: number }> {
  const t0 = performance.now();
  const record = { digest: info.digest, sizeBytes: info.sizeBytes, pieceSizeBytes: info.pieceSizeBytes, pieces: info.pieces, createdAtMs: Date.now() };
  const replicate = p.replicate;
  const abort = new AbortController();
  const both = AbortSignal.any([signal, abort.signal]);
  const inline = bytes && bytes.length === info.sizeBytes && bytes.length <= INLINE_REPLICA_BYTES ? bytes : undefined;
  const copies = replicate?.(info.digest, both, repo, { record: { sizeBytes: record.sizeBytes, pieceSizeBytes: record.pieceSizeBytes, pieces: record.pieces }, ...(inline ? { bytes: inline } : {}) });
  copies?.catch(() => undefined);
  try {
    await p.catalog.addBlob(repo, record, caller);
  } catch (err) {
    abort.abort();
    throw err;
  }
  const recordedMs = performance.now() - t0;
  if (copies && replicate) await copies.catch(() => replicate(info.digest, signal, repo));
  return { recordedMs, copiedMs: performance.now() - t0 };
}
