// Fetching a blob from peers: the piece plan (pure) and the fetcher over fake peers — pieces
// spread over every holder, a bad piece refetched elsewhere, a stalled peer dropped by the
// progress timeout (not a total one), bounded pieces in flight, resume of a partial file.
import { afterEach, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PiecePlan } from '../../protocol/registry/piece-plan.js';
import { BlobStore } from '../../node/registry/blob-store.js';
import { BlobFetcher } from '../../node/registry/blob-fetcher.js';
import type { PieceSource } from '../../node/registry/piece-transfer.js';
import { OmniError } from '../../node/errors.js';
import { silentLogger } from '../../node/logger.js';
import type { BlobRecord } from '../../protocol/registry/records.js';

const PIECE = 64 * 1024;
const hex = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('PiecePlan', () => {
  it('spreads pieces over every peer within the limits, rarest first', () => {
    const plan = new PiecePlan(10, { maxPerPeer: 2, maxInFlight: 5, maxBadPerPeer: 2 });
    const most = [0, 1, 2, 3, 4, 5, 6, 7, 8];
    plan.addPeer('a', most);
    plan.addPeer('b', most);
    plan.addPeer('c', [8, 9]); // the only holder of piece 9
    const first = plan.next();
    expect(first.length).toBe(5);
    expect(first[0]).toEqual({ piece: 9, peer: 'c' }); // rarest first
    const perPeer = (as: { peer: string }[]) => as.reduce<Record<string, number>>((m, x) => ((m[x.peer] = (m[x.peer] ?? 0) + 1), m), {});
    expect(perPeer(first)).toEqual({ a: 2, b: 2, c: 1 });
    expect(plan.next()).toEqual([]); // everything at its limit
    plan.onPiece(first[1].piece, first[1].peer);
    expect(plan.next().length).toBe(1);
  });

  it('a bad piece goes to another peer; two bad pieces drop the peer; a failed peer is dropped and its piece requeued', () => {
    const plan = new PiecePlan(3, { maxPerPeer: 1, maxInFlight: 2, maxBadPerPeer: 2 });
    plan.addPeer('a');
    plan.addPeer('b');
    const [x, y] = plan.next();
    plan.onBadPiece(x.piece, x.peer);
    const again = plan.next();
    // the bad piece is not asked of the same peer again
    expect(again.find((a) => a.piece === x.piece)?.peer ?? 'none').not.toBe(x.peer);
    plan.onPeerFailed(y.piece, y.peer, 'stalled');
    expect(plan.droppedPeers()).toEqual({ [y.peer]: 'stalled' });
    expect(plan.usablePeers()).toEqual([x.peer]);
  });

  it('is stuck when pieces are missing and no usable peer has them; complete when all are done', () => {
    const plan = new PiecePlan(2);
    expect(plan.stuck).toBe(true);
    plan.addPeer('a');
    expect(plan.stuck).toBe(false);
    const as = plan.next();
    expect(plan.stuck).toBe(false); // in flight
    for (const a of as) plan.onPiece(a.piece, a.peer);
    expect(plan.complete).toBe(true);
  });
});

// --------------------------------------------------------------------------- fetcher

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function newStore() {
  const dir = await mkdtemp(join(tmpdir(), 'omni-fetch-'));
  dirs.push(dir);
  return BlobStore.open({ dir, log: silentLogger, pieceSizeBytes: PIECE, minFreeBytes: 0 });
}

function recordOf(bytes: Buffer): BlobRecord {
  const pieces = [];
  for (let i = 0; i < bytes.length; i += PIECE) pieces.push(hex(bytes.subarray(i, i + PIECE)));
  return { digest: 'sha256:' + hex(bytes), sizeBytes: bytes.length, pieceSizeBytes: PIECE, pieces, createdAtMs: 0 };
}

type Behaviour = 'good' | 'bad' | 'stall' | 'missing' | 'slow';

/** Fake peers serving `bytes`, each with a behaviour; counts requests and concurrency. */
function fakePeers(bytes: Buffer, peers: Record<string, Behaviour>) {
  const stats = { requests: {} as Record<string, number>, inFlight: 0, maxInFlight: 0, perPeerMax: {} as Record<string, number> };
  const perPeer: Record<string, number> = {};
  const source: PieceSource = {
    async fetchPiece(peer, _digest, index, sizeBytes, { signal, onProgress }) {
      stats.requests[peer] = (stats.requests[peer] ?? 0) + 1;
      stats.inFlight++;
      perPeer[peer] = (perPeer[peer] ?? 0) + 1;
      stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
      stats.perPeerMax[peer] = Math.max(stats.perPeerMax[peer] ?? 0, perPeer[peer]);
      try {
        const piece = Buffer.from(bytes.subarray(index * PIECE, index * PIECE + sizeBytes));
        const b = peers[peer];
        if (b === 'missing') throw new OmniError('BLOB_UNKNOWN', 'not here');
        if (b === 'stall' || b === 'slow') {
          // 'slow' sends a little every 20 ms (progress), 'stall' sends nothing
          const steps = b === 'slow' ? 5 : Infinity;
          for (let i = 0; i < steps; i++) {
            await new Promise((r, j) => {
              const t = setTimeout(r, 20);
              signal.addEventListener('abort', () => (clearTimeout(t), j(new OmniError('ABORTED', 'aborted'))), { once: true });
            });
            if (b === 'slow') onProgress();
          }
        }
        await new Promise((r) => setImmediate(r));
        onProgress();
        if (b === 'bad') piece[0] ^= 0xff;
        return piece;
      } finally {
        stats.inFlight--;
        perPeer[peer]--;
      }
    },
    async has(peer, digests) {
      return digests.map(() => peers[peer] !== 'missing');
    },
  };
  return { source, stats };
}

