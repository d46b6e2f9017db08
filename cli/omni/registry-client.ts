// A small OCI distribution (/v2/) client for the CLI's image commands (omni bundle, omni images
// push/pull/import/export): manifests and blobs in and out of a node's registry with the CLI's
// token (the registry takes it as a Bearer token) and, for an https registry, the cluster CA.
// Every blob read is hashed while it streams to disk and refused when its digest differs;
// uploads are monolithic (POST ?digest=, the body streamed; the registry verifies the digest).
// Transfers report their bytes as they go (a progress line) and stop with the client's signal.
//
// Fail-over (FailoverRegistry): every operation here is idempotent (blobs and manifests are
// content-addressed; a tag put twice points to the same digest), so when the node whose registry
// the CLI uses stops answering, the operation is repeated on the registry of another node the
// API client reaches. A blob download interrupted part-way resumes from the bytes it already has
// (a Range request, the digest still computed over the whole blob).
import { request as httpRequest, type IncomingMessage, type RequestOptions, type ClientRequest } from 'node:http';
import { createRequire } from 'node:module';
import { createReadStream, createWriteStream } from 'node:fs';
import { link, mkdir, readFile, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { OmniError } from '../../node/errors.js';
import { MANIFEST_MEDIA_TYPES, baseMediaType } from '../../protocol/registry/media-types.js';
import { MAX_MANIFEST_BYTES } from '../../protocol/registry/manifest.js';
import type { ApiClient } from '../../node/api/client.js';
import { UsageError } from '../common.js';
import { credentials } from './connection.js';

const loadBuiltin = createRequire(import.meta.url);

/** A connection that sends nothing for this long is given up. */
const IDLE_TIMEOUT_MS = 60_000;
const MAX_ERROR_BODY_BYTES = 64 * 1024;

const sha256 = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** The operations the image commands use: a RegistryClient, or a FailoverRegistry over several. */
export type Registry = Pick<RegistryClient, 'manifest' | 'downloadBlob' | 'resolveTag' | 'hasBlob' | 'mountBlob' | 'uploadBlob' | 'putManifest'> & Partial<Pick<RegistryClient, 'uploadBytes'>>;

/** A failed request is retried on another node's registry when the node did not answer or said it could not serve now. */
export function registryFailoverWorthy(err: unknown): boolean {
  if (!(err instanceof OmniError)) return false;
  if (err.code === 'UNAVAILABLE' || err.code === 'TIMEOUT') return true;
  const status = Number(err.detail.status);
  return err.code === 'REGISTRY_ERROR' && (status === 502 || status === 503 || status === 504);
}

/** Chunk of a resumable upload (uploadBlobResumable): what an interruption can cost. */
export const RESUMABLE_CHUNK_BYTES = 8 * 1024 * 1024;

export class RegistryClient {
  private readonly request: (opts: RequestOptions, cb: (res: IncomingMessage) => void) => ClientRequest;

  constructor(
    readonly baseUrl: string,
    private readonly token: string | undefined,
    private readonly ca?: string,
    private readonly signal?: AbortSignal,
  ) {
    // node:https (and TLS with it) only for an https registry: loading it costs every CLI start ~5 ms
    this.request = baseUrl.startsWith('https:') ? (loadBuiltin('node:https') as typeof import('node:https')).request : httpRequest;
  }

  private send(method: string, path: string, headers: Record<string, string | number>, body?: Buffer | NodeJS.ReadableStream): Promise<IncomingMessage> {
    const url = new URL(`/v2/${path}`, this.baseUrl);
    return new Promise((resolve, reject) => {
      const req = this.request(
        { method, hostname: url.hostname, port: url.port, path: url.pathname + url.search, headers: { ...headers, ...(this.token ? { authorization: `Bearer ${this.token}` } : {}) }, timeout: IDLE_TIMEOUT_MS, ...(this.ca ? { ca: this.ca } : {}), ...(this.signal ? { signal: this.signal } : {}) },
        resolve,
      );
      req.on('timeout', () => req.destroy(new OmniError('TIMEOUT', `the registry at ${this.baseUrl} sent nothing for ${IDLE_TIMEOUT_MS} ms`)));
      req.on('error', (err) => reject(this.transportError(err, `cannot reach the registry at ${this.baseUrl}`)));
      if (body === undefined || Buffer.isBuffer(body)) req.end(body);
      else (body as NodeJS.ReadableStream).pipe(req);
    });
  }

  /** A socket or stream error as the CLI reports it (ABORTED after Ctrl-C; UNAVAILABLE otherwise, with its errno). */
  private transportError(err: unknown, what: string): OmniError {
    if (err instanceof OmniError) return err;
    if (this.signal?.aborted) return new OmniError('ABORTED', 'stopped');
    const e = err as NodeJS.ErrnoException;
    return new OmniError('UNAVAILABLE', `${what}: ${e?.message ?? String(err)}`, { errno: e?.code ?? '' });
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
    throw new OmniError(res.statusCode === 401 || res.statusCode === 403 ? 'UNAUTHORIZED' : res.statusCode === 404 ? 'NOT_FOUND' : 'REGISTRY_ERROR', `${what}: HTTP ${res.statusCode}${detail ? ` (${detail.slice(0, 300)})` : ''}`, { status: res.statusCode ?? 0 });
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

  /**
   * Streams a blob to `dest` (through `dest.part`), checking its digest; `onBytes` hears of each
   * chunk (negative when bytes counted before are thrown away). A `dest.part` left by an
   * interrupted attempt is resumed with a Range request (its bytes are hashed first); the part is
   * kept when the transfer breaks off, and removed when the blob does not match its digest.
   */
  async downloadBlob(repo: string, digest: string, dest: string, onBytes?: (n: number) => void): Promise<number> {
    const tmp = `${dest}.part`;
    const hash = createHash('sha256');
    let size = 0;
    const have = (await stat(tmp).catch(() => undefined))?.size ?? 0;
    if (have > 0) {
      for await (const c of createReadStream(tmp)) {
        hash.update(c as Buffer);
        size += (c as Buffer).length;
      }
    }
    const res = await this.send('GET', `${repo}/blobs/${digest}`, size > 0 ? { range: `bytes=${size}-` } : {});
    let append = false;
    if (res.statusCode === 206 && size > 0 && rangeStart(res.headers['content-range']) === size) append = true;
    else if (res.statusCode === 200 || (res.statusCode === 416 && size > 0)) {
      if (size > 0) onBytes?.(-size);
      if (res.statusCode === 416) {
        // The part is not a prefix of this blob (or is all of it, unfinished): start over.
        res.resume();
        await rm(tmp, { force: true });
        return this.downloadBlob(repo, digest, dest, onBytes);
      }
      hash.destroy();
      return this.receive(res, digest, dest, tmp, createHash('sha256'), 0, false, onBytes);
    } else return this.fail(res, `blob ${digest}`);
    return this.receive(res, digest, dest, tmp, hash, size, append, onBytes);
  }

  private async receive(res: IncomingMessage, digest: string, dest: string, tmp: string, hash: ReturnType<typeof createHash>, size: number, append: boolean, onBytes?: (n: number) => void): Promise<number> {
    const tap = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        size += chunk.length;
        onBytes?.(chunk.length);
        cb(null, chunk);
      },
    });
    const before = size;
    try {
      if (!append) await truncate(tmp, 0).catch(() => undefined);
      await pipeline(res, tap, createWriteStream(tmp, { mode: 0o600, flags: append ? 'a' : 'w' }));
    } catch (err) {
      // Bytes that passed the tap but never reached the file are taken back (a resume starts from the file).
      const kept = (await stat(tmp).catch(() => undefined))?.size ?? before;
      if (size > kept) onBytes?.(kept - size);
      throw this.transportError(err, `the registry at ${this.baseUrl} stopped sending blob ${digest}`);
    }
    if ('sha256:' + hash.digest('hex') !== digest) {
      await rm(tmp, { force: true });
      throw new OmniError('DIGEST_INVALID', `the registry sent blob ${digest} with other content`);
    }
    await rename(tmp, dest);
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

  /** Uploads bytes held in memory as blob `digest` of `repo` (monolithic: one POST). */
  async uploadBytes(repo: string, digest: string, bytes: Buffer): Promise<void> {
    const res = await this.send('POST', `${repo}/blobs/uploads/?digest=${encodeURIComponent(digest)}`, { 'content-type': 'application/octet-stream', 'content-length': bytes.length }, bytes);
    if (res.statusCode !== 201) return this.fail(res, `uploading blob ${digest} to ${repo}`);
    res.resume();
  }

  /**
   * Uploads a file as blob `digest` of `repo` in chunks (POST, then PATCH per chunk, then PUT),
   * writing where the session stands to `stateFile` after each chunk. Run again after an
   * interruption (Ctrl-C, a lost connection, the process killed), it asks the registry how far
   * that session got and sends only the rest; a session this registry no longer has (or one of
   * another registry, another file) starts over. The state file is removed once the blob is in.
   * Returns the bytes the upload resumed at (0 for a fresh one).
   */
  async uploadBlobResumable(repo: string, digest: string, path: string, o: { stateFile: string; chunkBytes?: number; onBytes?: (n: number) => void }): Promise<{ resumedAtBytes: number }> {
    // one upload per state file at a time: another process (or call) uploading the same blob
    // holds the lock, and this one sends its own copy without a state file rather than share
    // (and break) that session
    const release = await lockStateFile(o.stateFile);
    if (!release) {
      await this.uploadBlob(repo, digest, path, o.onBytes);
      return { resumedAtBytes: 0 };
    }
    try {
      return await this.uploadBlobResumableLocked(repo, digest, path, o);
    } finally {
      await release();
    }
  }

  private async uploadBlobResumableLocked(repo: string, digest: string, path: string, o: { stateFile: string; chunkBytes?: number; onBytes?: (n: number) => void }): Promise<{ resumedAtBytes: number }> {
    const { size } = await stat(path);
    const chunk = Math.max(64 * 1024, o.chunkBytes ?? RESUMABLE_CHUNK_BYTES);
    const rel = (location: string) => (location.startsWith('/v2/') ? location.slice(4) : undefined);
    const save = async (location: string) => {
      await mkdir(dirname(o.stateFile), { recursive: true });
      await writeFile(`${o.stateFile}.tmp`, JSON.stringify({ registry: this.baseUrl, repo, digest, size, location }), { mode: 0o600 });
      await rename(`${o.stateFile}.tmp`, o.stateFile);
    };
    let location: string | undefined;
    let offset = 0;
    const saved = await readFile(o.stateFile, 'utf8').then((t) => JSON.parse(t) as Record<string, unknown>, () => undefined);
    if (saved && saved.registry === this.baseUrl && saved.repo === repo && saved.digest === digest && saved.size === size && typeof saved.location === 'string' && rel(saved.location)) {
      const res = await this.send('GET', rel(saved.location)!, {});
      res.resume();
      const end = /^0-(\d+)$/.exec(String(res.headers.range ?? ''));
      if (res.statusCode === 204 && end) {
        location = typeof res.headers.location === 'string' && rel(res.headers.location) ? res.headers.location : saved.location;
        // "0-0" is the registry's answer for an empty session as for one byte: take it as empty
        offset = Number(end[1]) === 0 ? 0 : Number(end[1]) + 1;
        if (offset > size) {
          location = undefined;
          offset = 0;
        }
      }
    }
    const resumedAtBytes = offset;
    if (!location) {
      const res = await this.send('POST', `${repo}/blobs/uploads/`, { 'content-length': 0 });
      res.resume();
      if (res.statusCode !== 202 || typeof res.headers.location !== 'string' || !rel(res.headers.location)) return this.fail(res, `starting an upload of ${digest} to ${repo}`);
      location = res.headers.location;
    }
    await save(location);
    if (offset > 0) o.onBytes?.(offset);
    while (offset < size) {
      const end = Math.min(size, offset + chunk) - 1;
      const body = createReadStream(path, { start: offset, end });
      const res = await this.send('PATCH', rel(location)!, { 'content-type': 'application/octet-stream', 'content-range': `${offset}-${end}`, 'content-length': end - offset + 1 }, body);
      if (res.statusCode !== 202) {
        // the session is gone or out of step: the next run starts a new one
        if (res.statusCode === 404 || res.statusCode === 416) await rm(o.stateFile, { force: true });
        return this.fail(res, `uploading ${digest} to ${repo} (bytes ${offset}-${end})`);
      }
      res.resume();
      if (typeof res.headers.location === 'string' && rel(res.headers.location)) location = res.headers.location;
      o.onBytes?.(end - offset + 1);
      offset = end + 1;
      await save(location);
    }
    const sep = location.includes('?') ? '&' : '?';
    const res = await this.send('PUT', `${rel(location)!}${sep}digest=${encodeURIComponent(digest)}`, { 'content-length': 0 });
    if (res.statusCode !== 201) {
      if (res.statusCode === 400 || res.statusCode === 404) await rm(o.stateFile, { force: true });
      return this.fail(res, `finishing the upload of ${digest} to ${repo}`);
    }
    res.resume();
    await rm(o.stateFile, { force: true });
    return { resumedAtBytes };
  }

  /** Removes tag `tag` of `repo` (the manifest stays while other tags or digests name it); false when there was no such tag. */
  async deleteTag(repo: string, tag: string): Promise<boolean> {
    const res = await this.send('DELETE', `${repo}/manifests/${encodeURIComponent(tag)}`, {});
    res.resume();
    if (res.statusCode === 202) return true;
    if (res.statusCode === 404) return false;
    return this.fail(res, `deleting tag ${repo}:${tag}`);
  }

  /** Records a manifest under `ref` (its digest or a tag). */
  async putManifest(repo: string, ref: string, bytes: Buffer, mediaType: string): Promise<void> {
    const res = await this.send('PUT', `${repo}/manifests/${ref}`, { 'content-type': mediaType, 'content-length': bytes.length }, bytes);
    if (res.statusCode !== 201) return this.fail(res, `manifest ${repo}:${ref}`);
    res.resume();
  }
}

