// Every node's content-addressed blob store (image layers and configs). A blob is written to a
// temp file, then verified (its sha256 must be the digest it is stored under), fsync'ed and
// renamed into place, with its piece digests (1 MiB pieces, larger for blobs over 1 GiB) in a sidecar file written the same
// way. Reads verify again, piece by piece, before any byte leaves: a piece that no longer
// matches its digest makes the blob corrupt — it is removed (and reported through onRemoved so
// the cluster stops asking this node for it) and the read fails.
//
//   DIR/blobs/sha256/<hex>          the bytes
//   DIR/blobs/sha256/<hex>.pieces   {"sizeBytes", "pieceSizeBytes", "pieces": [hex…]}
//   DIR/tmp/                        uploads and fetches in progress (emptied at open, except
//                                   resumable fetches, see fetchPath)
import { createHash, randomUUID, type Hash } from 'node:crypto';
import { open, readdir, readFile, rename, rm, stat, statfs, mkdir, utimes, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { OmniError } from '../errors.js';
import { BatchedWriter, fsyncPath, tempBeside, writeFileAtomic, writeSynced } from '../files.js';
import type { Logger } from '../logger.js';
import { isDigest, digestOfHex, hexOf } from '../../protocol/registry/digest.js';
import { pieceSizeFor, pieceCount, pieceSpan, piecesCovering, validPieces } from '../../protocol/registry/pieces.js';
import { MAX_BLOB_BYTES } from '../../protocol/registry/records.js';

/** Free space the store leaves on the disk: a blob that would eat into it is refused (NO_SPACE). */
export const DEFAULT_MIN_FREE_BYTES = 512 * 1024 * 1024;
/** Read size when hashing a whole file. */
const HASH_READ_BYTES = 1024 * 1024;
/** Bytes of a streamed blob gathered before they are written (one writev per run, not one write per frame). */
const RECEIVE_WRITE_BYTES = 1024 * 1024;
const FETCH_PREFIX = 'fetch-';

export interface BlobInfo {
  digest: string;
  sizeBytes: number;
  pieceSizeBytes: number;
  pieces: string[];
}

export interface BlobStoreOptions {
  /** The store's directory (DIR above). */
  dir: string;
  log: Logger;
  pieceSizeBytes?: number;
  maxBlobBytes?: number;
  minFreeBytes?: number;
  /** Free bytes on the store's file system (tests inject a full disk). */
  freeBytes?: (dir: string) => Promise<number>;
  /**
   * How old a measure of the free bytes may be when a check passes (default FREE_SPACE_MAX_AGE_MS);
   * 0: measure at every check.
   */
  freeSpaceMaxAgeMs?: number;
  /** A blob became available here (pushed or fetched). */
  onAdded?: (digest: string) => void;
  /** A blob left this store (deleted, or found corrupt). */
  onRemoved?: (digest: string, why: 'deleted' | 'corrupt') => void;
}

/**
 * A space check passes on a measure of the file system's free bytes up to this old, less what this
 * store has let through since: a small blob (a one-file sync's) no longer waits for a statfs behind
 * the thread pool's other work. A check that would fail measures again first.
 */
export const FREE_SPACE_MAX_AGE_MS = 1000;

async function statfsFree(dir: string): Promise<number> {
  const s = await statfs(dir);
  return Number(s.bavail) * Number(s.bsize);
}

export class BlobStore {
  /** A fixed piece size for new blobs (tests); undefined: pieceSizeFor(the blob's size). */
  readonly pieceSizeBytes: number | undefined;
  readonly maxBlobBytes: number;
  readonly minFreeBytes: number;
  private readonly blobsDir: string;
  private readonly tmpDir: string;
  /** Blobs held here, with their piece digests (loaded at open). */
  private readonly blobs = new Map<string, BlobInfo>();
  /** When each blob arrived here, or was pushed here again (file mtime at open); for the GC grace period. */
  private readonly storedAtMs = new Map<string, number>();
  private readonly freeBytes: (dir: string) => Promise<number>;
  /** The last measure of the free bytes, less the bytes let through since (ensureSpace). */
  private freeMeasure: { atMs: number; bytes: number } | undefined;

  private constructor(private readonly opts: BlobStoreOptions) {
    this.pieceSizeBytes = opts.pieceSizeBytes;
    this.maxBlobBytes = opts.maxBlobBytes ?? MAX_BLOB_BYTES;
    this.minFreeBytes = opts.minFreeBytes ?? DEFAULT_MIN_FREE_BYTES;
    this.freeBytes = opts.freeBytes ?? statfsFree;
    this.blobsDir = join(opts.dir, 'blobs', 'sha256');
    this.tmpDir = join(opts.dir, 'tmp');
  }

  /** Opens (creating) the store: loads the blobs it holds, drops unfinished uploads. */
  static async open(opts: BlobStoreOptions): Promise<BlobStore> {
    const store = new BlobStore(opts);
    await mkdir(store.blobsDir, { recursive: true, mode: 0o700 });
    await mkdir(store.tmpDir, { recursive: true, mode: 0o700 });
    for (const name of await readdir(store.tmpDir)) {
      // Fetches resume from their partial file; uploads cannot (the client restarts them).
      if (!name.startsWith(FETCH_PREFIX)) await rm(join(store.tmpDir, name), { force: true });
    }
    await store.load();
    return store;
  }

  private async load(): Promise<void> {
    for (const name of await readdir(this.blobsDir)) {
      if (!/^[a-f0-9]{64}$/.test(name)) {
        if (!/^[a-f0-9]{64}\.pieces$/.test(name)) await rm(join(this.blobsDir, name), { force: true }); // leftovers of an interrupted write
        continue;
      }
      const digest = digestOfHex(name);
      const info = await this.readSidecar(digest);
      if (info) {
        this.blobs.set(digest, info);
        this.storedAtMs.set(digest, await mtimeMs(this.blobPath(digest)));
        continue;
      }
      // No usable sidecar (a crash between the two renames): hash the blob again.
      try {
        const hashed = await hashFile(this.blobPath(digest), await this.pieceSizeOf(this.blobPath(digest)));
        if (hashed.digest !== digest) throw new Error(`its sha256 is ${hashed.digest}`);
        await writeFileAtomic(this.sidecarPath(digest), JSON.stringify({ sizeBytes: hashed.sizeBytes, pieceSizeBytes: hashed.pieceSizeBytes, pieces: hashed.pieces }));
        this.blobs.set(digest, hashed);
        this.storedAtMs.set(digest, await mtimeMs(this.blobPath(digest)));
      } catch (err) {
        this.opts.log.warn(`registry: blob ${digest} is damaged and was removed: ${(err as Error).message}`);
        await this.removeFiles(digest);
      }
    }
  }

  private async readSidecar(digest: string): Promise<BlobInfo | undefined> {
    try {
      const o = JSON.parse(await readFile(this.sidecarPath(digest), 'utf8')) as Partial<BlobInfo>;
      const size = (await stat(this.blobPath(digest))).size;
      if (o.sizeBytes !== size || !validPieces(size, o.pieceSizeBytes as number, o.pieces)) return undefined;
      return { digest, sizeBytes: size, pieceSizeBytes: o.pieceSizeBytes as number, pieces: o.pieces as string[] };
    } catch {
      return undefined;
    }
  }

  /** The piece size a new blob in file `path` is cut into. */
  private async pieceSizeOf(path: string): Promise<number> {
    return this.pieceSizeBytes ?? pieceSizeFor((await stat(path)).size);
  }

  private blobPath(digest: string): string {
    return join(this.blobsDir, hexOf(digest));
  }

  private sidecarPath(digest: string): string {
    return join(this.blobsDir, `${hexOf(digest)}.pieces`);
  }

  has(digest: string): boolean {
    return this.blobs.has(digest);
  }

  info(digest: string): BlobInfo | undefined {
    return this.blobs.get(digest);
  }

  /** Digests of every blob held here. */
  held(): string[] {
    return [...this.blobs.keys()];
  }

  /** Bytes of all blobs held here. */
  heldBytes(): number {
    let n = 0;
    for (const b of this.blobs.values()) n += b.sizeBytes;
    return n;
  }

  /**
   * Throws NO_SPACE unless `bytes` more fit on the disk above the reserve: by a measure of the free
   * bytes at most FREE_SPACE_MAX_AGE_MS old less what passed since, else (or when that says no) measured now.
   */
  async ensureSpace(bytes: number): Promise<void> {
    const last = this.freeMeasure;
    const fresh = last !== undefined && performance.now() - last.atMs <= (this.opts.freeSpaceMaxAgeMs ?? FREE_SPACE_MAX_AGE_MS);
    if (fresh && last.bytes - bytes >= this.minFreeBytes) {
      last.bytes -= bytes;
      return;
    }
    const atMs = performance.now();
    const free = await this.freeBytes(this.opts.dir);
    if (free - bytes < this.minFreeBytes) {
      this.freeMeasure = undefined;
      throw new OmniError('NO_SPACE', `not enough disk space for ${bytes} more bytes of blobs: ${free} bytes free, ${this.minFreeBytes} kept in reserve`);
    }
    this.freeMeasure = { atMs, bytes: free - bytes };
  }

  /** Throws TOO_LARGE for a blob over the size limit. */
  checkSize(bytes: number): void {
    if (bytes > this.maxBlobBytes) throw new OmniError('TOO_LARGE', `a blob may be at most ${this.maxBlobBytes} bytes, this one has ${bytes}`);
  }

  /** A fresh temp file path for an upload. */
  tempPath(): string {
    return join(this.tmpDir, `upload-${randomUUID()}`);
  }

  /** The partial file of a fetch of `digest` (kept across restarts, so a fetch resumes). */
  fetchPath(digest: string): string {
    return join(this.tmpDir, `${FETCH_PREFIX}${hexOf(digest)}`);
  }

  /** The piece size a new blob of `sizeBytes` is cut into. */
  pieceSizeForSize(sizeBytes: number): number {
    return this.pieceSizeBytes ?? pieceSizeFor(sizeBytes);
  }

  /**
   * Moves a finished temp file into the store as `digest`: hashes it from disk (the digest, and
   * the recorded piece digests when `expectedPieces` is given, must match; else DIGEST_INVALID
   * and the file is removed), fsyncs it and its sidecar (written beside it) together, renames both
   * into place, fsyncs the directory once. Returns the blob's info (already held: the existing one, the temp file removed).
   * Not read back from disk when the caller saw every byte as it wrote them: `o.hashed` (the
   * bytes went through a BlobHasher on their way to the file; checked like a hash from disk), or
   * `o.piecesVerified` (a fetch: each piece was checked against `expectedPieces` as it arrived;
   * those piece digests come from the catalog record the node that took the push wrote after
   * hashing the whole blob, so matching pieces are that blob).
   */
  async commit(tmpPath: string, digest: string, expectedPieces?: { pieceSizeBytes: number; pieces: string[] }, o: { hashed?: BlobInfo; piecesVerified?: boolean } = {}): Promise<BlobInfo> {
    if (!isDigest(digest)) throw new OmniError('DIGEST_INVALID', `${digest.slice(0, 80)} is not a sha256 digest`);
    const existing = this.blobs.get(digest);
    if (existing) {
      await rm(tmpPath, { force: true });
      return this.touch(digest, existing);
    }
    let hashed: BlobInfo;
    try {
      if (o.piecesVerified && expectedPieces) {
        const sizeBytes = (await stat(tmpPath)).size;
        if (expectedPieces.pieces.length !== pieceCount(sizeBytes, expectedPieces.pieceSizeBytes)) throw new OmniError('DIGEST_INVALID', `blob ${digest}: ${sizeBytes} bytes do not fit its recorded pieces`);
        hashed = { digest, sizeBytes, pieceSizeBytes: expectedPieces.pieceSizeBytes, pieces: expectedPieces.pieces };
      } else hashed = o.hashed ?? (await hashFile(tmpPath, expectedPieces?.pieceSizeBytes ?? (await this.pieceSizeOf(tmpPath))));
      if (hashed.digest !== digest) throw new OmniError('DIGEST_INVALID', `the content's digest is ${hashed.digest}, not ${digest}`);
      if (expectedPieces && hashed.pieces.some((p, i) => p !== expectedPieces.pieces[i])) throw new OmniError('DIGEST_INVALID', `blob ${digest} has piece digests other than those recorded`);
      this.checkSize(hashed.sizeBytes);
    } catch (err) {
      await rm(tmpPath, { force: true });
      throw err;
    }
    return this.install(digest, hashed, tmpPath);
  }

  /**
   * Puts a checked blob in place: the blob (written now when `bytes` are given, else the temp file
   * synced) and its sidecar are written and synced at once, renamed at once, and the directory
   * synced once for both (two rounds of fsync, not four one after the other). A crash before the
   * directory sync may keep either rename: a blob without its sidecar is hashed again at open, a
   * sidecar alone is unused (replaced when the blob comes again), a temp file is removed at open.
   */
  private async install(digest: string, hashed: BlobInfo, tmpPath: string, bytes?: Buffer): Promise<BlobInfo> {
    const sidecarTmp = tempBeside(this.sidecarPath(digest));
    try {
      await Promise.all([bytes ? writeSynced(tmpPath, bytes) : fsyncPath(tmpPath), writeSynced(sidecarTmp, JSON.stringify({ sizeBytes: hashed.sizeBytes, pieceSizeBytes: hashed.pieceSizeBytes, pieces: hashed.pieces }))]);
      await Promise.all([rename(sidecarTmp, this.sidecarPath(digest)), rename(tmpPath, this.blobPath(digest))]);
    } catch (err) {
      await Promise.all([rm(tmpPath, { force: true }), rm(sidecarTmp, { force: true })]);
      throw err;
    }
    await fsyncPath(this.blobsDir);
    this.blobs.set(digest, hashed);
    this.storedAtMs.set(digest, Date.now());
    this.opts.onAdded?.(digest);
    return hashed;
  }

  /**
   * Keeps `bytes` as blob `digest` (a small blob a peer sent whole): hashed here — the digest and
   * the expected pieces must match, else DIGEST_INVALID and nothing is kept —, then committed.
   */
  async commitBytes(digest: string, bytes: Buffer, expectedPieces: { pieceSizeBytes: number; pieces: string[] }): Promise<BlobInfo> {
    if (!Number.isSafeInteger(expectedPieces.pieceSizeBytes) || expectedPieces.pieceSizeBytes <= 0) throw new OmniError('DIGEST_INVALID', `blob ${digest}: bad piece size`);
    const hasher = new BlobHasher(expectedPieces.pieceSizeBytes);
    hasher.update(bytes);
    const hashed = hasher.result();
    if (hashed.digest !== digest) throw new OmniError('DIGEST_INVALID', `the bytes sent are ${hashed.digest}, not ${digest}`);
    if (hashed.pieces.length !== expectedPieces.pieces.length) throw new OmniError('DIGEST_INVALID', `blob ${digest}: ${hashed.pieces.length} pieces, ${expectedPieces.pieces.length} recorded`);
    if (hashed.pieces.some((p, i) => p !== expectedPieces.pieces[i])) throw new OmniError('DIGEST_INVALID', `blob ${digest} has piece digests other than those recorded`);
    this.checkSize(bytes.length);
    const existing = this.blobs.get(digest);
    if (existing) return this.touch(digest, existing);
    await this.ensureSpace(bytes.length);
    // written in place of a temp file in one go (no second open to sync it)
    return this.install(digest, hashed, this.tempPath(), bytes);
  }

  /**
   * Keeps a blob a peer streams here (a copy pushed to this node): `chunks` are written to a temp
   * file in runs of about 1 MiB and each piece is checked against `expected.pieces` as it completes
   * (DIGEST_INVALID at the first that differs: the rest is not waited for); exactly
   * `expected.sizeBytes` bytes must come (SIZE_INVALID); nothing is kept otherwise. The whole
   * blob is not hashed again: its record comes from the member that took the push and hashed the
   * whole blob and its pieces in one pass (or from the catalog, for a repair copy), so bytes whose
   * every piece matches it are that blob — as a fetch's pieces are (commit's `piecesVerified`); a
   * one-piece record must name the digest itself. One SHA-256 pass over a copy instead of two.
   * The size limit and the disk space are checked before `chunks` is asked for its first byte.
   * `onWritten`: told how many bytes are in the file after each run written.
   */
  async receive(digest: string, expected: { sizeBytes: number; pieceSizeBytes: number; pieces: string[] }, chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, onWritten?: (bytes: number) => void): Promise<BlobInfo> {
    if (!isDigest(digest)) throw new OmniError('DIGEST_INVALID', `${digest.slice(0, 80)} is not a sha256 digest`);
    const { sizeBytes, pieceSizeBytes } = expected;
    if (!Number.isSafeInteger(pieceSizeBytes) || pieceSizeBytes <= 0) throw new OmniError('DIGEST_INVALID', `blob ${digest}: bad piece size`);
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0 || expected.pieces.length !== pieceCount(sizeBytes, pieceSizeBytes)) throw new OmniError('DIGEST_INVALID', `blob ${digest}: ${sizeBytes} bytes do not fit its ${expected.pieces.length} pieces`);
    if (expected.pieces.length === 1 && digestOfHex(expected.pieces[0]) !== digest) throw new OmniError('DIGEST_INVALID', `blob ${digest}: its one piece is recorded as ${expected.pieces[0]}`);
    this.checkSize(sizeBytes);
    await this.ensureSpace(sizeBytes);
    const tmpPath = this.tempPath();
    const checker = new BlobHasher(pieceSizeBytes, { digest, pieces: expected.pieces });
    const fh = await open(tmpPath, 'wx', 0o600);
    try {
      const out = new BatchedWriter(fh, 0, RECEIVE_WRITE_BYTES);
      try {
        for await (const chunk of chunks) {
          if (out.position + out.buffered + chunk.byteLength > sizeBytes) throw new OmniError('SIZE_INVALID', `blob ${digest}: more than its ${sizeBytes} bytes sent`);
          checker.update(chunk);
          const before = out.position;
          await out.push(chunk);
          if (out.position !== before) onWritten?.(out.position);
        }
        const before = out.position;
        await out.flush();
        if (out.position !== before) onWritten?.(out.position);
      } finally {
        await fh.close();
      }
      const written = out.position;
      if (written !== sizeBytes) throw new OmniError('SIZE_INVALID', `blob ${digest}: ${written} of its ${sizeBytes} bytes came`);
      checker.result();
    } catch (err) {
      await rm(tmpPath, { force: true });
      throw err;
    }
    return this.commit(tmpPath, digest, expected, { piecesVerified: true });
  }

  /**
   * A held blob's bytes as stored, in chunks of at most `chunkBytes`, each a buffer of its own
   * (a stream may hold it until sent), not verified (for a copy streamed to a peer, which hashes
   * them itself). BLOB_UNKNOWN when not held; BLOB_CORRUPT when the file is shorter than recorded.
   */
  async *readUnverified(digest: string, chunkBytes: number): AsyncGenerator<Buffer> {
    const info = this.blobs.get(digest);
    if (!info) throw new OmniError('BLOB_UNKNOWN', `blob ${digest} is not on this node`);
    let fh: FileHandle;
    try {
      fh = await open(this.blobPath(digest), 'r');
    } catch (err) {
      throw new OmniError('BLOB_CORRUPT', `blob ${digest} cannot be read on this node: ${(err as Error).message}`);
    }
    try {
      let off = 0;
      while (off < info.sizeBytes) {
        const buf = Buffer.allocUnsafe(Math.min(chunkBytes, info.sizeBytes - off));
        const { bytesRead } = await fh.read(buf, 0, buf.length, off);
        if (bytesRead === 0) throw new OmniError('BLOB_CORRUPT', `blob ${digest} holds ${off} bytes on this node, ${info.sizeBytes} recorded`);
        off += bytesRead;
        yield buf.subarray(0, bytesRead);
      }
    } finally {
      await fh.close();
    }
  }

  /** A blob pushed again: young again for garbage collection (its manifest may be on the way). */
  private async touch(digest: string, info: BlobInfo): Promise<BlobInfo> {
    const now = new Date();
    this.storedAtMs.set(digest, now.getTime());
    await utimes(this.blobPath(digest), now, now).catch(() => undefined); // kept across a restart
    return info;
  }

  /** Piece `index` of a held blob, verified against its digest (BLOB_CORRUPT: the blob is removed). */
  async readPiece(digest: string, index: number): Promise<Buffer> {
    const info = this.blobs.get(digest);
    if (!info) throw new OmniError('BLOB_UNKNOWN', `blob ${digest} is not on this node`);
    if (!Number.isSafeInteger(index) || index < 0 || index >= info.pieces.length) throw new OmniError('BAD_REQUEST', `blob ${digest} has no piece ${index}`);
    const { start, end } = pieceSpan(index, info.sizeBytes, info.pieceSizeBytes);
    const buf = Buffer.allocUnsafe(end - start);
    let fh: FileHandle;
    try {
      fh = await open(this.blobPath(digest), 'r');
    } catch (err) {
      await this.markCorrupt(digest, `cannot open it: ${(err as Error).message}`);
      throw new OmniError('BLOB_CORRUPT', `blob ${digest} is missing on this node`);
    }
    try {
      let off = 0;
      while (off < buf.length) {
        const { bytesRead } = await fh.read(buf, off, buf.length - off, start + off);
        if (bytesRead === 0) break;
        off += bytesRead;
      }
      if (off !== buf.length) {
        await this.markCorrupt(digest, `piece ${index} is cut short`);
        throw new OmniError('BLOB_CORRUPT', `blob ${digest} is damaged on this node (removed)`);
      }
    } finally {
      await fh.close();
    }
    if (createHash('sha256').update(buf).digest('hex') !== info.pieces[index]) {
      await this.markCorrupt(digest, `piece ${index} does not match its digest`);
      throw new OmniError('BLOB_CORRUPT', `blob ${digest} is damaged on this node (removed)`);
    }
    return buf;
  }

  /**
   * The bytes [start, end] (inclusive) of a held blob, one verified piece at a time: a piece is
   * read and checked whole before any of it is yielded.
   */
  async *read(digest: string, start = 0, end?: number): AsyncGenerator<Buffer> {
    const info = this.blobs.get(digest);
    if (!info) throw new OmniError('BLOB_UNKNOWN', `blob ${digest} is not on this node`);
    const last = end ?? info.sizeBytes - 1;
    if (info.sizeBytes === 0 || last < start) return;
    const { first, last: lastPiece } = piecesCovering(start, last, info.pieceSizeBytes);
    for (let i = first; i <= lastPiece; i++) {
      const piece = await this.readPiece(digest, i);
      const base = i * info.pieceSizeBytes;
      yield piece.subarray(Math.max(0, start - base), Math.min(piece.length, last - base + 1));
    }
  }

  /**
   * A small held blob's bytes as stored, not verified here (for a copy sent to a peer, which
   * checks them against the digest itself). BLOB_UNKNOWN when not held.
   */
  async readAll(digest: string): Promise<Buffer> {
    const info = this.blobs.get(digest);
    if (!info) throw new OmniError('BLOB_UNKNOWN', `blob ${digest} is not on this node`);
    const bytes = await readFile(this.blobPath(digest));
    if (bytes.length !== info.sizeBytes) throw new OmniError('BLOB_CORRUPT', `blob ${digest} holds ${bytes.length} bytes, ${info.sizeBytes} recorded`);
    return bytes;
  }

  /** When a held blob arrived here (or was last pushed here again), ms since the epoch. */
  storedAt(digest: string): number | undefined {
    return this.storedAtMs.get(digest);
  }

  /**
   * Removes a held blob unless it arrived (or was pushed again) after `cutoffMs`; the check and
   * the removal from the index happen at once, so a push of the same blob that lands meanwhile
   * either keeps it or writes it anew. Resolves true when removed.
   */
  async deleteIfStoredBefore(digest: string, cutoffMs: number): Promise<boolean> {
    const at = this.storedAtMs.get(digest);
    if (at === undefined || at > cutoffMs) return false;
    return this.delete(digest);
  }

  /** Removes a held blob (no-op when absent). */
  async delete(digest: string): Promise<boolean> {
    if (!this.blobs.delete(digest)) return false;
    this.storedAtMs.delete(digest);
    await this.removeFiles(digest);
    this.opts.onRemoved?.(digest, 'deleted');
    return true;
  }

  private async markCorrupt(digest: string, why: string): Promise<void> {
    if (!this.blobs.delete(digest)) return;
    this.storedAtMs.delete(digest);
    this.opts.log.error(`registry: blob ${digest} is corrupt on this node (${why}); removed, it will be fetched again from a peer when needed`);
    await this.removeFiles(digest);
    this.opts.onRemoved?.(digest, 'corrupt');
  }

  private async removeFiles(digest: string): Promise<void> {
    await rm(this.blobPath(digest), { force: true });
    await rm(this.sidecarPath(digest), { force: true });
  }
}

