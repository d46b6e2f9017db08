// The one-request commit of a small sync change (`omni sync` after a few files changed): the
// change's blobs, its new page manifests, the workspace index tagged `ws-<revision>` and the
// workspace record `sync/<app>` (compare-and-set on its version), in one request and one Raft
// transaction, instead of an upload per blob (each its own catalog transaction), a PUT per
// manifest and a KV write — four rounds through the leader one after the other (issue 16: a
// one-file sync). node/sync/engine.ts decides when a change is small enough; anything larger goes
// through /v2/ as before. The blobs are kept and hashed here while they are sent whole to their
// durability target (their catalog records go in the one transaction, with the rest; a member of an
// earlier version gets a blob the way a /v2/ push sends it), all before that transaction, so a
// workspace record never names contents that only one node holds.
//
//   POST /v1/sync/<app>/commit (admin token), body protocol/sync/commit.ts: the header (JSON:
//     expectedVersion, record, blobs [{digest, size}], manifests [{digest, mediaType, size}], tag),
//     then the blobs' bytes, then the manifests' (the last one is the index the tag names).
//   200 {"committed": true} (and "untagged": true when it removed `untag`); 409 CONFLICT when the record is no longer at expectedVersion (another
//   sync won: plan again); 400 for a malformed body, a digest or manifest that does not check
//   (nothing kept); 413 for a body over the limit or a change whose transaction would be over
//   Raft's (the client then sends it the separate way); 501 on a node without a registry (the same).
import type { ApiServer } from './server.js';
import { OmniError } from '../errors.js';
import { readBody } from './input.js';
import type { Caller } from '../cluster/caller.js';
import type { Logger } from '../logger.js';
import { BlobHasher, type BlobStore } from '../registry/blob-store.js';
import type { RegistryCatalog } from '../registry/catalog.js';
import { manifestRecord } from '../registry/oci-api.js';
import { tagKey } from '../../protocol/registry/records.js';
import type { ReplicaOffer } from '../registry/piece-transfer.js';
import { recordPushedBlob } from '../registry/pushed-blob.js';
import { APP_RE, recordKey, repoOf } from '../sync/engine.js';
import { decodeSyncCommit, SyncCommitError, SYNC_COMMIT_MAX_BYTES } from '../../protocol/sync/commit.js';
import { createHash } from 'node:crypto';

/** How long the copies of the blobs may take before the commit fails (nothing recorded then). */
const COPY_TIMEOUT_MS = 60_000;

export interface SyncRoutesDeps {
  /** This node's registry parts; undefined with --registry off. */
  syncRegistry():
    | {
        store: Pick<BlobStore, 'commitBytes' | 'pieceSizeForSize'>;
        catalog: Pick<RegistryCatalog, 'writeTogether' | 'addBlob'>;
        /** Resolves once the blob is on its durability target (node/registry/registry.ts). */
        replicate(digest: string, signal: AbortSignal, repo: string, offer?: ReplicaOffer, o?: { selfHolds?: boolean }): Promise<void>;
      }
    | undefined;
  log: Logger;
}

const sha256 = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');

export function registerSyncRoutes(api: ApiServer, d: SyncRoutesDeps): void {
  // (the path parameter arrives decoded: ApiServer decodes it)
  api.route('POST', /^\/v1\/sync\/([^/]+)\/commit$/, async (req, _url, [app], res, caller) => {
    // A client that goes away stops the copies. The response's close, not the request's: a request
    // closes as soon as its body has been read.
    const gone = new AbortController();
    res.once('close', () => gone.abort());
    const body = await readBody(req, SYNC_COMMIT_MAX_BYTES, `a sync commit is at most ${SYNC_COMMIT_MAX_BYTES} bytes (larger changes go through /v2/)`);
    return [200, await commitSyncChange(d, app, body, caller, gone.signal)];
  });
}

