// The registry's metadata: repositories, tags, manifests, blobs and their piece digests, kept
// in the replicated state so a push to one node is visible on every node. RegistryCatalog is
// the narrow interface the rest of the registry uses; KvRegistryCatalog is its first
// implementation, typed JSON records under `registry/` in the replicated KV written through
// the leader's proposal path (protocol/registry/records.ts has the key layout). It can move to
// typed state tables without its callers changing.
//
// Reads: content-addressed records never change once written, so the local replica answers
// when it has them; a miss, and anything mutable (tags, listings), is read again after a
// linearizable read barrier, so a push acknowledged on node A is seen by a pull on node C.
// Garbage collection (node/registry/gc.ts) removes records nothing references: a replica a
// moment behind may still offer one (a push that relies on it then fails its manifest with
// MANIFEST_BLOB_UNKNOWN, since writes check after a read barrier, and succeeds when repeated).
import type { Caller } from '../cluster/caller.js';
import type { ClusterAccess } from '../cluster/ports.js';
import { OmniError } from '../errors.js';
import type { KvCompare, KvTxnOp } from '../../protocol/cluster/state.js';
import { MAX_COMMAND_BYTES, MAX_TXN_COMPARES, MAX_TXN_OPS } from '../../protocol/cluster/commands.js';
import {
  blobKey,
  manifestKey,
  parseRepoLinkKey,
  parseTagKey,
  readBlobRecord,
  readManifestRecord,
  readTagRecord,
  repoBlobKey,
  repoBlobPrefix,
  repoManifestKey,
  repoManifestPrefix,
  tagKey,
  tagPrefix,
  BLOB_PREFIX,
  MANIFEST_PREFIX,
  REPO_MANIFEST_PREFIX,
  REPO_BLOB_PREFIX,
  TAG_PREFIX,
  fenceOp,
  type BlobRecord,
  type ManifestRecord,
} from '../../protocol/registry/records.js';
import { digestOfHex } from '../../protocol/registry/digest.js';

/** Most entries one listing scans (the replicated state holds at most 100,000 keys). */
const MAX_SCAN = 100_000;

export interface TagEntry {
  repo: string;
  tag: string;
  digest: string;
  updatedAtMs: number;
}

export interface RegistryCatalog {
  /** A blob known to the cluster (not necessarily in any given repository). */
  blob(digest: string): Promise<BlobRecord | undefined>;
  /** A blob linked into `repo`. */
  blobInRepo(repo: string, digest: string): Promise<BlobRecord | undefined>;
  /** A manifest linked into `repo`. */
  manifest(repo: string, digest: string): Promise<ManifestRecord | undefined>;
  /** A manifest known to the cluster, in whatever repository. */
  anyManifest(digest: string): Promise<ManifestRecord | undefined>;
  /** The digest `repo:tag` points to. */
  resolveTag(repo: string, tag: string): Promise<string | undefined>;
  /** Tags of `repo`, sorted (undefined: no such repository). */
  tags(repo: string): Promise<string[] | undefined>;
  /** Every repository that holds a manifest or a blob, sorted. */
  repositories(): Promise<string[]>;
  /** Every tag of every repository (for `omni images ls`). */
  allTags(): Promise<TagEntry[]>;
  /** Manifests linked into `repo`. */
  repoManifests(repo: string): Promise<string[]>;
  /** Records a pushed blob (once for the cluster) and links it into `repo`. */
  addBlob(repo: string, blob: BlobRecord, caller: Caller): Promise<void>;
  /** Links a known blob into `repo` (a cross-repository mount); false when the blob is unknown. */
  linkBlob(repo: string, digest: string, caller: Caller): Promise<boolean>;
  /**
   * Records a manifest in `repo` (and points `tag` at it): every blob it needs must be known
   * (MANIFEST_BLOB_UNKNOWN otherwise) and is linked into `repo`; an index's manifests must be
   * in `repo` (MANIFEST_UNKNOWN otherwise). One transaction.
   */
  putManifest(repo: string, record: ManifestRecord, tag: string | undefined, caller: Caller): Promise<void>;
  /**
   * Blobs (held on their durability target already), manifests and a tag on the last one, in one
   * transaction with the caller's own `extra` compares and puts (KvRegistryCatalog.writeTogether).
   */
  writeTogether(repo: string, parts: { blobs: BlobRecord[]; manifests: ManifestRecord[]; tag?: string }, extra: { compares: { key: string; version: number }[]; ops: KvTxnOp[] }, caller: Caller): Promise<void>;
  /** Unlinks a manifest from `repo` and removes the tags there that point to it. */
  deleteManifest(repo: string, digest: string, caller: Caller): Promise<boolean>;
  deleteTag(repo: string, tag: string, caller: Caller): Promise<boolean>;
  unlinkBlob(repo: string, digest: string, caller: Caller): Promise<boolean>;
}

