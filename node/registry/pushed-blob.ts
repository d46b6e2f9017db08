// What a node does with a blob pushed to it once the blob is in its store (a push through /v2/,
// or a build or workspace read-back writing through the node's in-process registry): record it in
// the catalog and have it copied to its durability target of nodes. A small blob whose bytes are
// at hand is sent whole to the copies while the record is written (the members keep those bytes:
// no catalog read, no fetch); a member of an older version refuses that and is asked again, the
// plain way, once the record is written. Any other blob is recorded first, then copied (a member
// fetches it by the catalog's record).
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
  const inline = bytes && bytes.length === info.sizeBytes && bytes.length <= INLINE_REPLICA_BYTES ? bytes : undefined;
  if (!replicate || !inline) {
    await p.catalog.addBlob(repo, record, caller);
    const recordedMs = performance.now() - t0;
    await replicate?.(info.digest, signal, repo);
    return { recordedMs, copiedMs: performance.now() - t0 };
  }
  const abort = new AbortController();
  const copies = replicate(info.digest, AbortSignal.any([signal, abort.signal]), repo, { record: { sizeBytes: record.sizeBytes, pieceSizeBytes: record.pieceSizeBytes, pieces: record.pieces }, bytes: inline });
  copies.catch(() => undefined);
  try {
    await p.catalog.addBlob(repo, record, caller);
  } catch (err) {
    abort.abort();
    throw err;
  }
  const recordedMs = performance.now() - t0;
  await copies.catch(() => replicate(info.digest, signal, repo));
  return { recordedMs, copiedMs: performance.now() - t0 };
}