/** "bytes 10-99/100" → 10. */
function rangeStart(header: string | undefined): number | undefined {
  const m = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(header ?? '');
  return m ? Number(m[1]) : undefined;
}

/**
 * A registry that moves to another node's registry when its node stops answering: the operation
 * that failed is repeated there (see registryFailoverWorthy), each node at most once per failure
 * chain. `next` names another registry (undefined: none); `onFailover` hears of each move.
 */
export class FailoverRegistry implements Registry {
  private reg: RegistryClient;
  private readonly gaveUp = new Set<string>();
  /** How many times this registry moved to another node. */
  failovers = 0;

  constructor(
    first: RegistryClient,
    private readonly next: ((avoid: ReadonlySet<string>) => Promise<RegistryClient | undefined>) | undefined,
    private readonly onFailover?: (from: string, to: string, why: string) => void,
  ) {
    this.reg = first;
  }

  /** The registry used now. */
  get url(): string {
    return this.reg.baseUrl;
  }

  private async run<T>(op: (r: RegistryClient) => Promise<T>): Promise<T> {
    for (;;) {
      const r = this.reg;
      try {
        return await op(r);
      } catch (err) {
        if (!this.next || !registryFailoverWorthy(err)) throw err;
        this.gaveUp.add(r.baseUrl);
        const alt = await this.next(this.gaveUp).catch(() => undefined);
        if (!alt || this.gaveUp.has(alt.baseUrl)) throw err;
        this.failovers++;
        this.onFailover?.(r.baseUrl, alt.baseUrl, (err as Error).message);
        this.reg = alt;
      }
    }
  }

