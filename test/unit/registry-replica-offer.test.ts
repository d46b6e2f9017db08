// A push's copies made while its catalog record is written: the pusher sends a small blob whole,
// with its record, in its replicate request over libp2p, so the peer neither reads the catalog nor
// fetches it; anything else is a plain request (the peer fetches by the catalog's record). Two real libp2p hosts (noise, yamux, the private network), two blob
// stores, the real PieceService and the registry's takeReplica.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { createHost, type OmniHost } from '../../node/p2p/host.js';
import { BlobStore } from '../../node/registry/blob-store.js';
import { PieceService, INLINE_REPLICA_BYTES } from '../../node/registry/piece-transfer.js';
import { takeReplica } from '../../node/registry/registry.js';
import { silentLogger } from '../../node/logger.js';
import { recordOf as recordOfPieces, sha } from '../support/blob-records.js';
import { OmniError } from '../../node/errors.js';
import type { BlobRecord } from '../../protocol/registry/records.js';

const PIECE = 64 * 1024;
const recordOf = (bytes: Buffer) => recordOfPieces(bytes, PIECE);

describe('replicate with an offer', () => {
  let a: OmniHost;
  let b: OmniHost;
  let dir: string;
  let storeB: BlobStore;
  let pusher: PieceService;
  /** What B's replicate handler was asked to do besides taking bytes. */
  const fetched: BlobRecord[] = [];
  const catalogReads: string[] = [];
  let catalog = new Map<string, BlobRecord>();

  beforeAll(async () => {
    const networkKey = randomBytes(32);
    const host = async () => createHost({ privateKey: await generateKeyPair('Ed25519'), networkKey, listen: ['/ip4/127.0.0.1/tcp/0'] });
    [a, b] = await Promise.all([host(), host()]);
    await a.dial(b.getMultiaddrs()[0]);
    dir = await mkdtemp(join(tmpdir(), 'omni-replica-offer-'));
    storeB = await BlobStore.open({ dir, log: silentLogger, pieceSizeBytes: PIECE, minFreeBytes: 0 });
    const storeA = await BlobStore.open({ dir: join(dir, 'a'), log: silentLogger, pieceSizeBytes: PIECE, minFreeBytes: 0 });
    const members = new Set([a.peerId.toString(), b.peerId.toString()]);
    const authorize = (peer: string) => {
      if (!members.has(peer)) throw new OmniError('FORBIDDEN', 'not a member');
    };
    pusher = new PieceService(a, { authorize, store: storeA, log: silentLogger });
    const server = new PieceService(b, {
      authorize,
      store: storeB,
      log: silentLogger,
      replicate: (digest, signal, offer) =>
        takeReplica(
          {
            store: storeB,
            catalogRecord: async (d) => (catalogReads.push(d), catalog.get(d)),
            fetch: async (rec) => {
              fetched.push(rec);
            },
          },
          digest,
          signal,
          offer,
        ),
    });
    await Promise.all([pusher.start(), server.start()]);
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await rm(dir, { recursive: true, force: true });
  });

  const peerB = () => b.peerId.toString();
  const signal = () => AbortSignal.timeout(20_000);

  it('a small blob goes with the request: the peer keeps those bytes without reading the catalog or fetching', async () => {
    const bytes = randomBytes(200 * 1024 + 17); // 4 pieces
    const digest = sha(bytes);
    await pusher.replicate(peerB(), digest, signal(), { record: recordOf(bytes), bytes });
    expect(storeB.has(digest)).toBe(true);
    expect((await storeB.readAll(digest)).equals(bytes)).toBe(true);
    expect(storeB.info(digest)?.pieces).toEqual(recordOf(bytes).pieces);
    expect(catalogReads).not.toContain(digest);
    expect(fetched.map((r) => r.digest)).not.toContain(digest);
  });

  it('bytes that are not the digest, or pieces that are not the bytes, are refused and nothing is kept', async () => {
    const bytes = randomBytes(10_000);
    const other = randomBytes(10_000);
    const wrong = sha(other);
    await expect(pusher.replicate(peerB(), wrong, signal(), { record: recordOf(bytes), bytes })).rejects.toMatchObject({ code: 'DIGEST_INVALID' });
    expect(storeB.has(wrong)).toBe(false);
    const digest = sha(bytes);
    await expect(pusher.replicate(peerB(), digest, signal(), { record: recordOf(other), bytes })).rejects.toMatchObject({ code: 'DIGEST_INVALID' });
    expect(storeB.has(digest)).toBe(false);
    // a size that does not fit the pieces is a bad request
    await expect(pusher.replicate(peerB(), digest, signal(), { record: { ...recordOf(bytes), sizeBytes: 10_000 + PIECE }, bytes: Buffer.concat([bytes, randomBytes(PIECE)]) })).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    expect(storeB.held()).not.toContain(digest);
  });

  it('a blob over the inline limit goes as a plain request: the peer fetches it by the catalog’s record', async () => {
    const bytes = randomBytes(INLINE_REPLICA_BYTES + 1);
    const digest = sha(bytes);
    const rec: BlobRecord = { digest, ...recordOf(bytes), createdAtMs: 1 };
    catalog = new Map([[digest, rec]]);
    await pusher.replicate(peerB(), digest, signal(), { record: recordOf(bytes), bytes });
    expect(catalogReads).toContain(digest);
    expect(fetched.at(-1)).toEqual(rec);
    expect(storeB.has(digest)).toBe(false); // the fake fetch keeps nothing
  });

  it('without an offer (a pusher of an older version) the peer reads the catalog', async () => {
    const digest = sha(Buffer.from('old pusher'));
    await expect(pusher.replicate(peerB(), digest, signal())).rejects.toMatchObject({ code: 'BLOB_UNKNOWN' });
    expect(catalogReads).toContain(digest);
    const rec: BlobRecord = { digest, sizeBytes: 3, pieceSizeBytes: PIECE, pieces: [createHash('sha256').update('abc').digest('hex')], createdAtMs: 1 };
    catalog = new Map([[digest, rec]]);
    await pusher.replicate(peerB(), digest, signal());
    expect(fetched.at(-1)).toEqual(rec);
  });
});
