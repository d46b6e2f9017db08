// A copy pushed to a peer (PieceService.push): the holder streams the blob after its record, the
// peer hashes and writes it as it comes and keeps it only when the digest and pieces match. Two
// real libp2p hosts (noise, yamux, the private network), two blob stores on disk.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { createHost, type OmniHost } from '../../node/p2p/host.js';
import { BlobStore } from '../../node/registry/blob-store.js';
import { DATA_FRAME_BYTES, PIECES_PROTOCOL, PUSH_WINDOW_BYTES, PieceService, type PushedCopy } from '../../node/registry/piece-transfer.js';
import { readOneFrame, sendTaggedFrame } from '../../node/p2p/framed-stream.js';
import { silentLogger } from '../../node/logger.js';
import { recordOf as recordOfPieces, sha } from '../support/blob-records.js';
import { OmniError } from '../../node/errors.js';

const PIECE = 64 * 1024;
const recordOf = (bytes: Buffer) => recordOfPieces(bytes, PIECE);

describe('a copy pushed to a peer', () => {
  let a: OmniHost;
  let b: OmniHost;
  let outsider: OmniHost;
  let full: OmniHost;
  let slow: OmniHost;
  let old: OmniHost;
  let noReplicas: OmniHost;
  let dying: OmniHost;
  /** What the slow peer's store has taken of the copy it receives (bytes). */
  let slowTaken = 0;
  let dir: string;
  let storeA: BlobStore;
  let storeB: BlobStore;
  let pusher: PieceService;
  let stranger: PieceService;

  beforeAll(async () => {
    const networkKey = randomBytes(32);
    const host = async () => createHost({ privateKey: await generateKeyPair('Ed25519'), networkKey, listen: ['/ip4/127.0.0.1/tcp/0'] });
    [a, b, outsider, full, slow, old, noReplicas, dying] = await Promise.all([host(), host(), host(), host(), host(), host(), host(), host()]);
    await Promise.all([b, full, slow, old, noReplicas, dying].map((h) => a.dial(h.getMultiaddrs()[0])));
    await outsider.dial(b.getMultiaddrs()[0]);
    dir = await mkdtemp(join(tmpdir(), 'omni-pushed-copy-'));
    storeA = await BlobStore.open({ dir: join(dir, 'a'), log: silentLogger, pieceSizeBytes: PIECE, minFreeBytes: 0 });
    storeB = await BlobStore.open({ dir: join(dir, 'b'), log: silentLogger, pieceSizeBytes: PIECE, minFreeBytes: 0 });
    const members = new Set([a, b, full, slow, old, noReplicas, dying].map((h) => h.peerId.toString()));
    const authorize = (peer: string) => {
      if (!members.has(peer)) throw new OmniError('FORBIDDEN', 'not a member');
    };
    pusher = new PieceService(a, { authorize, store: storeA, log: silentLogger });
    stranger = new PieceService(outsider, { authorize, store: storeA, log: silentLogger });
    const takes = { replicate: async () => undefined }; // a node that takes replicas
    const server = new PieceService(b, { authorize, store: storeB, log: silentLogger, ...takes });
    // a member whose disk has 100 kB free
    const storeFull = await BlobStore.open({ dir: join(dir, 'full'), log: silentLogger, pieceSizeBytes: PIECE, minFreeBytes: 0, freeBytes: async () => 100_000 });
    const fullServer = new PieceService(full, { authorize, store: storeFull, log: silentLogger, ...takes });
    // a member whose disk is slow: its store takes each delivery 3 ms late
    const storeSlow = await BlobStore.open({ dir: join(dir, 'slow'), log: silentLogger, pieceSizeBytes: PIECE, minFreeBytes: 0 });
    const slowStore = Object.create(storeSlow) as BlobStore;
    slowStore.receive = (digest, record, chunks, onWritten) =>
      storeSlow.receive(
        digest,
        record,
        (async function* () {
          for await (const c of chunks) {
            await new Promise((r) => setTimeout(r, 3));
            slowTaken += c.length;
            yield c;
          }
        })(),
        onWritten,
      );
    const slowServer = new PieceService(slow, { authorize, store: slowStore, log: silentLogger, ...takes });
    // a slow member that is stopped part-way through a copy
    const dyingServer = new PieceService(dying, { authorize, store: Object.assign(Object.create(storeSlow) as BlobStore, { receive: slowStore.receive }), log: silentLogger, ...takes });
    // a member that takes no replicas, and one of an older version (its requests are JSON frames only)
    const noReplicaServer = new PieceService(noReplicas, { authorize, store: storeFull, log: silentLogger });
    await old.handle(PIECES_PROTOCOL, (stream) => {
      void (async () => {
        const frame = await readOneFrame(stream, 1 << 20);
        try {
          JSON.parse(new TextDecoder().decode(frame));
        } catch {
          await sendTaggedFrame(stream, 0x45, JSON.stringify({ code: 'BAD_REQUEST', message: 'request is not JSON' }));
          await stream.close();
        }
      })();
    });
    await Promise.all([pusher.start(), stranger.start(), server.start(), fullServer.start(), slowServer.start(), noReplicaServer.start(), dyingServer.start()]);
  });
  afterAll(async () => {
    await Promise.all([a, b, outsider, full, slow, old, noReplicas, dying].map((h) => h?.stop()));
    await rm(dir, { recursive: true, force: true });
  });

  const peerB = () => b.peerId.toString();
  const signal = () => AbortSignal.timeout(20_000);
  /** B's temp files (uploads and copies in progress): none may be left behind. */
  const tempFilesB = async () => readdir(join(dir, 'b', 'tmp'));
  /** A copy read in chunks of `chunk` bytes, counting what was read. */
  function copyOf(bytes: Buffer, chunk = 100_000): PushedCopy & { reads: number } {
    const copy = {
      reads: 0,
      record: recordOf(bytes),
      *read() {
        for (let off = 0; off < bytes.length; off += chunk) {
          copy.reads++;
          yield bytes.subarray(off, off + chunk);
        }
      },
    };
    return copy;
  }

  /** A copy read 1 MiB at a time, each a buffer of its own; `onRead` is told the bytes read so far. */
  function inMiBs(bytes: Buffer, onRead: (readBytes: number) => void): PushedCopy {
    return {
      record: recordOf(bytes),
      *read() {
        for (let off = 0; off < bytes.length; off += 1024 * 1024) {
          onRead(Math.min(bytes.length, off + 1024 * 1024));
          yield Buffer.from(bytes.subarray(off, off + 1024 * 1024));
        }
      },
    };
  }

  it('streams a blob of several data frames; the peer keeps it with the same pieces', async () => {
    const bytes = randomBytes(3 * DATA_FRAME_BYTES + 12_345);
    const digest = sha(bytes);
    await pusher.push(peerB(), digest, copyOf(bytes), signal());
    expect(storeB.has(digest)).toBe(true);
    expect(storeB.info(digest)).toEqual({ digest, ...recordOf(bytes) });
    expect(await storeB.readAll(digest)).toEqual(bytes);
    expect(await tempFilesB()).toEqual([]);
  });

  it('an empty blob and a blob read in chunks larger than a data frame arrive too', async () => {
    for (const [bytes, chunk] of [
      [Buffer.alloc(0), 1],
      [randomBytes(2 * DATA_FRAME_BYTES + 1), 4 * DATA_FRAME_BYTES],
    ] as const) {
      const digest = sha(bytes);
      await pusher.push(peerB(), digest, copyOf(bytes, chunk), signal());
      expect(await storeB.readAll(digest)).toEqual(bytes);
    }
  });

  it('a peer that holds the blob already answers at once: nothing is read or sent', async () => {
    const bytes = randomBytes(300_000);
    const digest = sha(bytes);
    await pusher.push(peerB(), digest, copyOf(bytes), signal());
    const again = copyOf(bytes);
    await pusher.push(peerB(), digest, again, signal());
    expect(again.reads).toBe(0);
  });

  it('bytes that are not the digest are refused with DIGEST_INVALID; nothing is kept, no temp file left', async () => {
    const bytes = randomBytes(500_000);
    const other = Buffer.from(bytes);
    other[400_000] ^= 1;
    const digest = sha(bytes);
    const copy = { record: recordOf(bytes), read: () => [other] };
    await expect(pusher.push(peerB(), digest, copy, signal())).rejects.toMatchObject({ code: 'DIGEST_INVALID' });
    expect(storeB.has(digest)).toBe(false);
    expect(await tempFilesB()).toEqual([]);
  });

  it('pieces that do not fit the size are refused before any byte is read', async () => {
    const bytes = randomBytes(200_000);
    const copy = copyOf(bytes);
    copy.record = { ...copy.record, pieces: copy.record.pieces.slice(1) };
    await expect(pusher.push(peerB(), sha(bytes), copy, signal())).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    expect(copy.reads).toBe(0);
  });

  it('a holder whose file is shorter than its record stops (BLOB_CORRUPT); the peer keeps nothing', async () => {
    const bytes = randomBytes(700_000);
    const digest = sha(bytes);
    const copy = { record: recordOf(bytes), read: () => [bytes.subarray(0, 400_000)] };
    await expect(pusher.push(peerB(), digest, copy, signal())).rejects.toMatchObject({ code: 'BLOB_CORRUPT' });
    expect(storeB.has(digest)).toBe(false);
    // the peer sees its stream end short and removes what it wrote
    await expect.poll(tempFilesB, { timeout: 5_000 }).toEqual([]);
  });

  it('a holder that reads more bytes than its record stops before sending them (BLOB_CORRUPT); nothing is kept', async () => {
    const bytes = randomBytes(300_000);
    const digest = sha(bytes);
    // the last chunk crosses the recorded end
    const copy = { record: recordOf(bytes), read: () => [Buffer.concat([bytes, randomBytes(10)])] };
    await expect(pusher.push(peerB(), digest, copy, signal())).rejects.toMatchObject({ code: 'BLOB_CORRUPT' });
    expect(storeB.has(digest)).toBe(false);
    await expect.poll(tempFilesB, { timeout: 5_000 }).toEqual([]);
  });

  it('a receiving store refuses bytes past the recorded size or short of it (SIZE_INVALID), keeping nothing', async () => {
    const bytes = randomBytes(300_000);
    const digest = sha(bytes);
    await expect(storeB.receive(digest, recordOf(bytes), [bytes, Buffer.alloc(1)])).rejects.toMatchObject({ code: 'SIZE_INVALID' });
    await expect(storeB.receive(digest, recordOf(bytes), [bytes.subarray(0, 299_999)])).rejects.toMatchObject({ code: 'SIZE_INVALID' });
    expect(storeB.has(digest)).toBe(false);
    expect(await tempFilesB()).toEqual([]);
  });

  it('a receiving store checks each piece against the record as it completes (DIGEST_INVALID at the first that differs), and a one-piece record must name the digest; nothing is kept', async () => {
    const bytes = randomBytes(300_000); // 5 pieces of 64 KiB
    const digest = sha(bytes);
    const damaged = Buffer.from(bytes);
    damaged[2 * PIECE + 7] ^= 1;
    let asked = 0;
    const chunks = function* () {
      for (let at = 0; at < damaged.length; at += 10_000) {
        asked = at;
        yield damaged.subarray(at, at + 10_000);
      }
    };
    await expect(storeB.receive(digest, recordOf(bytes), chunks())).rejects.toMatchObject({ code: 'DIGEST_INVALID', message: expect.stringContaining('piece 2 ') });
    expect(asked).toBeLessThan(3 * PIECE); // stopped at the piece, not at the end
    // a record of other bytes: refused at the first piece
    const other = randomBytes(300_000);
    await expect(storeB.receive(digest, recordOf(other), [bytes])).rejects.toMatchObject({ code: 'DIGEST_INVALID' });
    // one piece: it is the whole blob, so it must be the digest
    const small = randomBytes(1000);
    await expect(storeB.receive(sha(randomBytes(1000)), recordOf(small), [small])).rejects.toMatchObject({ code: 'DIGEST_INVALID', message: expect.stringContaining('its one piece') });
    expect(storeB.has(digest)).toBe(false);
    expect(await tempFilesB()).toEqual([]);
    // the bytes as recorded: kept, and read back as they are
    const kept = await storeB.receive(digest, recordOf(bytes), [bytes.subarray(0, 100_001), bytes.subarray(100_001)]);
    expect(kept).toMatchObject({ digest, sizeBytes: bytes.length, pieces: recordOf(bytes).pieces });
    expect(storeB.has(digest)).toBe(true);
    const back: Buffer[] = [];
    for await (const b of storeB.readUnverified(digest, 64 * 1024)) back.push(b);
    expect(sha(Buffer.concat(back))).toBe(digest);
  });

  it('the holder stays within the window of what a slow peer has written: it does not read the whole blob ahead', async () => {
    const bytes = randomBytes(24 * 1024 * 1024);
    const digest = sha(bytes);
    let aheadMax = 0;
    const copy = inMiBs(bytes, (read) => (aheadMax = Math.max(aheadMax, read - slowTaken)));
    await pusher.push(slow.peerId.toString(), digest, copy, AbortSignal.timeout(60_000));
    // the window, the run the store gathers before it writes, a read chunk: not the 24 MiB
    expect(aheadMax).toBeLessThanOrEqual(PUSH_WINDOW_BYTES + 3 * 1024 * 1024);
    expect(slowTaken).toBe(bytes.length);
  });

  it('a peer that dies part-way fails the push at once (no hang), and the holder had read no more than the window ahead', async () => {
    const bytes = randomBytes(24 * 1024 * 1024);
    let read = 0;
    const copy = inMiBs(bytes, (n) => (read = n));
    const t0 = performance.now();
    // its outcome taken at once (it may fail before the peer is fully stopped)
    const outcome = pusher.push(dying.peerId.toString(), sha(bytes), copy, AbortSignal.timeout(60_000)).then(
      () => undefined,
      (err: unknown) => err,
    );
    await new Promise((r) => setTimeout(r, 150));
    await dying.stop();
    expect(await outcome).toMatchObject({ code: expect.stringMatching(/UNAVAILABLE|ABORTED/) });
    expect(performance.now() - t0).toBeLessThan(20_000); // well under the 10 s no-progress bound plus the test's own
    expect(read).toBeLessThan(bytes.length);
  });

  it('a member of an older version refuses the request (BAD_REQUEST: the caller asks it the plain way); one that takes no replicas says so', async () => {
    const bytes = randomBytes(100_000);
    const copy = copyOf(bytes);
    await expect(pusher.push(old.peerId.toString(), sha(bytes), copy, signal())).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    await expect(pusher.push(noReplicas.peerId.toString(), sha(bytes), copy, signal())).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(copy.reads).toBe(0);
  });

  it('a peer without the disk space refuses before any byte is read (NO_SPACE)', async () => {
    const bytes = randomBytes(300_000);
    const copy = copyOf(bytes);
    await expect(pusher.push(full.peerId.toString(), sha(bytes), copy, signal())).rejects.toMatchObject({ code: 'NO_SPACE' });
    expect(copy.reads).toBe(0);
    expect(await readdir(join(dir, 'full', 'tmp'))).toEqual([]);
  });

  it('a node that is not a member is refused (FORBIDDEN)', async () => {
    const bytes = randomBytes(100_000);
    const copy = copyOf(bytes);
    await expect(stranger.push(peerB(), sha(bytes), copy, signal())).rejects.toMatchObject({ code: 'FORBIDDEN' });
    expect(copy.reads).toBe(0);
    expect(storeB.has(sha(bytes))).toBe(false);
  });
});