/** The commit itself (exported for tests): checked, kept, copied, then one transaction. */
export async function commitSyncChange(d: SyncRoutesDeps, app: string, body: Buffer, caller: Caller, clientGone: AbortSignal): Promise<{ committed: true; untagged?: true }> {
  if (!APP_RE.test(app) || app.length > 100) throw new OmniError('BAD_REQUEST', `not an app name: ${app.slice(0, 120)}`);
  const reg = d.syncRegistry();
  // NOT_IMPLEMENTED: the client sends the change the separate way (through a registry elsewhere)
  if (!reg) throw new OmniError('NOT_IMPLEMENTED', 'this node runs no registry (omnid --registry off): the change goes through /v2/');
  const t0 = performance.now();
  let decoded: ReturnType<typeof decodeSyncCommit>;
  try {
    decoded = decodeSyncCommit(body);
  } catch (err) {
    if (err instanceof SyncCommitError) throw new OmniError('BAD_REQUEST', err.message);
    throw err;
  }
  const { header, blobs, manifests } = decoded;
  const repo = repoOf(app);
  // The record names the index this request tags, at the revision the tag says: a workspace record
  // never points at an index garbage collection could take.
  let rec: { index?: unknown; revision?: unknown };
  try {
    rec = JSON.parse(header.record) as { index?: unknown; revision?: unknown };
  } catch {
    throw new OmniError('BAD_REQUEST', 'sync commit: the record is not JSON');
  }
  if (rec?.index !== header.manifests.at(-1)!.digest || header.tag !== `ws-${String(rec.revision)}`) throw new OmniError('BAD_REQUEST', 'sync commit: the record must name the last manifest (the index) and the revision of its tag');
  // Everything is checked before anything is kept.
  const infos = blobs.map((bytes, i) => {
    const hasher = new BlobHasher(reg.store.pieceSizeForSize(bytes.length));
    hasher.update(bytes);
    const info = hasher.result();
    if (info.digest !== header.blobs[i].digest) throw new OmniError('DIGEST_INVALID', `blob ${header.blobs[i].digest}: the bytes sent are ${info.digest}`);
    return info;
  });
  const now = Date.now();
  const records = manifests.map((bytes, i) => {
    const m = header.manifests[i];
    if (sha256(bytes) !== m.digest) throw new OmniError('DIGEST_INVALID', `manifest ${m.digest}: the bytes sent have another digest`);
    return manifestRecord(bytes, m.digest, m.mediaType);
  });
  // Kept here while each blob is sent whole to its copies (this node counted as a holder: it is
  // storing it; a small blob inside the request, a larger one streamed): a member of this version
  // keeps the bytes without a catalog record, so the one transaction below records them with the
  // rest (no Raft round per blob). A copy that fails that way (a member of an earlier version
  // refuses bytes without a record) is made as a /v2/ push of the blob is, once it is stored here
  // (node/registry/pushed-blob.ts: recorded while copied, and such a member asked again, the plain
  // way, once the record is written). All of them on their durability target before the record
  // below names them.
  let storedMs = 0;
  const storing = Promise.all(blobs.map((bytes, i) => reg.store.commitBytes(infos[i].digest, bytes, infos[i]))).then(() => void (storedMs = performance.now() - t0));
  storing.catch(() => undefined);
  const copying = AbortSignal.any([AbortSignal.timeout(COPY_TIMEOUT_MS), clientGone]);
  const inline = await Promise.allSettled([
    storing,
    ...blobs.map((bytes, i) => reg.replicate(infos[i].digest, copying, repo, { record: { sizeBytes: infos[i].sizeBytes, pieceSizeBytes: infos[i].pieceSizeBytes, pieces: infos[i].pieces }, bytes }, { selfHolds: true })),
  ]);
  if (inline[0].status === 'rejected') throw inline[0].reason;
  const plain = { catalog: reg.catalog, replicate: (digest: string, signal: AbortSignal, r: string) => reg.replicate(digest, signal, r, undefined, { selfHolds: true }) };
  const again = infos.filter((_, i) => inline[i + 1].status === 'rejected');
  if (copying.aborted) throw new OmniError(clientGone.aborted ? 'ABORTED' : 'TIMEOUT', `sync commit: the copies of ${app}'s change ${clientGone.aborted ? 'were stopped (the client went away)' : `took over ${COPY_TIMEOUT_MS} ms`}`);
  await Promise.all(again.map((info) => recordPushedBlob(plain, repo, info, caller, copying)));
  const copied = performance.now();
  const key = recordKey(app);
  await reg.catalog.writeTogether(
    repo,
    { blobs: infos.map((b) => ({ digest: b.digest, sizeBytes: b.sizeBytes, pieceSizeBytes: b.pieceSizeBytes, pieces: b.pieces, createdAtMs: now })), manifests: records, tag: header.tag },
    // the revision that falls out of the kept ones loses its tag here (not in a request of its own after the commit)
    { compares: [{ key, version: header.expectedVersion }], ops: [{ op: 'put', key, value: header.record }, ...(header.untag ? [{ op: 'delete' as const, key: tagKey(repo, header.untag) }] : [])] },
    caller,
  );
  d.log.debug(`sync: ${app} ${header.tag} committed: ${blobs.length} blobs (${again.length} copied the plain way), ${manifests.length} manifests (ms: stored ${storedMs.toFixed(1)}, stored and copied ${(copied - t0).toFixed(1)}, recorded ${(performance.now() - copied).toFixed(1)})`);
  // `untagged`: the client need not remove the old tag itself (a node of an earlier version does not say it)
  return { committed: true, ...(header.untag ? { untagged: true as const } : {}) };
}