export type CatalogAccess = Pick<ClusterAccess, 'raft' | 'readBarrier' | 'proposeOk'>;

export class KvRegistryCatalog implements RegistryCatalog {
  constructor(private readonly d: CatalogAccess) {}

  private get state() {
    return this.d.raft.state;
  }

  /** The value of an immutable key: the local replica, else after a read barrier. */
  private async immutable(key: string): Promise<string | undefined> {
    const local = this.state.kvGet(key)?.value;
    if (local !== undefined) return local;
    await this.d.readBarrier();
    return this.state.kvGet(key)?.value;
  }

  private async fresh(key: string): Promise<{ value: string; version: number } | undefined> {
    await this.d.readBarrier();
    return this.state.kvGet(key);
  }

  async blob(digest: string): Promise<BlobRecord | undefined> {
    return readBlobRecord(await this.immutable(blobKey(digest)), digest);
  }

  async blobInRepo(repo: string, digest: string): Promise<BlobRecord | undefined> {
    if ((await this.immutable(repoBlobKey(repo, digest))) === undefined) return undefined;
    return this.blob(digest);
  }

  async manifest(repo: string, digest: string): Promise<ManifestRecord | undefined> {
    if ((await this.immutable(repoManifestKey(repo, digest))) === undefined) return undefined;
    return this.anyManifest(digest);
  }

  async anyManifest(digest: string): Promise<ManifestRecord | undefined> {
    return readManifestRecord(await this.immutable(manifestKey(digest)), digest);
  }

  async resolveTag(repo: string, tag: string): Promise<string | undefined> {
    return readTagRecord((await this.fresh(tagKey(repo, tag)))?.value)?.digest;
  }

  async tags(repo: string): Promise<string[] | undefined> {
    await this.d.readBarrier();
    const tags = this.state.kvList(tagPrefix(repo), MAX_SCAN).flatMap((r) => {
      const k = parseTagKey(r.key.slice(TAG_PREFIX.length));
      return k && k.repo === repo ? [k.tag] : [];
    });
    if (tags.length === 0 && !this.repoExists(repo)) return undefined;
    return tags.sort();
  }

  private repoExists(repo: string): boolean {
    return this.state.kvList(repoManifestPrefix(repo), 1).length > 0 || this.state.kvList(repoBlobPrefix(repo), 1).length > 0;
  }

  async repositories(): Promise<string[]> {
    await this.d.readBarrier();
    const repos = new Set<string>();
    for (const prefix of [REPO_MANIFEST_PREFIX, REPO_BLOB_PREFIX]) {
      for (const r of this.state.kvList(prefix, MAX_SCAN)) {
        const k = parseRepoLinkKey(r.key.slice(prefix.length));
        if (k) repos.add(k.repo);
      }
    }
    return [...repos].sort();
  }

  async allTags(): Promise<TagEntry[]> {
    await this.d.readBarrier();
    return this.state.kvList(TAG_PREFIX, MAX_SCAN).flatMap((r) => {
      const k = parseTagKey(r.key.slice(TAG_PREFIX.length));
      const t = readTagRecord(r.value);
      return k && t ? [{ repo: k.repo, tag: k.tag, digest: t.digest, updatedAtMs: t.updatedAtMs }] : [];
    });
  }

  async repoManifests(repo: string): Promise<string[]> {
    await this.d.readBarrier();
    return this.state.kvList(repoManifestPrefix(repo), MAX_SCAN).flatMap((r) => {
      const k = parseRepoLinkKey(r.key.slice(REPO_MANIFEST_PREFIX.length));
      return k && k.repo === repo ? [k.digest] : [];
    });
  }

