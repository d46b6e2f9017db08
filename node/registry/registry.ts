// The registry on one node: its blob store, upload sessions, the replicated catalog, the /v2/
// listener, and (given by the daemon) the way to bring a blob from peers. daemon.ts builds one
// with the narrow parts it needs and starts it; nothing here knows the daemon.
import { join } from 'node:path';
import type { Logger } from '../logger.js';
import type { ClusterAccess } from '../cluster/ports.js';
import type { ApiTls } from '../api/tls.js';
import { OmniError } from '../errors.js';
import type { BlobRecord } from '../../protocol/registry/records.js';
import { BlobStore, type BlobStoreOptions } from './blob-store.js';
import { UploadSessions } from './uploads.js';
import { KvRegistryCatalog, type RegistryCatalog } from './catalog.js';
import { OciApi } from './oci-api.js';
import { RegistryServer } from './registry-server.js';

/** The default `--registry` address: loopback, for this node's own Docker engine. */
export const DEFAULT_REGISTRY_ADDR = '127.0.0.1:5000';
const UPLOAD_SWEEP_MS = 60_000;

export interface RegistryDeps {
  cluster: Pick<ClusterAccess, 'raft' | 'readBarrier' | 'proposeOk'>;
  log: Logger;
  dataDir: string;
  /** Overrides of the store's limits (tests: a small piece size, a full disk). */
  store?: Partial<Omit<BlobStoreOptions, 'dir' | 'log'>>;
}

/** Brings a blob the catalog knows into the local store. */
export type BlobFetcher = (record: BlobRecord, signal: AbortSignal) => Promise<void>;

export class Registry {
  readonly catalog: RegistryCatalog;
  server: RegistryServer | undefined;
  private uploads!: UploadSessions;
  private sweepTimer: NodeJS.Timeout | undefined;
  private fetcher: BlobFetcher = async (rec) => {
    throw new OmniError('BLOB_UNKNOWN', `blob ${rec.digest} is not on this node`);
  };
  private readonly addedListeners: ((digest: string) => void)[] = [];
  private readonly removedListeners: ((digest: string, why: 'deleted' | 'corrupt') => void)[] = [];

  private constructor(
    private readonly d: RegistryDeps,
    readonly store: BlobStore,
  ) {
    this.catalog = new KvRegistryCatalog(d.cluster);
  }

  static async open(d: RegistryDeps): Promise<Registry> {
    let reg: Registry | undefined;
    const store = await BlobStore.open({
      dir: join(d.dataDir, 'registry'),
      log: d.log,
      ...d.store,
      onAdded: (digest) => reg?.addedListeners.forEach((f) => f(digest)),
      onRemoved: (digest, why) => reg?.removedListeners.forEach((f) => f(digest, why)),
    });
    reg = new Registry(d, store);
    reg.uploads = new UploadSessions(store);
    return reg;
  }

  /** Listeners for blobs arriving in or leaving this node's store (the holdings gossip). */
  onBlobAdded(f: (digest: string) => void): void {
    this.addedListeners.push(f);
  }

  onBlobRemoved(f: (digest: string, why: 'deleted' | 'corrupt') => void): void {
    this.removedListeners.push(f);
  }

  /** How blobs missing here are fetched (the peer-to-peer transfer). */
  setFetcher(f: BlobFetcher): void {
    this.fetcher = f;
  }

  /** Makes sure a blob the catalog knows is in the local store. */
  async ensureLocal(record: BlobRecord, signal: AbortSignal): Promise<void> {
    if (this.store.has(record.digest)) return;
    await this.fetcher(record, signal);
  }

  /** Serves /v2/ on HOST:PORT (HTTP on loopback, else HTTPS with the node certificate). */
  async listen(hostPort: string, tls: ApiTls): Promise<void> {
    const api = new OciApi({ catalog: this.catalog, store: this.store, uploads: this.uploads, fetchBlob: (rec, signal) => this.ensureLocal(rec, signal), log: this.d.log });
    const server = new RegistryServer({ api, tokens: () => this.d.cluster.raft.state.tokens(), log: this.d.log });
    await server.listen(hostPort, tls);
    this.server = server;
    this.sweepTimer = setInterval(() => void this.uploads.sweep().catch(() => undefined), UPLOAD_SWEEP_MS);
    this.sweepTimer.unref();
    this.d.log.info(`registry: serving /v2/ on ${server.url} (${this.store.held().length} blobs on this node)`);
  }

  async stop(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    await this.server?.close();
    await this.uploads?.closeAll();
  }
}
