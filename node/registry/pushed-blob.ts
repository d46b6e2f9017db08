// What a node does with a blob pushed to it once the blob is in its store (a push through /v2/,
// or a build or workspace read-back writing through the node's in-process registry): record it in
// the catalog and have it copied to its durability target of nodes, both at once — a small blob
// whose bytes are at hand is sent whole with the request, any other is streamed from this node's
// store (Registry.copyTo): the members keep the bytes they are sent, checked against the record
// that comes with them, so they need no catalog record yet. A member of an older version refuses
// both and is asked again, the plain way (it fetches by the catalog's record), once the record is
// written.
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
 * Records blob `info` (held here) in `repo` and waits for its copies, made while the record is
 * written. `bytes`: the whole blob, when the caller has it at hand (sent to the copies if small).
 * A copy made for a record that then fails to be written is unreferenced: garbage collection
 * removes it after its grace period.
 */
export async function recordPushedBlob(p: PushedBlobParts, repo: string, info: BlobInfo, caller: Caller, signal: AbortSignal, bytes?: Buffer): Promise<{ recordedMs: number; copiedMs: number }> {
  const t0 = performance.now();
  const record = { digest: info.digest, sizeBytes: info.sizeBytes, pieceSizeBytes: info.pieceSizeBytes, pieces: info.pieces, createdAtMs: Date.now() };
  const replicate = p.replicate;
  if (!replicate) {
    await p.catalog.addBlob(repo, record, caller);
    return { recordedMs: performance.now() - t0, copiedMs: performance.now() - t0 };
  }
  const inline = bytes && bytes.length === info.sizeBytes && bytes.length <= INLINE_REPLICA_BYTES ? bytes : undefined;
  const abort = new AbortController();
  const offer = inline ? { record: { sizeBytes: record.sizeBytes, pieceSizeBytes: record.pieceSizeBytes, pieces: record.pieces }, bytes: inline } : undefined;
  const copies = replicate(info.digest, AbortSignal.any([signal, abort.signal]), repo, offer);
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