  /**
   * Records a pushed blob and links it to `repo`. Decided first from this node's replica, without a
   * read barrier: every record the transaction relies on is compared at its version, so a stale
   * view makes it fail (CONFLICT), never write something wrong; it is then decided again after a
   * barrier. A push thus costs one round through the leader, not two.
   */
  async addBlob(repo: string, blob: BlobRecord, caller: Caller): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      if (attempt > 1) await this.d.readBarrier();
      const ops: KvTxnOp[] = [];
      const compares: KvCompare[] = [];
      const existing = this.state.kvGet(blobKey(blob.digest));
      // Absent (or not a record): written now, unless it exists by then (a concurrent push of the
      // same blob, or this replica behind). Present: it must still be when the link is written.
      if (!readBlobRecord(existing?.value, blob.digest)) ops.push({ op: 'put', key: blobKey(blob.digest), value: JSON.stringify(blob) });
      compares.push({ key: blobKey(blob.digest), version: existing?.version ?? 0 });
      // The link is written even when it exists: its time says the blob was just pushed again, so
      // garbage collection keeps it through its grace period (its manifest is on the way).
      ops.push({ op: 'put', key: repoBlobKey(repo, blob.digest), value: JSON.stringify({ createdAtMs: blob.createdAtMs }) }, fenceOp());
      try {
        await this.d.proposeOk({ type: 'kv.txn', compares, ops }, caller);
        return;
      } catch (err) {
        if (!(err instanceof OmniError && err.code === 'CONFLICT') || attempt >= 3) throw err;
      }
    }
  }

  async linkBlob(repo: string, digest: string, caller: Caller): Promise<boolean> {
    await this.d.readBarrier();
    const rec = this.state.kvGet(blobKey(digest));
    if (!readBlobRecord(rec?.value, digest)) return false;
    if (this.state.kvGet(repoBlobKey(repo, digest))) return true;
    // The blob must still exist when the link is written.
    await this.d.proposeOk({ type: 'kv.txn', compares: [{ key: blobKey(digest), version: rec!.version }], ops: [{ op: 'put', key: repoBlobKey(repo, digest), value: JSON.stringify({ createdAtMs: Date.now() }) }, fenceOp()] }, caller);
    return true;
  }

  async putManifest(repo: string, record: ManifestRecord, tag: string | undefined, caller: Caller): Promise<void> {
    // Decided first from this node's replica without a read barrier (the transaction compares every
    // record it relies on, so a stale view fails, never writes wrong); when that view lacks a record
    // the manifest needs, or the transaction fails, decided again after a barrier. Two pushes of
    // the same manifest at once (parallel builds sharing a cached dependency layer) both try to
    // create its record: the one that lost the race is recomputed from the state the winner wrote,
    // where the record exists (so it only links and tags).
    for (let attempt = 1; ; attempt++) {
      try {
        if (attempt > 1) await this.d.readBarrier();
        if (await this.putManifestOnce(repo, record, tag, caller, attempt === 1)) return;
      } catch (err) {
        const retry = err instanceof OmniError && (attempt === 1 ? ['CONFLICT', 'MANIFEST_BLOB_UNKNOWN', 'MANIFEST_UNKNOWN'].includes(err.code) : err.code === 'CONFLICT' && /is at version \d+, the transaction expected \d+$/.test(err.message));
        if (!retry || attempt >= 3) throw err;
      }
    }
  }

  /**
   * One attempt of putManifest from the replica as it is. `optimistic` (no barrier before it):
   * records found present are compared at their version (their content is fixed by their digest,
   * so only their existence matters), a tag is always written, and an attempt that would write
   * nothing returns false (it cannot tell a stale view from a done push). True once done.
   */
  private async putManifestOnce(repo: string, record: ManifestRecord, tag: string | undefined, caller: Caller, optimistic: boolean): Promise<boolean> {
    const w = new TxnBuilder(optimistic);
    this.manifestOps(w, repo, record, tag);
    if (w.ops.length === 0) return !optimistic;
    w.ops.push(fenceOp());
    await this.d.proposeOk({ type: 'kv.txn', compares: w.compares, ops: w.ops }, caller);
    return true;
  }

  /** A blob's record (unless there) and its link into `repo`, into `w` (addBlob's operations). */
  private blobOps(w: TxnBuilder, repo: string, blob: BlobRecord): void {
    const existing = this.state.kvGet(blobKey(blob.digest));
    if (!readBlobRecord(existing?.value, blob.digest)) w.put(blobKey(blob.digest), JSON.stringify(blob));
    w.compare(blobKey(blob.digest), existing?.version ?? 0);
    w.put(repoBlobKey(repo, blob.digest), JSON.stringify({ createdAtMs: blob.createdAtMs }));
    w.blobs.add(blob.digest);
  }

  /** A manifest's record, its links and its tag, into `w`; what `w` already writes counts as there. */
  private manifestOps(w: TxnBuilder, repo: string, record: ManifestRecord, tag: string | undefined): void {
    for (const d of record.blobs) {
      if (w.blobs.has(d)) continue; // recorded and linked by this transaction
      const rec = this.state.kvGet(blobKey(d));
      if (!readBlobRecord(rec?.value, d)) throw new OmniError('MANIFEST_BLOB_UNKNOWN', `blob ${d} is not in the registry: push it before the manifest`, { digest: d });
      w.compare(blobKey(d), rec!.version);
      const link = this.state.kvGet(repoBlobKey(repo, d));
      if (!link) w.put(repoBlobKey(repo, d), JSON.stringify({ createdAtMs: record.createdAtMs }));
      else w.relyOn(link.key, link.version);
    }
    for (const d of record.manifests) {
      if (w.manifests.has(d)) continue; // written by this transaction
      const link = this.state.kvGet(repoManifestKey(repo, d));
      const rec = this.state.kvGet(manifestKey(d));
      if (!link || !readManifestRecord(rec?.value, d)) throw new OmniError('MANIFEST_UNKNOWN', `manifest ${d} listed by the index is not in ${repo}: push it first`, { digest: d });
      w.compare(repoManifestKey(repo, d), link.version);
      w.relyOn(rec!.key, rec!.version);
    }
    const existing = this.state.kvGet(manifestKey(record.digest));
    if (!readManifestRecord(existing?.value, record.digest)) {
      w.put(manifestKey(record.digest), JSON.stringify(record));
      w.compare(manifestKey(record.digest), existing?.version ?? 0);
    } else w.relyOn(existing!.key, existing!.version);
    const link = this.state.kvGet(repoManifestKey(repo, record.digest));
    if (!link) w.put(repoManifestKey(repo, record.digest), JSON.stringify({ createdAtMs: record.createdAtMs }));
    else w.relyOn(link.key, link.version);
    w.manifests.add(record.digest);
    if (tag !== undefined) {
      // From a view that may be stale the tag is always written: a version compare cannot show
      // that it still names this manifest (a tag deleted and made again starts at version 1).
      const t = this.state.kvGet(tagKey(repo, tag));
      if (w.optimistic || readTagRecord(t?.value)?.digest !== record.digest) w.put(tagKey(repo, tag), JSON.stringify({ digest: record.digest, updatedAtMs: record.createdAtMs }));
    }
  }

  /**
   * Blobs, then manifests (an index after those it lists) with the last one tagged `tag`, written
   * in one transaction together with `extra` (the caller's own compares and puts: a sync
   * workspace's record, compare-and-set). Decided from this node's replica first, then again after
   * a read barrier when that fails (as putManifest). A failed compare of `extra` is the caller's:
   * CONFLICT with `extraConflict: true` in its detail, not retried.
   */
  async writeTogether(repo: string, parts: { blobs: BlobRecord[]; manifests: ManifestRecord[]; tag?: string }, extra: { compares: { key: string; version: number }[]; ops: KvTxnOp[] }, caller: Caller): Promise<void> {
    const extraConflict = () => {
      for (const c of extra.compares) {
        const now = this.state.kvMeta(c.key)?.version ?? 0; // the value may live on disk only
        if (now !== c.version) return new OmniError('CONFLICT', `${c.key} is at version ${now}, the transaction expected ${c.version}`, { extraConflict: true, key: c.key });
      }
      return undefined;
    };
    for (let attempt = 1; ; attempt++) {
      if (attempt > 1) await this.d.readBarrier();
      const stale = extraConflict();
      if (stale && attempt > 1) throw stale;
      const w = new TxnBuilder(attempt === 1);
      try {
        for (const b of parts.blobs) this.blobOps(w, repo, b);
        parts.manifests.forEach((m, i) => this.manifestOps(w, repo, m, i === parts.manifests.length - 1 ? parts.tag : undefined));
      } catch (err) {
        if (attempt === 1 && err instanceof OmniError && ['MANIFEST_BLOB_UNKNOWN', 'MANIFEST_UNKNOWN'].includes(err.code)) continue;
        throw err;
      }
      for (const c of extra.compares) w.compare(c.key, c.version);
      w.ops.push(...extra.ops, fenceOp());
      // Over what one transaction may hold: decided again after a barrier (no optimistic
      // compares: about half as many), else TOO_LARGE (the caller writes it the separate way).
      const bytes = w.ops.reduce((n, o) => n + o.key.length + ('value' in o ? o.value.length * 1.25 : 0), 0) + 96 * w.compares.length;
      if (w.compares.length > MAX_TXN_COMPARES || w.ops.length > MAX_TXN_OPS || bytes > MAX_COMMAND_BYTES * 0.75) {
        if (attempt === 1) continue;
        throw new OmniError('TOO_LARGE', `${repo}: ${w.compares.length} compares, ${w.ops.length} operations, ~${Math.round(bytes)} bytes: over one transaction`);
      }
      try {
        await this.d.proposeOk({ type: 'kv.txn', compares: w.compares, ops: w.ops }, caller);
        return;
      } catch (err) {
        if (!(err instanceof OmniError && err.code === 'CONFLICT') || attempt >= 3) throw err;
      }
    }
  }

  async deleteManifest(repo: string, digest: string, caller: Caller): Promise<boolean> {
    await this.d.readBarrier();
    const link = this.state.kvGet(repoManifestKey(repo, digest));
    if (!link) return false;
    const ops: KvTxnOp[] = [{ op: 'delete', key: link.key }];
    const compares: KvCompare[] = [{ key: link.key, version: link.version }];
    for (const r of this.state.kvList(tagPrefix(repo), MAX_SCAN)) {
      if (readTagRecord(r.value)?.digest === digest) {
        ops.push({ op: 'delete', key: r.key });
        compares.push({ key: r.key, version: r.version });
      }
    }
    await this.d.proposeOk({ type: 'kv.txn', compares, ops: ops.slice(0, 1000) }, caller);
    return true;
  }

  async deleteTag(repo: string, tag: string, caller: Caller): Promise<boolean> {
    await this.d.readBarrier();
    const r = this.state.kvGet(tagKey(repo, tag));
    if (!r) return false;
    await this.d.proposeOk({ type: 'kv.txn', compares: [{ key: r.key, version: r.version }], ops: [{ op: 'delete', key: r.key }] }, caller);
    return true;
  }

  async unlinkBlob(repo: string, digest: string, caller: Caller): Promise<boolean> {
    await this.d.readBarrier();
    const r = this.state.kvGet(repoBlobKey(repo, digest));
    if (!r) return false;
    await this.d.proposeOk({ type: 'kv.txn', compares: [{ key: r.key, version: r.version }], ops: [{ op: 'delete', key: r.key }] }, caller);
    return true;
  }
}

