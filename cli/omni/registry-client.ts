// A small OCI distribution (/v2/) client for the CLI's image commands (omni bundle, omni images
// push/pull/import/export): manifests and blobs in and out of a node's registry with the CLI's
// token (the registry takes it as a Bearer token) and, for an https registry, the cluster CA.
// Every blob read is hashed while it streams to disk and refused when its digest differs;
// uploads are monolithic (POST ?digest=, the body streamed; the registry verifies the digest).
// Transfers report their bytes as they go (a progress line) and stop with the client's signal.
import { request as httpRequest, type IncomingMessage, type RequestOptions, type ClientRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { OmniError } from '../../node/errors.js';
import { MANIFEST_MEDIA_TYPES, baseMediaType } from '../../protocol/registry/media-types.js';
import { MAX_MANIFEST_BYTES } from '../../protocol/registry/manifest.js';
import type { ApiClient } from '../../node/api/client.js';
import { UsageError } from '../common.js';
import { credentials } from './connection.js';

/** A connection that sends nothing for this long is given up. */
const IDLE_TIMEOUT_MS = 60_000;
const MAX_ERROR_BODY_BYTES = 64 * 1024;

const sha256 = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');

export class RegistryClient {
  private readonly request: (opts: RequestOptions, cb: (res: IncomingMessage) => void) => ClientRequest;

  constructor(
    readonly baseUrl: string,
    private readonly token: string | undefined,
    private readonly ca?: string,
    private readonly signal?: AbortSignal,
  ) {
    this.request = baseUrl.startsWith('https:') ? httpsRequest : httpRequest;
  }

  private send(method: string, path: string, headers: Record<string, string | number>, body?: Buffer | NodeJS.ReadableStream): Promise<IncomingMessage> {
    const url = new URL(`/v2/${path}`, this.baseUrl);
    return new Promise((resolve, reject) => {
      const req = this.request(
        { method, hostname: url.hostname, port: url.port, path: url.pathname + url.search, headers: { ...headers, ...(this.token ? { authorization: `Bearer ${this.token}` } : {}) }, timeout: IDLE_TIMEOUT_MS, ...(this.ca ? { ca: this.ca } : {}), ...(this.signal ? { signal: this.signal } : {}) },
        resolve,
      );
      req.on('timeout', () => req.destroy(new OmniError('TIMEOUT', `the registry at ${this.baseUrl} sent nothing for ${IDLE_TIMEOUT_MS} ms`)));
      req.on('error', (err) => reject(err instanceof OmniError ? err : this.signal?.aborted ? new OmniError('ABORTED', 'stopped') : new OmniError('UNAVAILABLE', `cannot reach the registry at ${this.baseUrl}: ${err.message}`)));
      if (body === undefined || Buffer.isBuffer(body)) req.end(body);
      else (body as NodeJS.ReadableStream).pipe(req);
    });
  }

  private async fail(res: IncomingMessage, what: string): Promise<never> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of res) {
      size += (c as Buffer).length;
      if (size <= MAX_ERROR_BODY_BYTES) chunks.push(c as Buffer);
    }
    let detail = '';
    try {
      const e = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { errors?: { code?: string; message?: string }[] };
      detail = e.errors?.[0] ? `${e.errors[0].code}: ${e.errors[0].message}` : '';
    } catch {
      // not JSON
    }
    throw new OmniError(res.statusCode === 401 || res.statusCode === 403 ? 'UNAUTHORIZED' : res.statusCode === 404 ? 'NOT_FOUND' : 'REGISTRY_ERROR', `${what}: HTTP ${res.statusCode}${detail ? ` (${detail.slice(0, 300)})` : ''}`);
  }

  /** A manifest's bytes, checked against its digest, and its media type. */
  async manifest(repo: string, digest: string): Promise<{ bytes: Buffer; mediaType: string }> {
    const res = await this.send('GET', `${repo}/manifests/${digest}`, { accept: Object.keys(MANIFEST_MEDIA_TYPES).join(', ') });
    if (res.statusCode !== 200) return this.fail(res, `manifest ${repo}@${digest}`);
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of res) {
      size += (c as Buffer).length;
      if (size > MAX_MANIFEST_BYTES) throw new OmniError('TOO_LARGE', `manifest ${digest} is over ${MAX_MANIFEST_BYTES} bytes`);
      chunks.push(c as Buffer);
    }
    const bytes = Buffer.concat(chunks);
    if (sha256(bytes) !== digest) throw new OmniError('DIGEST_INVALID', `the registry sent manifest ${digest} with other content`);
    return { bytes, mediaType: baseMediaType(res.headers['content-type']) };
  }

  /** Streams a blob to `dest` (through a temp file), checking its digest; `onBytes` hears of each chunk. */
  async downloadBlob(repo: string, digest: string, dest: string, onBytes?: (n: number) => void): Promise<number> {
    const res = await this.send('GET', `${repo}/blobs/${digest}`, {});
    if (res.statusCode !== 200) return this.fail(res, `blob ${digest}`);
    const hash = createHash('sha256');
    let size = 0;
    const tmp = `${dest}.part`;
    const tap = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        size += chunk.length;
        onBytes?.(chunk.length);
        cb(null, chunk);
      },
    });
    try {
      await pipeline(res, tap, createWriteStream(tmp, { mode: 0o600 }));
      if ('sha256:' + hash.digest('hex') !== digest) throw new OmniError('DIGEST_INVALID', `the registry sent blob ${digest} with other content`);
      await rename(tmp, dest);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    return size;
  }

  /** The digest a tag points to (HEAD of the manifest: its Docker-Content-Digest); undefined when there is no such tag. */
  async resolveTag(repo: string, tag: string): Promise<string | undefined> {
    const res = await this.send('HEAD', `${repo}/manifests/${tag}`, { accept: Object.keys(MANIFEST_MEDIA_TYPES).join(', ') });
    res.resume();
    if (res.statusCode === 404) return undefined;
    if (res.statusCode !== 200) return this.fail(res, `manifest ${repo}:${tag}`);
    const d = res.headers['docker-content-digest'];
    if (typeof d !== 'string' || !/^sha256:[a-f0-9]{64}$/.test(d)) throw new OmniError('REGISTRY_ERROR', `the registry named no digest for ${repo}:${tag}`);
    return d;
  }

  /** Whether the repository has the blob already (a push then skips it). */
  async hasBlob(repo: string, digest: string): Promise<boolean> {
    const res = await this.send('HEAD', `${repo}/blobs/${digest}`, {});
    res.resume();
    if (res.statusCode === 200) return true;
    if (res.statusCode === 404) return false;
    return this.fail(res, `blob ${digest}`);
  }

  /**
   * Links a blob the cluster already has (in another repository) into `repo` — a cross-repository
   * mount, no bytes sent; false when the registry does not have it (the upload session it opened
   * instead is cancelled).
   */
  async mountBlob(repo: string, digest: string): Promise<boolean> {
    const res = await this.send('POST', `${repo}/blobs/uploads/?mount=${encodeURIComponent(digest)}`, { 'content-length': 0 });
    res.resume();
    if (res.statusCode === 201) return true;
    if (res.statusCode !== 202) return this.fail(res, `mounting blob ${digest} into ${repo}`);
    const location = res.headers.location;
    if (typeof location === 'string' && location.startsWith(`/v2/${repo}/blobs/uploads/`)) {
      const cancel = await this.send('DELETE', location.slice('/v2/'.length), {}).catch(() => undefined);
      cancel?.resume();
    }
    return false;
  }

  /** Uploads a file as blob `digest` of `repo` (monolithic: one POST with the whole body); `onBytes` hears of each chunk read. */
  async uploadBlob(repo: string, digest: string, path: string, onBytes?: (n: number) => void): Promise<void> {
    const { size } = await stat(path);
    const body = createReadStream(path);
    if (onBytes) body.on('data', (c) => onBytes(c.length));
    const res = await this.send('POST', `${repo}/blobs/uploads/?digest=${encodeURIComponent(digest)}`, { 'content-type': 'application/octet-stream', 'content-length': size }, body);
    if (res.statusCode !== 201) return this.fail(res, `uploading blob ${digest} to ${repo}`);
    res.resume();
  }

  /** Records a manifest under `ref` (its digest or a tag). */
  async putManifest(repo: string, ref: string, bytes: Buffer, mediaType: string): Promise<void> {
    const res = await this.send('PUT', `${repo}/manifests/${ref}`, { 'content-type': mediaType, 'content-length': bytes.length }, bytes);
    if (res.statusCode !== 201) return this.fail(res, `manifest ${repo}:${ref}`);
    res.resume();
  }
}

/**
 * The registry of the node the CLI talks to (its /v2/ URL from /v1/registry), or `--registry URL`,
 * with the CLI's token and CA.
 */
export async function registryFor(client: ApiClient, values: Record<string, unknown>, signal?: AbortSignal): Promise<RegistryClient> {
  const { token, ca } = credentials(values);
  let url = values.registry as string | undefined;
  if (url === undefined) url = (await client.get<{ url: string }>('/v1/registry')).url;
  if (!/^https?:\/\/[^/]+\/?$/.test(url)) throw new UsageError(`--registry must be http(s)://HOST:PORT, got ${url}`);
  return new RegistryClient(url, token, ca, signal);
}
