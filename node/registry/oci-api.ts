// The OCI distribution API (`/v2/`, distribution-spec 1.1) every node serves: pull manifests by
// tag or digest and blobs (with Range), push blobs (monolithic, or POST + PATCH chunks + PUT)
// and manifests, cross-repository mounts, tags list, catalog, referrers, delete. Bytes go to and
// come from this node's blob store; metadata to and from the replicated catalog; a blob the
// cluster knows but this node lacks is fetched from peers first (fetchBlob).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createHash } from 'node:crypto';
import { OmniError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Caller } from '../cluster/caller.js';
import type { BlobStore } from './blob-store.js';
import { INLINE_REPLICA_BYTES, type ReplicaOffer } from './piece-transfer.js';
import { recordPushedBlob } from './pushed-blob.js';
import type { UploadSessions, UploadSession } from './uploads.js';
import type { RegistryCatalog } from './catalog.js';
import { checkDigest } from '../../protocol/registry/digest.js';
import { isRepositoryName, parseManifestReference } from '../../protocol/registry/reference.js';
import { parseManifest, MAX_MANIFEST_BYTES } from '../../protocol/registry/manifest.js';
import { OCI_INDEX } from '../../protocol/registry/media-types.js';
import { parseRangeHeader, uploadRangeHeader } from '../../protocol/registry/http-ranges.js';
import { platformsOf, type BlobRecord, type ManifestRecord } from '../../protocol/registry/records.js';

/** Entries in one tags or catalog page when the client does not say (`n`). */
const DEFAULT_PAGE = 1000;
const MAX_PAGE = 10_000;

export interface OciApiDeps {
  catalog: RegistryCatalog;
  store: BlobStore;
  uploads: UploadSessions;
  /** Brings a blob the catalog knows into the local store (from peers); throws when it cannot. */
  fetchBlob(record: BlobRecord, signal: AbortSignal): Promise<void>;
  /**
   * Resolves once a blob pushed here into `repo` is on enough nodes (its durability target); with
   * an offer, the other nodes take the record (and small bytes) from it, not from the catalog.
   */
  replicate?(digest: string, signal: AbortSignal, repo: string, offer?: ReplicaOffer): Promise<void>;
  log: Logger;
}

/** A request as the router hands it over, already authenticated. */
export interface OciRequest {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  /** The writes' caller (admins); undefined for a pull-only principal. */
  caller: Caller | undefined;
}

export interface Route {
  method: string;
  pattern: RegExp;
  /** A write (needs push rights). */
  write: boolean;
  handle: (r: OciRequest, params: string[]) => Promise<void>;
}

export class HttpAnswer {
  constructor(
    readonly status: number,
    readonly headers: Record<string, string | number> = {},
    readonly body?: Uint8Array | string,
  ) {}
}

function digestParam(s: string, code = 'DIGEST_INVALID'): string {
  const d = checkDigest(s);
  if (!d.ok) throw new OmniError(d.code === 'UNSUPPORTED' ? 'UNSUPPORTED' : code, d.message);
  return d.digest;
}

function repoParam(s: string): string {
  if (!isRepositoryName(s)) throw new OmniError('NAME_INVALID', `invalid repository name ${JSON.stringify(s.slice(0, 200))}`);
  return s;
}

function json(status: number, body: unknown, headers: Record<string, string | number> = {}): HttpAnswer {
  return new HttpAnswer(status, { 'content-type': 'application/json', ...headers }, JSON.stringify(body));
}

function needCaller(r: OciRequest): Caller {
  if (!r.caller) throw new OmniError('DENIED', 'this token may only pull');
  return r.caller;
}

async function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) throw new OmniError('PAYLOAD_TOO_LARGE', `the body of ${declared} bytes exceeds ${maxBytes} bytes`);
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > maxBytes) throw new OmniError('PAYLOAD_TOO_LARGE', `the body exceeds ${maxBytes} bytes`);
    parts.push(c as Buffer);
  }
  return Buffer.concat(parts);
}