/**
 * sha256 of a blob's bytes and of each of its pieces, fed in order (hashFile reads a file through
 * it; an upload whose size is known hashes the bytes as they arrive, so the commit need not read
 * them back). With `expected` (a copy from a member, BlobStore.receive) it checks each piece
 * against the record as the piece completes (DIGEST_INVALID at the first that differs) and does not
 * hash the whole blob: the result names `expected.digest`.
 */
export class BlobHasher {
  private readonly whole: Hash | undefined;
  private piece = createHash('sha256');
  private inPiece = 0;
  private sizeBytes = 0;
  private readonly pieces: string[] = [];

  constructor(
    readonly pieceSizeBytes: number,
    private readonly expected?: { digest: string; pieces: readonly string[] },
  ) {
    this.whole = expected ? undefined : createHash('sha256');
  }

  update(buf: Uint8Array): void {
    let off = 0;
    while (off < buf.length) {
      const take = Math.min(buf.length - off, this.pieceSizeBytes - this.inPiece);
      const chunk = take === buf.length ? buf : buf.subarray(off, off + take);
      this.whole?.update(chunk);
      this.piece.update(chunk);
      this.inPiece += take;
      off += take;
      if (this.inPiece === this.pieceSizeBytes) this.endPiece();
    }
    this.sizeBytes += buf.length;
  }