  manifest(repo: string, digest: string) {
    return this.run((r) => r.manifest(repo, digest));
  }
  downloadBlob(repo: string, digest: string, dest: string, onBytes?: (n: number) => void) {
    return this.run((r) => r.downloadBlob(repo, digest, dest, onBytes));
  }
  resolveTag(repo: string, tag: string) {
    return this.run((r) => r.resolveTag(repo, tag));
  }
  hasBlob(repo: string, digest: string) {
    return this.run((r) => r.hasBlob(repo, digest));
  }
  mountBlob(repo: string, digest: string) {
    return this.run((r) => r.mountBlob(repo, digest));
  }
  deleteTag(repo: string, tag: string) {
    return this.run((r) => r.deleteTag(repo, tag));
  }
  /** On another node the session starts over (the state names the registry it belongs to). */
  uploadBlobResumable(repo: string, digest: string, path: string, o: { stateFile: string; chunkBytes?: number; onBytes?: (n: number) => void }) {
    return this.run((r) => r.uploadBlobResumable(repo, digest, path, o));
  }
  uploadBlob(repo: string, digest: string, path: string, onBytes?: (n: number) => void) {
    let sent = 0;
    return this.run(async (r) => {
      if (sent > 0) onBytes?.(-sent); // the upload starts over on the other node
      sent = 0;
      return r.uploadBlob(repo, digest, path, (n) => {
        sent += n;
        onBytes?.(n);
      });
    });
  }
  uploadBytes(repo: string, digest: string, bytes: Buffer) {
    return this.run((r) => r.uploadBytes(repo, digest, bytes));
  }
  putManifest(repo: string, ref: string, bytes: Buffer, mediaType: string) {
    return this.run((r) => r.putManifest(repo, ref, bytes, mediaType));
  }
}

