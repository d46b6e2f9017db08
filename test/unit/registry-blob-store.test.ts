// The blob store: content-addressed commit (verify, fsync, rename), piece digests, verified
// reads that catch corruption, disk space and size limits, upload sessions.
import { afterEach, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, readdir, rm, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlobStore } from '../../node/registry/blob-store.js';
import { UploadSessions } from '../../node/registry/uploads.js';
import { silentLogger } from '../../node/logger.js';
import { OmniError } from '../../node/errors.js';

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'omni-blobs-'));
  dirs.push(d);
  return d;
}
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

const PIECE = 64 * 1024;
const sha = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');
const pieceHex = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function storeIn(dir: string, over: Partial<Parameters<typeof BlobStore.open>[0]> = {}) {
  const events: string[] = [];
  const store = await BlobStore.open({
    dir,
    log: silentLogger,
    pieceSizeBytes: PIECE,
    minFreeBytes: 0,
    onAdded: (d) => events.push(`+${d}`),
    onRemoved: (d, why) => events.push(`-${d}:${why}`),
    ...over,
  });
  return { store, events };
}

async function put(store: BlobStore, bytes: Uint8Array, digest = sha(bytes)) {
  const tmp = store.tempPath();
  await writeFile(tmp, bytes);
  return store.commit(tmp, digest);
}

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of it) parts.push(p);
  return Buffer.concat(parts);
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'no error';
  } catch (e) {
    return (e as OmniError).code ?? String(e);
  }
}

describe('BlobStore', () => {
  it('commits a blob under its digest with per-piece digests, and reads any range back', async () => {
    const dir = await tempDir();
    const { store, events } = await storeIn(dir);
    const bytes = randomBytes(PIECE * 3 + 1234);
    const info = await put(store, bytes);
    expect(info.sizeBytes).toBe(bytes.length);
    expect(info.pieces).toEqual([0, 1, 2, 3].map((i) => pieceHex(bytes.subarray(i * PIECE, (i + 1) * PIECE))));
    expect(store.has(sha(bytes))).toBe(true);
    expect(events).toEqual([`+${sha(bytes)}`]);
    expect((await collect(store.read(sha(bytes)))).equals(bytes)).toBe(true);
    // ranges inside one piece, across pieces, at the end
    for (const [s, e] of [[10, 20], [PIECE - 5, PIECE + 5], [PIECE * 3, bytes.length - 1], [0, 0]]) {
      expect((await collect(store.read(sha(bytes), s, e))).equals(bytes.subarray(s, e + 1))).toBe(true);
    }
    // the temp dir holds nothing after a commit
    expect(await readdir(join(dir, 'tmp'))).toEqual([]);
    // the empty blob works too
    const empty = await put(store, new Uint8Array(0));
    expect(empty.pieces).toEqual([]);
    expect((await collect(store.read(empty.digest))).length).toBe(0);
  });

  it('refuses content whose digest differs, and leaves nothing behind', async () => {
    const dir = await tempDir();
    const { store } = await storeIn(dir);
    const bytes = randomBytes(1000);
    const other = sha(randomBytes(10));
    expect(await codeOf(put(store, bytes, other))).toBe('DIGEST_INVALID');
    expect(store.has(other)).toBe(false);
    expect(await readdir(join(dir, 'tmp'))).toEqual([]);
    expect(await readdir(join(dir, 'blobs', 'sha256'))).toEqual([]);
  });

  it('refuses a fetched file whose pieces differ from those recorded', async () => {
    const { store } = await storeIn(await tempDir());
    const bytes = randomBytes(PIECE * 2);
    const tmp = store.tempPath();
    await writeFile(tmp, bytes);
    const wrong = [pieceHex(bytes.subarray(0, PIECE)), '0'.repeat(64)];
    expect(await codeOf(store.commit(tmp, sha(bytes), { pieceSizeBytes: PIECE, pieces: wrong }))).toBe('DIGEST_INVALID');
  });

  it('detects a corrupted piece when serving: nothing of that piece is sent, the blob is removed and reported', async () => {
    const dir = await tempDir();
    const { store, events } = await storeIn(dir);
    const bytes = randomBytes(PIECE * 2 + 10);
    const d = sha(bytes);
    await put(store, bytes);
    // flip one byte in the second piece on disk
    const fh = await open(join(dir, 'blobs', 'sha256', d.slice(7)), 'r+');
    await fh.write(Buffer.from([bytes[PIECE + 7] ^ 0xff]), 0, 1, PIECE + 7);
    await fh.close();
    const got: Buffer[] = [];
    const err = await codeOf((async () => {
      for await (const p of store.read(d)) got.push(p);
    })());
    expect(err).toBe('BLOB_CORRUPT');
    expect(Buffer.concat(got).equals(bytes.subarray(0, PIECE))).toBe(true); // only the good first piece
    expect(store.has(d)).toBe(false);
    expect(events).toContain(`-${d}:corrupt`);
    expect(await codeOf(store.readPiece(d, 0))).toBe('BLOB_UNKNOWN');
  });

  it('reloads held blobs at open; recomputes a missing sidecar; drops a blob that no longer matches its name', async () => {
    const dir = await tempDir();
    const { store } = await storeIn(dir);
    const a = randomBytes(PIECE + 1);
    const b = randomBytes(500);
    await put(store, a);
    await put(store, b);
    await rm(join(dir, 'blobs', 'sha256', sha(a).slice(7) + '.pieces'));
    await writeFile(join(dir, 'blobs', 'sha256', sha(b).slice(7)), randomBytes(500)); // damaged, and its sidecar still matches by size
    await rm(join(dir, 'blobs', 'sha256', sha(b).slice(7) + '.pieces'));
    await writeFile(join(dir, 'tmp', 'upload-leftover'), 'x');
    const { store: again } = await storeIn(dir);
    expect(again.has(sha(a))).toBe(true);
    expect(again.info(sha(a))!.pieces.length).toBe(2);
    expect(JSON.parse(await readFile(join(dir, 'blobs', 'sha256', sha(a).slice(7) + '.pieces'), 'utf8')).pieces.length).toBe(2);
    expect(again.has(sha(b))).toBe(false);
    expect(await readdir(join(dir, 'tmp'))).toEqual([]);
  });

  it('refuses blobs over the size limit and when the disk is short of space', async () => {
    let free = 10_000_000;
    const { store } = await storeIn(await tempDir(), { maxBlobBytes: 1000, minFreeBytes: 1_000_000, freeBytes: async () => free });
    expect(await codeOf(put(store, randomBytes(1001)))).toBe('TOO_LARGE');
    await expect(store.ensureSpace(8_000_000)).resolves.toBeUndefined();
    expect(await codeOf(store.ensureSpace(9_500_000))).toBe('NO_SPACE');
    free = 500_000;
    expect(await codeOf(store.ensureSpace(0))).toBe('NO_SPACE');
    // a small blob a peer sends whole (commitBytes) keeps the same reserve, and nothing is kept
    const bytes = randomBytes(500);
    expect(await codeOf(store.commitBytes(sha(bytes), bytes, { pieceSizeBytes: PIECE, pieces: [pieceHex(bytes)] }))).toBe('NO_SPACE');
    expect(store.has(sha(bytes))).toBe(false);
    free = 10_000_000;
    await store.commitBytes(sha(bytes), bytes, { pieceSizeBytes: PIECE, pieces: [pieceHex(bytes)] });
    expect(store.has(sha(bytes))).toBe(true);
  });
});