/** A page of a sorted list: `n` entries after `last` (distribution-spec pagination). */
function page(all: string[], url: URL): { items: string[]; next?: string } {
  const nRaw = url.searchParams.get('n');
  const last = url.searchParams.get('last');
  let n = DEFAULT_PAGE;
  if (nRaw !== null) {
    if (!/^\d{1,6}$/.test(nRaw)) throw new OmniError('UNSUPPORTED', 'n must be a non-negative integer');
    n = Math.min(MAX_PAGE, Number(nRaw));
  }
  const from = last === null ? all : all.filter((x) => x > last);
  const items = from.slice(0, n);
  return { items, ...(from.length > n && n > 0 ? { next: items[items.length - 1] } : {}) };
}

function contentLength(req: IncomingMessage): number | undefined {
  const v = req.headers['content-length'];
  if (v === undefined) return undefined;
  if (!/^\d{1,16}$/.test(v)) throw new OmniError('SIZE_INVALID', 'malformed Content-Length');
  return Number(v);
}

/**
 * The catalog record of a pushed manifest (its bytes already checked against `digest`): parsed and
 * validated (MANIFEST_INVALID and the parser's codes otherwise). Also used by Forge's in-process
 * registry on a node (node/forge/node-registry.ts).
 */
export function manifestRecord(bytes: Buffer, digest: string, contentType: string | undefined): ManifestRecord {
  const parsed = parseManifest(bytes, contentType);
  if (!parsed.ok) throw new OmniError(parsed.code, parsed.message);
  const content = bytes.toString('utf8');
  if (!Buffer.from(content, 'utf8').equals(bytes)) throw new OmniError('MANIFEST_INVALID', 'the manifest is not valid UTF-8');
  const m = parsed.manifest;
  return {
    digest,
    mediaType: m.mediaType,
    sizeBytes: bytes.length,
    content,
    blobs: m.blobs.map((b) => b.digest),
    manifests: m.manifests.map((x) => x.digest),
    ...(m.subject ? { subject: m.subject.digest } : {}),
    ...(m.artifactType ? { artifactType: m.artifactType } : {}),
    ...(m.kind === 'index' ? { platforms: platformsOf(m.manifests) } : {}),
    createdAtMs: Date.now(),
  };
}

export class OciApi {
  readonly routes: Route[];

  constructor(private readonly d: OciApiDeps) {
    const N = '(.+)';
    const route = (method: string, re: string, write: boolean, handle: Route['handle']): Route => ({ method, pattern: new RegExp(`^/v2/${re}$`), write, handle });
    this.routes = [
      route('GET', '', false, async ({ res }) => this.answer(res, json(200, {}))),
      route('GET', '_catalog', false, async (r) => this.answer(r.res, await this.catalog(r.url))),
      route('GET', `${N}/tags/list`, false, async (r, [name]) => this.answer(r.res, await this.tagsList(repoParam(name), r.url))),
      route('GET', `${N}/manifests/([^/]+)`, false, async (r, [name, ref]) => this.answer(r.res, await this.getManifest(repoParam(name), ref))),
      route('HEAD', `${N}/manifests/([^/]+)`, false, async (r, [name, ref]) => this.answer(r.res, await this.getManifest(repoParam(name), ref))),
      route('PUT', `${N}/manifests/([^/]+)`, true, async (r, [name, ref]) => this.answer(r.res, await this.putManifest(r, repoParam(name), ref))),
      route('DELETE', `${N}/manifests/([^/]+)`, true, async (r, [name, ref]) => this.answer(r.res, await this.deleteManifest(r, repoParam(name), ref))),
      route('POST', `${N}/blobs/uploads/?`, true, async (r, [name]) => this.answer(r.res, await this.startUpload(r, repoParam(name)))),
      route('GET', `${N}/blobs/uploads/([^/]+)`, true, async (r, [name, id]) => this.answer(r.res, this.uploadStatus(this.d.uploads.get(repoParam(name), id), 204))),
      route('PATCH', `${N}/blobs/uploads/([^/]+)`, true, async (r, [name, id]) => this.answer(r.res, await this.patchUpload(r, this.d.uploads.get(repoParam(name), id)))),
      route('PUT', `${N}/blobs/uploads/([^/]+)`, true, async (r, [name, id]) => this.answer(r.res, await this.finishUpload(r, this.d.uploads.get(repoParam(name), id)))),
      route('DELETE', `${N}/blobs/uploads/([^/]+)`, true, async (r, [name, id]) => {
        await this.d.uploads.cancel(this.d.uploads.get(repoParam(name), id));
        this.answer(r.res, new HttpAnswer(204));
      }),
      route('GET', `${N}/blobs/([^/]+)`, false, async (r, [name, digest]) => this.getBlob(r, repoParam(name), digestParam(digest), true)),
      route('HEAD', `${N}/blobs/([^/]+)`, false, async (r, [name, digest]) => this.getBlob(r, repoParam(name), digestParam(digest), false)),
      route('DELETE', `${N}/blobs/([^/]+)`, true, async (r, [name, digest]) => this.answer(r.res, await this.deleteBlob(r, repoParam(name), digestParam(digest)))),
      route('GET', `${N}/referrers/([^/]+)`, false, async (r, [name, digest]) => this.answer(r.res, await this.referrers(repoParam(name), digestParam(digest), r.url))),
    ];
  }