/**
 * The registry of the node the CLI talks to (its /v2/ URL from /v1/registry), or `--registry URL`,
 * with the CLI's token and CA. Without --registry it fails over: when that node stops answering,
 * the API client (which itself moves on to the cluster's other members) is asked again for the
 * registry of the node that answers, and the transfer goes on there (a note on stderr).
 */
export async function registryFor(client: ApiClient, values: Record<string, unknown>, signal?: AbortSignal): Promise<FailoverRegistry> {
  const { token, ca } = credentials(values);
  const given = values.registry as string | undefined;
  const open = (url: string) => {
    if (!/^https?:\/\/[^/]+\/?$/.test(url)) throw new UsageError(`--registry must be http(s)://HOST:PORT, got ${url}`);
    return new RegistryClient(url, token, ca, signal);
  };
  if (given !== undefined) return new FailoverRegistry(open(given), undefined);
  const ask = async () => open((await client.get<{ url: string }>('/v1/registry')).url);
  const note = (from: string, to: string, why: string) => process.stderr.write(`omni: the registry at ${from} stopped answering (${why.slice(0, 200)}); going on with ${to}\n`);
  return new FailoverRegistry(await ask(), ask, note);
}

/** A lock whose content is not a pid (a crash of an older version between creating and writing it), or a takeover left by a process that died in it, is stale after this long. */
const UNREADABLE_LOCK_STALE_MS = 10_000;