function fetcherFor(store: BlobStore, source: PieceSource, holders: string[], opts: { members?: string[]; progressTimeoutMs?: number } = {}) {
  const learned: string[] = [];
  const f = new BlobFetcher({
    store,
    source,
    holders: () => holders,
    members: () => opts.members ?? [],
    learned: (peer, _d, has) => learned.push(`${peer}:${has}`),
    log: silentLogger,
    limits: { progressTimeoutMs: opts.progressTimeoutMs ?? 200, plan: { maxPerPeer: 2, maxInFlight: 4, maxBadPerPeer: 2 } },
  });
  return { f, learned };
}

describe('BlobFetcher', () => {
  it('fetches pieces from every holder in parallel, within the in-flight limits', async () => {
    const store = await newStore();
    const bytes = randomBytes(PIECE * 12 + 100);
    const { source, stats } = fakePeers(bytes, { a: 'good', b: 'good', c: 'good' });
    const { f } = fetcherFor(store, source, ['a', 'b', 'c']);
    const rec = recordOf(bytes);
    await f.fetch(rec);
    expect(store.has(rec.digest)).toBe(true);
    expect(Object.keys(stats.requests).sort()).toEqual(['a', 'b', 'c']);
    expect(stats.maxInFlight).toBeLessThanOrEqual(4);
    for (const n of Object.values(stats.perPeerMax)) expect(n).toBeLessThanOrEqual(2);
    expect(f.recent.at(-1)).toMatchObject({ ok: true, pieces: 13, badPieces: 0 });
  });

  it('a peer sending a bad piece: the piece is refetched from another peer, the peer dropped after two', async () => {
    const store = await newStore();
    const bytes = randomBytes(PIECE * 8);
    const { source } = fakePeers(bytes, { liar: 'bad', good: 'good' });
    const { f } = fetcherFor(store, source, ['liar', 'good']);
    const rec = recordOf(bytes);
    await f.fetch(rec);
    expect(store.has(rec.digest)).toBe(true);
    const r = f.recent.at(-1)!;
    // dropped at its second bad piece; one more request may have been in flight to it then
    expect(r.badPieces).toBeGreaterThanOrEqual(2);
    expect(r.badPieces).toBeLessThanOrEqual(3);
    expect(Object.keys(r.dropped)).toEqual(['liar']);
    expect(r.servedBy).toEqual({ good: 8 });
  });

  it('a stalled peer is dropped by the progress timeout; a slow one that keeps sending is kept', async () => {
    const store = await newStore();
    const bytes = randomBytes(PIECE * 6);
    const { source } = fakePeers(bytes, { stuck: 'stall', slow: 'slow' });
    // the slow peer takes 100 ms per piece, longer than... no: each step resets the 60 ms progress timer
    const { f } = fetcherFor(store, source, ['stuck', 'slow'], { progressTimeoutMs: 60 });
    const rec = recordOf(bytes);
    await f.fetch(rec);
    const r = f.recent.at(-1)!;
    expect(r.dropped.stuck).toMatch(/stalled/);
    expect(r.dropped.slow).toBeUndefined();
    expect(r.servedBy).toEqual({ slow: 6 });
  });

  it('asks the members directly when the gossip knows no holder; fails clearly when nobody has it', async () => {
    const store = await newStore();
    const bytes = randomBytes(PIECE * 2);
    const { source } = fakePeers(bytes, { m1: 'missing', m2: 'good' });
    const { f, learned } = fetcherFor(store, source, [], { members: ['m1', 'm2'] });
    const rec = recordOf(bytes);
    await f.fetch(rec);
    expect(store.has(rec.digest)).toBe(true);
    expect(learned.sort()).toEqual(['m1:false', 'm2:true']);
    const other = randomBytes(PIECE);
    const { source: s2 } = fakePeers(other, { m1: 'missing' });
    const { f: f2 } = fetcherFor(store, s2, [], { members: ['m1'] });
    await expect(f2.fetch(recordOf(other))).rejects.toThrow(/no peer could supply/);
  });

  it('resumes from the pieces of an interrupted fetch that still match', async () => {
    const store = await newStore();
    const bytes = randomBytes(PIECE * 5);
    const rec = recordOf(bytes);
    // an earlier fetch left pieces 0 and 1 (and a damaged piece 2)
    const partial = Buffer.alloc(PIECE * 3);
    bytes.copy(partial, 0, 0, PIECE * 2);
    await writeFile(store.fetchPath(rec.digest), partial);
    const { source, stats } = fakePeers(bytes, { a: 'good' });
    const { f } = fetcherFor(store, source, ['a']);
    await f.fetch(rec);
    expect(store.has(rec.digest)).toBe(true);
    expect(stats.requests.a).toBe(3);
    expect(f.recent.at(-1)!.resumedPieces).toBe(2);
  });

  it('one transfer per blob however many wait for it', async () => {
    const store = await newStore();
    const bytes = randomBytes(PIECE * 3);
    const { source, stats } = fakePeers(bytes, { a: 'good' });
    const { f } = fetcherFor(store, source, ['a']);
    const rec = recordOf(bytes);
    await Promise.all([f.fetch(rec), f.fetch(rec), f.fetch(rec)]);
    expect(stats.requests.a).toBe(3);
  });
});