  answer(res: ServerResponse, a: HttpAnswer): void {
    const body = a.body === undefined ? undefined : typeof a.body === 'string' ? Buffer.from(a.body) : a.body;
    res.writeHead(a.status, { 'content-length': body?.length ?? 0, ...a.headers });
    res.end(body);
  }

  // ---------------------------------------------------------------- listings

  private async catalog(url: URL): Promise<HttpAnswer> {
    const { items, next } = page(await this.d.catalog.repositories(), url);
    return json(200, { repositories: items }, next ? { link: `</v2/_catalog?n=${items.length}&last=${encodeURIComponent(next)}>; rel="next"` } : {});
  }

  private async tagsList(repo: string, url: URL): Promise<HttpAnswer> {
    const tags = await this.d.catalog.tags(repo);
    if (!tags) throw new OmniError('NAME_UNKNOWN', `repository ${repo} is not in the registry`);
    const { items, next } = page(tags, url);
    return json(200, { name: repo, tags: items }, next ? { link: `</v2/${repo}/tags/list?n=${items.length}&last=${encodeURIComponent(next)}>; rel="next"` } : {});
  }

  private async referrers(repo: string, digest: string, url: URL): Promise<HttpAnswer> {
    const filter = url.searchParams.get('artifactType');
    const manifests = [];
    for (const d of await this.d.catalog.repoManifests(repo)) {
      const m = await this.d.catalog.anyManifest(d);
      if (!m || m.subject !== digest || (filter && m.artifactType !== filter)) continue;
      manifests.push({ mediaType: m.mediaType, digest: m.digest, size: m.sizeBytes, ...(m.artifactType ? { artifactType: m.artifactType } : {}) });
    }
    return json(200, { schemaVersion: 2, mediaType: OCI_INDEX, manifests }, { 'content-type': OCI_INDEX, ...(filter ? { 'oci-filters-applied': 'artifactType' } : {}) });
  }

  // ---------------------------------------------------------------- manifests

  private async resolve(repo: string, ref: string): Promise<ManifestRecord> {
    const r = parseManifestReference(ref);
    if (r.kind === 'invalid') throw new OmniError(r.code, r.message);
    const digest = r.kind === 'digest' ? r.digest : await this.d.catalog.resolveTag(repo, r.tag);
    const m = digest ? await this.d.catalog.manifest(repo, digest) : undefined;
    if (!m) throw new OmniError('MANIFEST_UNKNOWN', `manifest ${ref.slice(0, 140)} is not in repository ${repo}`);
    return m;
  }

  private async getManifest(repo: string, ref: string): Promise<HttpAnswer> {
    const m = await this.resolve(repo, ref);
    const body = Buffer.from(m.content, 'utf8');
    return new HttpAnswer(200, { 'content-type': m.mediaType, 'docker-content-digest': m.digest, etag: `"${m.digest}"` }, body);
  }

