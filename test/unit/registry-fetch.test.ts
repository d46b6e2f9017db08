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

  it('partial peers: their pieces grow, they go before a whole holder, a missing piece is not held against them', () => {
    const plan = new PiecePlan(6, { maxPerPeer: 2, maxInFlight: 6, maxBadPerPeer: 2 });
    plan.addPeer('seed');
    plan.addPeer('p', [0]);
    let as = plan.next();
    // piece 0 has two holders and goes to the partial peer; the rest (only the seed) up to its limit
    expect(as.find((a) => a.piece === 0)?.peer).toBe('p');
    expect(as.filter((a) => a.peer === 'seed').length).toBe(2);
    // with room on both, a piece both hold goes to the partial peer
    const both = new PiecePlan(2, { maxPerPeer: 2, maxInFlight: 4, maxBadPerPeer: 2 });
    both.addPeer('seed');
    both.addPeer('p', [0, 1]);
    expect(both.next().map((a) => a.peer)).toEqual(['p', 'p']);
    plan.addPeer('p', [1, 2, 99, -1]); // grows; nonsense ignored
    expect(plan.partialPeers()).toEqual(['p']);
    plan.onMissing(0, 'p'); // p did not have it after all: not dropped, not asked for 0 again
    expect(plan.usablePeers().sort()).toEqual(['p', 'seed']);
    expect(plan.next()).toEqual([]); // the seed is at its limit, p has nothing else missing
    plan.onPiece(1, 'seed');
    plan.onPiece(2, 'seed');
    expect(plan.next()).toEqual([
      { piece: 0, peer: 'seed' },
      { piece: 3, peer: 'seed' },
    ]);
    // a whole holder that declines a piece still holds the others, and is still not preferred...
    plan.onMissing(3, 'seed');
    expect(plan.isPartial('seed')).toBe(false);
    expect(plan.next()).toEqual([{ piece: 4, peer: 'seed' }]);
    // ...and holds it again when re-added whole (the fetcher does so when the plan is stuck)
    plan.addPeer('seed');
    plan.onPiece(0, 'seed');
    expect(plan.next()).toEqual([{ piece: 3, peer: 'seed' }]);
  });

  it('a peer dropped for a stall is taken back by readmitTransient, one that lost the blob is not', () => {
    const plan = new PiecePlan(2, { maxPerPeer: 1, maxInFlight: 2, maxBadPerPeer: 2 });
    plan.addPeer('slow');
    plan.addPeer('gone');
    const as = plan.next();
    const bySlow = as.find((a) => a.peer === 'slow')!;
    const byGone = as.find((a) => a.peer === 'gone')!;
    plan.onPeerFailed(bySlow.piece, 'slow', 'stalled', true);
    plan.onPeerFailed(byGone.piece, 'gone', 'BLOB_UNKNOWN', false);
    expect(plan.stuck).toBe(true);
    expect(plan.readmitTransient()).toBe(1);
    expect(plan.usablePeers()).toEqual(['slow']);
    expect(plan.stuck).toBe(false);
    expect(plan.next().map((a) => a.peer)).toEqual(['slow']);
  });

  it('with an rng, equally rare pieces go in a shuffled order (nodes fetching together ask for different pieces)', () => {
    const firsts = new Set<number>();
    let seed = 1;
    const rng = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    for (let n = 0; n < 8; n++) {
      const plan = new PiecePlan(50, { maxPerPeer: 1, maxInFlight: 1, maxBadPerPeer: 2 }, rng);
      plan.addPeer('seed');
      firsts.add(plan.next()[0].piece);
    }
    expect(firsts.size).toBeGreaterThan(4);
    const ordered = new PiecePlan(50, { maxPerPeer: 1, maxInFlight: 1, maxBadPerPeer: 2 });
    ordered.addPeer('seed');
    expect(ordered.next()[0].piece).toBe(0);
  });

  it('next(room) leaves peers the caller says are full', () => {
    const plan = new PiecePlan(4, { maxPerPeer: 2, maxInFlight: 4, maxBadPerPeer: 2 });
    plan.addPeer('a');
    plan.addPeer('b');
    const as = plan.next((peer) => peer !== 'a');
    expect(as.map((a) => a.peer)).toEqual(['b', 'b']);
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

  it('a lone holder that stalls is asked again when nothing else is left, a bounded number of times', async () => {
    const store = await newStore();
    const bytes = randomBytes(PIECE * 2);
    const { source, stats } = fakePeers(bytes, { stuck: 'stall' });
    const { f } = fetcherFor(store, source, ['stuck'], { progressTimeoutMs: 40 });
    await expect(f.fetch(recordOf(bytes))).rejects.toThrow(/no peer could supply.*stalled/);
    // both pieces asked at first, then again at each of the 3 readmissions; every time a stall
    expect(stats.requests.stuck).toBe(2 * 4);
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

  it('takes pieces from a peer still fetching the blob, announces its own, and serves those it has meanwhile', async () => {
    const store = await newStore();
    const bytes = randomBytes(PIECE * 8);
    const rec = recordOf(bytes);
    const partialHas = new Set([0, 1, 2, 3]);
    const served: Record<string, number[]> = { seed: [], p: [] };
    const source: PieceSource = {
      async fetchPiece(peer, _d, index, sizeBytes, { onProgress }) {
        if (peer === 'p' && !partialHas.has(index)) throw new OmniError('PIECE_MISSING', 'not yet');
        // the whole holder is slow, so the transfer is still running when we look at it
        if (peer === 'seed') await new Promise((r) => setTimeout(r, 40));
        onProgress();
        served[peer].push(index);
        return Buffer.from(bytes.subarray(index * PIECE, index * PIECE + sizeBytes));
      },
      async has(_peer, digests) {
        return digests.map(() => true);
      },
    };
    const announced: (number[] | null)[] = [];
    const f = new BlobFetcher({
      store,
      source,
      holders: () => ['seed'],
      members: () => [],
      learned: () => undefined,
      partialHolders: () => [{ peer: 'p', pieces: [...partialHas] }],
      fetching: (_d, pieces) => announced.push(pieces),
      log: silentLogger,
      limits: { progressTimeoutMs: 1000, plan: { maxPerPeer: 2, maxInFlight: 4, maxBadPerPeer: 2 } },
    });
    const done = f.fetch(rec);
    // a piece that arrived is served from the partial file, verified; one that did not is PIECE_MISSING
    let first = -1;
    for (let tries = 0; first < 0 && tries < 1000; tries++) {
      for (let i = 0; i < 8 && first < 0; i++) if (await f.readPartial(rec.digest, i).then(() => true, () => false)) first = i;
      if (first < 0) await new Promise((r) => setTimeout(r, 2));
    }
    expect(first).toBeGreaterThanOrEqual(0);
    expect((await f.readPartial(rec.digest, first)).equals(bytes.subarray(first * PIECE, (first + 1) * PIECE))).toBe(true);
    const notYet = [...Array(8).keys()].find((i) => !served.seed.includes(i) && !served.p.includes(i));
    if (notYet !== undefined) await expect(f.readPartial(rec.digest, notYet)).rejects.toMatchObject({ code: 'PIECE_MISSING' });
    await done;
    expect(store.has(rec.digest)).toBe(true);
    // p supplied the pieces it had (it goes before the whole holder), the seed the rest, each piece once
    expect(served.p.length).toBeGreaterThan(0);
    expect(served.p.every((i) => partialHas.has(i))).toBe(true);
    expect([...served.p, ...served.seed].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(announced.some((a) => Array.isArray(a) && a.length > 0)).toBe(true);
    expect(announced.at(-1)).toBeNull();
    await expect(f.readPartial(rec.digest, 0)).rejects.toMatchObject({ code: 'BLOB_UNKNOWN' });
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
