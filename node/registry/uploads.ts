// The node-local upload sessions of the distribution API: each is a temp file in the blob store
// that chunks are appended to in order; the final PUT names the digest and the store verifies
// and commits it (node/registry/blob-store.ts). Sessions live in memory: a restarted node
// forgets them and the client starts its upload again (docker and skopeo do).
import { randomUUID } from 'node:crypto';
import { open, rm } from 'node:fs/promises';
import { BatchedWriter } from '../files.js';
import { OmniError } from '../errors.js';
import { BlobHasher, type BlobInfo, type BlobStore } from './blob-store.js';
import { checkChunk, idleSessions, MAX_UPLOAD_SESSIONS, UPLOAD_IDLE_TIMEOUT_MS, type UploadState } from '../../protocol/registry/upload.js';

/** Disk space is checked again after every this many bytes of a chunk of unknown length. */
const SPACE_CHECK_EVERY_BYTES = 64 * 1024 * 1024;

export interface UploadSession extends UploadState {
  path: string;
  /** The whole blob's hashes, taken as a request that carried all of it was written (see append). */
  hashed?: BlobInfo;
}

/** Bytes of a request body gathered before they are written (one writev instead of one write per socket read). */
const WRITE_BATCH_BYTES = 1024 * 1024;

export interface UploadLimits {
  maxSessions: number;
  idleTimeoutMs: number;
}

export class UploadSessions {
  private readonly sessions = new Map<string, UploadSession>();
  private readonly limits: UploadLimits;

  constructor(
    private readonly store: BlobStore,
    limits: Partial<UploadLimits> = {},
  ) {
    this.limits = { maxSessions: limits.maxSessions ?? MAX_UPLOAD_SESSIONS, idleTimeoutMs: limits.idleTimeoutMs ?? UPLOAD_IDLE_TIMEOUT_MS };
  }

  get size(): number {
    return this.sessions.size;
  }

  async start(repo: string): Promise<UploadSession> {
    await this.sweep();
    if (this.sessions.size >= this.limits.maxSessions) throw new OmniError('TOOMANYREQUESTS', `this node has ${this.limits.maxSessions} uploads open (the limit); retry later`);
    await this.store.ensureSpace(0);
    const s: UploadSession = { id: randomUUID(), repo, offsetBytes: 0, lastActiveMs: Date.now(), busy: false, path: this.store.tempPath() };
    const fh = await open(s.path, 'wx', 0o600);
    await fh.close();
    this.sessions.set(s.id, s);
    return s;
  }

  /** The session `id` of `repo` (BLOB_UPLOAD_UNKNOWN otherwise). */
  get(repo: string, id: string): UploadSession {
    const s = this.sessions.get(id);
    if (!s || s.repo !== repo) throw new OmniError('BLOB_UPLOAD_UNKNOWN', `no upload ${id.slice(0, 64)} in repository ${repo}`);
    s.lastActiveMs = Date.now();
    return s;
  }

  /**
   * Appends a chunk (the request body) at the session's offset. The checks of protocol/registry/upload.ts
   * come first; then the size limit and the disk space are enforced while the bytes arrive. The
   * bytes are written in runs of about WRITE_BATCH_BYTES. `completes`: this request ends the
   * upload (a monolithic POST, or the PUT that carries the rest) — when it carries the whole blob
   * with its length announced, the bytes are hashed as they arrive and finish() does not read
   * the file back.
   */
  async append(s: UploadSession, body: AsyncIterable<Uint8Array>, contentRange: string | undefined, contentLength: number | undefined, completes = false): Promise<number> {
    const check = checkChunk(s, contentRange, contentLength, this.store.maxBlobBytes);
    if (!check.ok) throw new OmniError(check.code, check.message);
    s.busy = true;
    s.hashed = undefined;
    try {
      await this.store.ensureSpace(check.expectedBytes ?? 0);
      const hasher = completes && s.offsetBytes === 0 && check.expectedBytes !== undefined && check.expectedBytes > 0 ? new BlobHasher(this.store.pieceSizeForSize(check.expectedBytes)) : undefined;
      const fh = await open(s.path, 'r+');
      const start = s.offsetBytes;
      const out = new BatchedWriter(fh, start, WRITE_BATCH_BYTES);
      let sinceCheck = 0;
      try {
        for await (const chunk of body) {
          const taken = out.position + out.buffered - start;
          if (start + taken + chunk.byteLength > this.store.maxBlobBytes) throw new OmniError('SIZE_INVALID', `the blob would exceed ${this.store.maxBlobBytes} bytes`);
          if (check.expectedBytes !== undefined && taken + chunk.byteLength > check.expectedBytes) throw new OmniError('SIZE_INVALID', `the chunk is longer than the ${check.expectedBytes} bytes announced`);
          sinceCheck += chunk.byteLength;
          if (check.expectedBytes === undefined && sinceCheck >= SPACE_CHECK_EVERY_BYTES) {
            sinceCheck = 0;
            await out.flush();
            s.offsetBytes = out.position;
            await this.store.ensureSpace(SPACE_CHECK_EVERY_BYTES);
          }
          hasher?.update(chunk);
          await out.push(chunk);
          s.offsetBytes = out.position;
        }
        await out.flush();
        s.offsetBytes = out.position;
      } finally {
        await fh.close();
      }
      const written = s.offsetBytes - start;
      if (check.expectedBytes !== undefined && written !== check.expectedBytes) throw new OmniError('SIZE_INVALID', `the chunk has ${written} bytes, ${check.expectedBytes} were announced`);
      if (hasher) s.hashed = hasher.result();
      return s.offsetBytes;
    } finally {
      s.busy = false;
      s.lastActiveMs = Date.now();
    }
  }

  /** Verifies and commits the upload as `digest`; the session ends either way. */
  async finish(s: UploadSession, digest: string): Promise<BlobInfo> {
    if (s.busy) throw new OmniError('BLOB_UPLOAD_INVALID', 'another request is writing to this upload');
    this.sessions.delete(s.id);
    return this.store.commit(s.path, digest, undefined, s.hashed ? { hashed: s.hashed } : {});
  }

  async cancel(s: UploadSession): Promise<void> {
    this.sessions.delete(s.id);
    await rm(s.path, { force: true });
  }

  /** Drops sessions idle for longer than the limit. */
  async sweep(nowMs = Date.now()): Promise<void> {
    for (const id of idleSessions(this.sessions.values(), nowMs, this.limits.idleTimeoutMs)) {
      const s = this.sessions.get(id)!;
      this.sessions.delete(id);
      await rm(s.path, { force: true });
    }
  }

  /** Removes every session's temp file (shutdown). */
  async closeAll(): Promise<void> {
    for (const s of this.sessions.values()) await rm(s.path, { force: true });
    this.sessions.clear();
  }
}