describe('blob store space checks', () => {
  it('pass on a recent measure less what passed since, and measure again before refusing or once it is old', async () => {
    let free = 10_000_000;
    let measures = 0;
    const freeBytes = async () => (measures++, free);
    const { store } = await storeIn(await tempDir(), { minFreeBytes: 1_000_000, freeBytes, freeSpaceMaxAgeMs: 60_000 });
    await store.ensureSpace(4_000_000);
    await store.ensureSpace(4_000_000); // 2,000,000 left by the measure: no statfs
    expect(measures).toBe(1);
    // over what the measure leaves: measured again (the disk may have been freed meanwhile)
    free = 20_000_000;
    await store.ensureSpace(4_000_000);
    expect(measures).toBe(2);
    // refused only on a measure made now (16,000,000 left by the last one)
    free = 1_500_000;
    expect(await codeOf(store.ensureSpace(15_500_000))).toBe('NO_SPACE');
    expect(measures).toBe(3);
    expect(await codeOf(store.ensureSpace(1_000_000))).toBe('NO_SPACE'); // nothing kept from a refusal
    expect(measures).toBe(4);
    // a measure older than the limit is not used
    const { store: strict } = await storeIn(await tempDir(), { minFreeBytes: 1_000_000, freeBytes, freeSpaceMaxAgeMs: 0 });
    free = 10_000_000;
    measures = 0;
    await strict.ensureSpace(1);
    await new Promise((r) => setTimeout(r, 2));
    await strict.ensureSpace(1);
    expect(measures).toBe(2);
  });
});

async function* chunks(...parts: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const p of parts) yield p;
}