  /** The blob's info; the hasher is spent. */
  result(): BlobInfo {
    if (this.inPiece > 0) this.endPiece();
    if (this.pieces.length !== pieceCount(this.sizeBytes, this.pieceSizeBytes)) throw new Error('piece count mismatch');
    if (this.expected && this.pieces.length !== this.expected.pieces.length) throw new OmniError('DIGEST_INVALID', `blob ${this.expected.digest}: ${this.pieces.length} pieces came, ${this.expected.pieces.length} recorded`);
    return { digest: this.expected?.digest ?? digestOfHex(this.whole!.digest('hex')), sizeBytes: this.sizeBytes, pieceSizeBytes: this.pieceSizeBytes, pieces: this.pieces };
  }

  private endPiece(): void {
    const hex = this.piece.digest('hex');
    const want = this.expected?.pieces[this.pieces.length];
    if (this.expected && hex !== want) throw new OmniError('DIGEST_INVALID', `blob ${this.expected.digest}: piece ${this.pieces.length} is ${hex}, ${want ?? 'none'} recorded`);
    this.pieces.push(hex);
    this.piece = createHash('sha256');
    this.inPiece = 0;
  }
}

/** sha256 of a whole file and of each of its pieces. */
export async function hashFile(path: string, pieceSizeBytes: number): Promise<BlobInfo> {
  const hasher = new BlobHasher(pieceSizeBytes);
  let size = 0;
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(HASH_READ_BYTES);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, size);
      if (bytesRead === 0) break;
      hasher.update(buf.subarray(0, bytesRead));
      size += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return hasher.result();
}

async function mtimeMs(path: string): Promise<number> {
  try {
    return (await stat(path)).mtimeMs;
  } catch {
    return Date.now();
  }
}