/**
 * Takes `<stateFile>.lock` (holding this process's pid); undefined while a live process holds it.
 * The lock is made whole (the pid written to a file of this process's own, then hard-linked into
 * place: it is never seen empty). A lock left by a process that is gone (killed mid-upload) is
 * taken over under a second lock, `<lock>.takeover`: only its holder removes the stale lock, and
 * only while the lock still holds what was found stale — so of several processes finding one
 * stale lock at once, one gets it, and a fresh lock is never removed.
 */
export async function lockStateFile(stateFile: string): Promise<(() => Promise<void>) | undefined> {
  const lock = `${stateFile}.lock`;
  const takeover = `${lock}.takeover`;
  await mkdir(dirname(lock), { recursive: true });
  const mine = `${lock}.${process.pid}.${randomBytes(4).toString('hex')}`;
  await writeFile(mine, String(process.pid), { mode: 0o600 });
  const linked = async (to: string) => {
    try {
      await link(mine, to);
      return true;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? '';
      if (code === 'EEXIST') return false;
      // a file system without hard links (vfat, some FUSE): no lock, the upload goes without its state file
      if (['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EXDEV'].includes(code)) throw new NoHardLinks();
      throw e;
    }
  };
  const ageMs = async (path: string) => Date.now() - ((await stat(path).catch(() => undefined))?.mtimeMs ?? Date.now());
  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      if (await linked(lock)) return () => rm(lock, { force: true });
      const held = await readFile(lock, 'utf8').catch(() => undefined);
      if (held === undefined) continue; // released meanwhile: try again
      const pid = Number(held);
      const stale = Number.isInteger(pid) && pid > 0 ? !processAlive(pid) : (await ageMs(lock)) >= UNREADABLE_LOCK_STALE_MS;
      if (!stale) return undefined;
      if (!(await linked(takeover))) {
        // another process is taking it over (or died doing so: its takeover expires)
        if ((await ageMs(takeover)) < UNREADABLE_LOCK_STALE_MS) return undefined;
        await rm(takeover, { force: true });
        continue;
      }
      try {
        if ((await readFile(lock, 'utf8').catch(() => undefined)) === held) await rm(lock, { force: true });
      } finally {
        await rm(takeover, { force: true });
      }
    }
    return undefined;
  } catch (err) {
    if (err instanceof NoHardLinks) return undefined;
    throw err;
  } finally {
    await rm(mine, { force: true });
  }
}

class NoHardLinks extends Error {}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