/** Every blob record in the catalog's state (for `omni images`; a local replica read). */
export function listBlobRecords(state: CatalogAccess['raft']['state']): BlobRecord[] {
  return state.kvList(BLOB_PREFIX, MAX_SCAN).flatMap((r) => {
    const b = readBlobRecord(r.value, digestOfHex(r.key.slice(BLOB_PREFIX.length)));
    return b ? [b] : [];
  });
}

/** Every manifest record (local replica read). */
export function listManifestRecords(state: CatalogAccess['raft']['state']): ManifestRecord[] {
  return state.kvList(MANIFEST_PREFIX, MAX_SCAN).flatMap((r) => {
    const m = readManifestRecord(r.value, digestOfHex(r.key.slice(MANIFEST_PREFIX.length)));
    return m ? [m] : [];
  });
}

/** The compares and operations of one catalog transaction being put together (no key twice). */
class TxnBuilder {
  readonly compares: KvCompare[] = [];
  readonly ops: KvTxnOp[] = [];
  /** Blobs and manifests this transaction records (what follows in it may rely on them). */
  readonly blobs = new Set<string>();
  readonly manifests = new Set<string>();
  private readonly compared = new Set<string>();
  private readonly written = new Set<string>();

  /** `optimistic`: decided from a view that may be stale (no barrier before it). */
  constructor(readonly optimistic: boolean) {}

  compare(key: string, version: number): void {
    if (this.compared.has(key)) return;
    this.compared.add(key);
    this.compares.push({ key, version });
  }

  /** A key relied on being there as it is: compared when the view may be stale. */
  relyOn(key: string, version: number): void {
    if (this.optimistic) this.compare(key, version);
  }

  put(key: string, value: string): void {
    if (this.written.has(key)) return;
    this.written.add(key);
    this.ops.push({ op: 'put', key, value });
  }
}