describe('UploadSessions', () => {
  it('appends chunks in order (with and without Content-Range) and commits under the digest', async () => {
    const { store } = await storeIn(await tempDir());
    const up = new UploadSessions(store);
    const bytes = randomBytes(5000);
    const s = await up.start('team/web');
    expect(await up.append(s, chunks(bytes.subarray(0, 1000), bytes.subarray(1000, 2000)), undefined, undefined)).toBe(2000);
    // a chunk that does not start at the offset is refused (416 in the API)
    expect(await codeOf(up.append(s, chunks(bytes.subarray(3000)), '3000-4999', 2000))).toBe('RANGE_INVALID');
    expect(await codeOf(up.append(s, chunks(bytes.subarray(2000)), '2000-4999', 10))).toBe('SIZE_INVALID');
    expect(await up.append(s, chunks(bytes.subarray(2000)), '2000-4999', 3000)).toBe(5000);
    expect(() => up.get('other/repo', s.id)).toThrow(/no upload/);
    const info = await up.finish(up.get('team/web', s.id), sha(bytes));
    expect(info.sizeBytes).toBe(5000);
    expect(store.has(sha(bytes))).toBe(true);
    expect(up.size).toBe(0);
  });

  it('a whole blob in one request of known length is hashed as it is written: the same pieces as hashed from disk; a wrong digest is still refused', async () => {
    const dir = await tempDir();
    const { store } = await storeIn(dir);
    const up = new UploadSessions(store);
    // 3 MiB in 40 KiB socket reads: written in batches, pieces of 64 KiB cut across the reads
    const bytes = randomBytes(3 * 1024 * 1024 + 17);
    const parts = Array.from({ length: Math.ceil(bytes.length / 40_000) }, (_, i) => bytes.subarray(i * 40_000, (i + 1) * 40_000));
    const s = await up.start('team/web');
    expect(await up.append(s, chunks(...parts), undefined, bytes.length, true)).toBe(bytes.length);
    expect(s.hashed?.digest).toBe(sha(bytes));
    const info = await up.finish(s, sha(bytes));
    const expected = Array.from({ length: Math.ceil(bytes.length / PIECE) }, (_, i) => pieceHex(bytes.subarray(i * PIECE, (i + 1) * PIECE)));
    expect(info.pieces).toEqual(expected);
    expect((await collect(store.read(sha(bytes)))).equals(bytes)).toBe(true);
    // the same bytes under another digest: refused from the hashes taken on the way, nothing kept
    const other = randomBytes(100);
    const s2 = await up.start('team/web');
    await up.append(s2, chunks(other), undefined, other.length, true);
    expect(await codeOf(up.finish(s2, sha(randomBytes(100))))).toBe('DIGEST_INVALID');
    expect((await readdir(join(dir, 'tmp'))).length).toBe(0);
  });

  it('a fetched file whose pieces were checked as they arrived is committed without a read back, unless its size does not fit those pieces', async () => {
    const { store } = await storeIn(await tempDir());
    const bytes = randomBytes(3 * PIECE + 5);
    const pieces = Array.from({ length: 4 }, (_, i) => pieceHex(bytes.subarray(i * PIECE, (i + 1) * PIECE)));
    const short = store.tempPath();
    await writeFile(short, bytes.subarray(0, 2 * PIECE));
    expect(await codeOf(store.commit(short, sha(bytes), { pieceSizeBytes: PIECE, pieces }, { piecesVerified: true }))).toBe('DIGEST_INVALID');
    expect(store.has(sha(bytes))).toBe(false);
    const tmp = store.tempPath();
    await writeFile(tmp, bytes);
    const info = await store.commit(tmp, sha(bytes), { pieceSizeBytes: PIECE, pieces }, { piecesVerified: true });
    expect(info).toMatchObject({ digest: sha(bytes), sizeBytes: bytes.length, pieces });
    expect((await collect(store.read(sha(bytes)))).equals(bytes)).toBe(true);
  });

  it('refuses a chunk longer than announced, a blob over the limit, too many sessions; sweeps idle ones', async () => {
    const { store } = await storeIn(await tempDir(), { maxBlobBytes: 100 });
    const up = new UploadSessions(store, { maxSessions: 2, idleTimeoutMs: 1000 });
    const s = await up.start('a');
    expect(await codeOf(up.append(s, chunks(randomBytes(20)), undefined, 10))).toBe('SIZE_INVALID');
    const s2 = await up.start('a');
    expect(await codeOf(up.append(s2, chunks(randomBytes(60), randomBytes(60)), undefined, undefined))).toBe('SIZE_INVALID');
    expect(await codeOf(up.start('a'))).toBe('TOOMANYREQUESTS');
    await up.sweep(Date.now() + 5000);
    expect(up.size).toBe(0);
    await expect(up.start('a')).resolves.toBeTruthy();
  });
});
