// The registry a build running on a node uses (node/apps/drivers/forge.ts): the operations the
// builder needs (BuildRegistry, which the CLI's /v2/ client also has), done in process on this
// node's own blob store and the replicated catalog, instead of through /v2/ with a push token —
// the node has no admin token, only its pull credential. Blobs this node lacks are brought from
// the peers (the fetcher behind ensureLocal); a blob written here is recorded in the catalog and
// copied to as many nodes as a push through /v2/ would be (replicate) before the write returns
// (node/registry/pushed-blob.ts: the record written while the copies are made).
// Catalog writes are proposed as this node (caller SELF): the leader allows them while a build
// task is placed on it (protocol/cluster/authz.ts). It gets the registry's parts, not the daemon.
import { createWriteStream } from 'node:fs';
import { copyFile, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { OmniError } from '../errors.js';
import type { Caller } from '../cluster/caller.js';
import { BlobHasher, type BlobStore } from '../registry/blob-store.js';
import { recordPushedBlob } from '../registry/pushed-blob.js';
import type { ReplicaOffer } from '../registry/piece-transfer.js';
import type { RegistryCatalog } from '../registry/catalog.js';
import { manifestRecord } from '../registry/oci-api.js';
import type { BlobRecord } from '../../protocol/registry/records.js';
import { parseManifestReference } from '../../protocol/registry/reference.js';
import { isDigest } from '../../protocol/registry/digest.js';
import type { BuildRegistry } from './builder.js';

export interface NodeRegistryParts {
  catalog: RegistryCatalog;
  store: Pick<BlobStore, 'has' | 'tempPath' | 'commit' | 'read' | 'pieceSizeForSize'>;
  /** Brings a blob the catalog knows into this node's store (from peers). */
  ensureLocal(record: BlobRecord, signal: AbortSignal): Promise<void>;
  /** Resolves once a blob written here into `repo` is on its durability target of nodes (given the record, and a small blob's bytes). */
  replicate?(digest: string, signal: AbortSignal, repo: string, offer?: ReplicaOffer): Promise<void>;
  /** Whose writes these are (the node itself: SELF). */
  caller: Caller;
  signal?: AbortSignal;
}

const sha256 = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

export class NodeBuildRegistry implements BuildRegistry {
  constructor(private readonly p: NodeRegistryParts) {}

  private get signal(): AbortSignal {
    return this.p.signal ?? new AbortController().signal;
  }

  async hasBlob(repo: string, digest: string): Promise<boolean> {
    return (await this.p.catalog.blobInRepo(repo, digest)) !== undefined;
  }

  async mountBlob(repo: string, digest: string): Promise<boolean> {
    return this.p.catalog.linkBlob(repo, digest, this.p.caller);
  }

  /** Stores the file as `digest` (checked by the store), records it in `repo` and replicates it. */
  async uploadBlob(repo: string, digest: string, path: string): Promise<void> {
    if (!isDigest(digest)) throw new OmniError('DIGEST_INVALID', `${digest.slice(0, 80)} is not a sha256 digest`);
    const tmp = this.p.store.tempPath();
    await copyFile(path, tmp);
    const info = await this.p.store.commit(tmp, digest).catch(async (err: unknown) => {
      await rm(tmp, { force: true });
      throw err;
    });
    await recordPushedBlob(this.p, repo, info, this.p.caller, this.signal);
  }

  /** Stores bytes held in memory as `digest` (hashed from memory, not read back), records it in `repo` and replicates it. */
  async uploadBytes(repo: string, digest: string, bytes: Buffer): Promise<void> {
    if (!isDigest(digest)) throw new OmniError('DIGEST_INVALID', `${digest.slice(0, 80)} is not a sha256 digest`);
    const hasher = new BlobHasher(this.p.store.pieceSizeForSize(bytes.length));
    hasher.update(bytes);
    const tmp = this.p.store.tempPath();
    await writeFile(tmp, bytes, { mode: 0o600 });
    const info = await this.p.store.commit(tmp, digest, undefined, { hashed: hasher.result() }).catch(async (err: unknown) => {
      await rm(tmp, { force: true });
      throw err;
    });
    await recordPushedBlob(this.p, repo, info, this.p.caller, this.signal, bytes);
  }

  /** Writes a blob of `repo` to `dest` (fetched from peers first when this node lacks it); its digest is checked. */
  async downloadBlob(repo: string, digest: string, dest: string): Promise<number> {
    const rec = await this.p.catalog.blobInRepo(repo, digest);
    if (!rec) throw new OmniError('NOT_FOUND', `blob ${digest} is not in repository ${repo}`);
    if (!this.p.store.has(digest)) await this.p.ensureLocal(rec, this.signal);
    const hash = createHash('sha256');
    let size = 0;
    const store = this.p.store;
    async function* chunks() {
      for await (const c of store.read(digest)) {
        hash.update(c);
        size += c.length;
        yield c;
      }
    }
    await pipeline(Readable.from(chunks()), createWriteStream(dest), { signal: this.signal });
    if ('sha256:' + hash.digest('hex') !== digest) {
      await rm(dest, { force: true });
      throw new OmniError('BLOB_CORRUPT', `blob ${digest} read back with other content`);
    }
    return size;
  }

  async manifest(repo: string, digest: string): Promise<{ bytes: Buffer; mediaType: string }> {
    const m = await this.p.catalog.manifest(repo, digest);
    if (!m) throw new OmniError('NOT_FOUND', `manifest ${repo}@${digest} is not in the registry`);
    const bytes = Buffer.from(m.content, 'utf8');
    if (sha256(bytes) !== digest) throw new OmniError('DIGEST_INVALID', `the catalog holds manifest ${digest} with other content`);
    return { bytes, mediaType: m.mediaType };
  }

  resolveTag(repo: string, tag: string): Promise<string | undefined> {
    return this.p.catalog.resolveTag(repo, tag);
  }

  /** Records a manifest (every blob it names must be known) under its digest, and `ref` when that is a tag. */
  /** Removes a tag as this node (the leader may refuse it: a member's writes to the registry are puts). */
  async deleteTag(repo: string, tag: string): Promise<boolean> {
    return this.p.catalog.deleteTag(repo, tag, this.p.caller);
  }

  async putManifest(repo: string, ref: string, bytes: Buffer, mediaType: string): Promise<void> {
    const target = parseManifestReference(ref);
    if (target.kind === 'invalid') throw new OmniError(target.code, target.message);
    const digest = sha256(bytes);
    if (target.kind === 'digest' && target.digest !== digest) throw new OmniError('DIGEST_INVALID', `the manifest's digest is ${digest}, not ${target.digest}`);
    await this.p.catalog.putManifest(repo, manifestRecord(bytes, digest, mediaType), target.kind === 'tag' ? target.tag : undefined, this.p.caller);
  }
}