  private async putManifest(r: OciRequest, repo: string, ref: string): Promise<HttpAnswer> {
    const caller = needCaller(r);
    const target = parseManifestReference(ref);
    if (target.kind === 'invalid') throw new OmniError(target.code, target.message);
    const bytes = await readBody(r.req, MAX_MANIFEST_BYTES);
    const digest = 'sha256:' + createHash('sha256').update(bytes).digest('hex');
    if (target.kind === 'digest' && target.digest !== digest) throw new OmniError('DIGEST_INVALID', `the manifest's digest is ${digest}, not ${target.digest}`);
    const record = manifestRecord(bytes, digest, r.req.headers['content-type']);
    await this.d.catalog.putManifest(repo, record, target.kind === 'tag' ? target.tag : undefined, caller);
    this.d.log.info(`registry: manifest ${repo}${target.kind === 'tag' ? `:${target.tag}` : ''} → ${digest} (${record.platforms ? 'index' : 'image'}, ${record.blobs.length + record.manifests.length} references)`);
    return new HttpAnswer(201, { location: `/v2/${repo}/manifests/${digest}`, 'docker-content-digest': digest, ...(record.subject ? { 'oci-subject': record.subject } : {}) });
  }

  private async deleteManifest(r: OciRequest, repo: string, ref: string): Promise<HttpAnswer> {
    const caller = needCaller(r);
    const target = parseManifestReference(ref);
    if (target.kind === 'invalid') throw new OmniError(target.code, target.message);
    const found = target.kind === 'digest' ? await this.d.catalog.deleteManifest(repo, target.digest, caller) : await this.d.catalog.deleteTag(repo, target.tag, caller);
    if (!found) throw new OmniError('MANIFEST_UNKNOWN', `manifest ${ref.slice(0, 140)} is not in repository ${repo}`);
    return new HttpAnswer(202);
  }

  // ---------------------------------------------------------------- blobs

  private async getBlob(r: OciRequest, repo: string, digest: string, withBody: boolean): Promise<void> {
    const rec = await this.d.catalog.blobInRepo(repo, digest);
    if (!rec) throw new OmniError('BLOB_UNKNOWN', `blob ${digest} is not in repository ${repo}`);
    const base = { 'docker-content-digest': digest, 'accept-ranges': 'bytes', etag: `"${digest}"` };
    const range = parseRangeHeader(r.req.headers.range, rec.sizeBytes);
    if (range === 'unsatisfiable') {
      this.answer(r.res, new HttpAnswer(416, { ...base, 'content-range': `bytes */${rec.sizeBytes}` }));
      return;
    }
    const span = range && range !== 'ignore' ? range : undefined;
    if (!withBody) {
      this.answer(r.res, new HttpAnswer(200, { ...base, 'content-type': 'application/octet-stream', 'content-length': rec.sizeBytes }));
      return;
    }
    const abort = new AbortController();
    r.res.once('close', () => abort.abort());
    if (!this.d.store.has(digest)) await this.d.fetchBlob(rec, abort.signal);
    const start = span?.start ?? 0;
    const end = span?.end ?? rec.sizeBytes - 1;
    const headers: Record<string, string | number> = { ...base, 'content-type': 'application/octet-stream', 'content-length': end - start + 1 };
    if (span) headers['content-range'] = `bytes ${start}-${end}/${rec.sizeBytes}`;
    await this.stream(r.res, rec, start, end, span ? 206 : 200, headers, abort.signal);
  }

  /**
   * Streams verified pieces. A corrupt piece found before anything was sent sends the blob to be
   * fetched again from peers (once); once bytes have gone out, the connection is cut instead, so
   * the client sees a short body and retries.
   */
  private async stream(res: ServerResponse, rec: BlobRecord, start: number, end: number, status: number, headers: Record<string, string | number>, signal: AbortSignal): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      let sent = false;
      try {
        if (rec.sizeBytes === 0 || end < start) {
          res.writeHead(status, headers);
          res.end();
          return;
        }
        for await (const chunk of this.d.store.read(rec.digest, start, end)) {
          if (signal.aborted) return;
          if (!sent) {
            res.writeHead(status, headers);
            sent = true;
          }
          if (!res.write(chunk)) await drained(res);
        }
        res.end();
        return;
      } catch (err) {
        const corrupt = err instanceof OmniError && (err.code === 'BLOB_CORRUPT' || err.code === 'BLOB_UNKNOWN');
        if (sent) {
          this.d.log.warn(`registry: serving ${rec.digest} stopped part way: ${(err as Error).message}`);
          res.destroy();
          return;
        }
        if (!corrupt || attempt > 0) throw err;
        await this.d.fetchBlob(rec, signal);
      }
    }
  }

  private async deleteBlob(r: OciRequest, repo: string, digest: string): Promise<HttpAnswer> {
    if (!(await this.d.catalog.unlinkBlob(repo, digest, needCaller(r)))) throw new OmniError('BLOB_UNKNOWN', `blob ${digest} is not in repository ${repo}`);
    return new HttpAnswer(202);
  }

  // ---------------------------------------------------------------- uploads

  private uploadStatus(s: UploadSession, status: number): HttpAnswer {
    return new HttpAnswer(status, { location: `/v2/${s.repo}/blobs/uploads/${s.id}`, range: uploadRangeHeader(s.offsetBytes), 'docker-upload-uuid': s.id });
  }

  private async startUpload(r: OciRequest, repo: string): Promise<HttpAnswer> {
    const caller = needCaller(r);
    const mount = r.url.searchParams.get('mount');
    if (mount !== null) {
      const digest = digestParam(mount);
      const from = r.url.searchParams.get('from');
      // Any blob the cluster holds may be mounted (every token sees every repository).
      if (from === null || isRepositoryName(from)) {
        if (await this.d.catalog.linkBlob(repo, digest, caller)) return this.blobCreated(repo, digest);
      }
      // Not mountable: an ordinary upload session instead (202), as the spec says.
    }
    const digestQ = r.url.searchParams.get('digest');
    const s = await this.d.uploads.start(repo);
    if (digestQ === null) {
      r.req.resume();
      return this.uploadStatus(s, 202);
    }
    // Monolithic: the whole blob in the POST body.
    return this.completeUpload(r, s, digestParam(digestQ), caller);
  }

  private async patchUpload(r: OciRequest, s: UploadSession): Promise<HttpAnswer> {
    needCaller(r);
    await this.d.uploads.append(s, r.req, r.req.headers['content-range'], contentLength(r.req));
    return this.uploadStatus(s, 202);
  }

  private async finishUpload(r: OciRequest, s: UploadSession): Promise<HttpAnswer> {
    const caller = needCaller(r);
    const q = r.url.searchParams.get('digest');
    if (q === null) throw new OmniError('DIGEST_INVALID', 'the PUT that ends an upload needs ?digest=sha256:…');
    return this.completeUpload(r, s, digestParam(q), caller);
  }

  private async completeUpload(r: OciRequest, s: UploadSession, digest: string, caller: Caller): Promise<HttpAnswer> {
    const t0 = performance.now();
    const len = contentLength(r.req);
    if (len !== 0 || r.req.headers['transfer-encoding']) await this.d.uploads.append(s, r.req, r.req.headers['content-range'], len, true);
    const info = await this.d.uploads.finish(s, digest);
    const t1 = performance.now();
    const abort = new AbortController();
    r.res.once('close', () => abort.abort());
    const bytes = this.d.replicate && info.sizeBytes <= INLINE_REPLICA_BYTES ? await this.d.store.readAll(digest).catch(() => undefined) : undefined;
    const { recordedMs, copiedMs } = await recordPushedBlob({ catalog: this.d.catalog, replicate: this.d.replicate }, s.repo, info, caller, abort.signal, bytes);
    this.d.log.debug(`registry: blob ${digest} (${info.sizeBytes} bytes) pushed to ${s.repo} (ms: stored ${(t1 - t0).toFixed(1)}, recorded ${recordedMs.toFixed(1)}, copies ${copiedMs.toFixed(1)})`);
    return this.blobCreated(s.repo, digest);
  }

  private blobCreated(repo: string, digest: string): HttpAnswer {
    return new HttpAnswer(201, { location: `/v2/${repo}/blobs/${digest}`, 'docker-content-digest': digest });
  }
}

/** Resolves once `res` can take more (or is closed); leaves no listener behind. */
function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}
