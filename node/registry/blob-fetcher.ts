// Brings a blob the catalog knows into this node's store, from the peers that hold it: its
// pieces are asked of every holder at once (protocol/registry/piece-plan.ts decides which piece
// of which peer), each piece is checked against the digest recorded at push time before it is
// written (a bad one is asked again of another peer), a peer that sends nothing for
// progressTimeoutMs is dropped (a progress timeout, not a total one, counted per peer: a slow
// but steady peer is kept, and so is a request waiting behind others to the same peer), and
// the finished file is verified whole before it enters the store.
//
// Nodes fetching the same blob at once help each other: while a transfer runs, what it has is
// announced (deps.fetching, the holdings gossip) and served to them (readPartial), and the pieces
// the others announce are asked of them (deps.partialHolders, looked at again every
// PARTIAL_REFRESH_MS).
//
// Bounds: transfers at once (maxConcurrentTransfers), pieces in flight per transfer and per
// peer (so memory is at most maxInFlight pieces per transfer), pieces in flight per peer across
// transfers (maxPerPeerAllTransfers: the connection is shared with Raft), disk space checked
// before the first byte. The partial file stays when a transfer fails or the node stops, and the
// next fetch of that blob resumes from the pieces in it that still match their digests.
import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { OmniError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { BlobStore } from './blob-store.js';
import type { PieceSource } from './piece-transfer.js';
import type { BlobRecord } from '../../protocol/registry/records.js';
import { PiecePlan, DEFAULT_PIECE_PLAN_LIMITS, type Assignment, type PiecePlanLimits } from '../../protocol/registry/piece-plan.js';
import { pieceCount, pieceSpan } from '../../protocol/registry/pieces.js';
import { Slots } from './slots.js';

export interface FetchLimits {
  /** A piece request with no data for this long is abandoned and its peer dropped. */
  progressTimeoutMs: number;
  maxConcurrentTransfers: number;
  /**
   * Pieces in flight to one peer across all transfers: enough to keep its link busy, few enough
   * that the bytes queued on the connection (which Raft and the gossip share) stay small.
   */
  maxPerPeerAllTransfers: number;
  /** Times a stuck transfer looks for holders again before it fails. */
  maxRounds: number;
  plan: PiecePlanLimits;
}

export const DEFAULT_FETCH_LIMITS: FetchLimits = { progressTimeoutMs: 5_000, maxConcurrentTransfers: 4, maxPerPeerAllTransfers: 2, maxRounds: 3, plan: DEFAULT_PIECE_PLAN_LIMITS };
const PROBE_TIMEOUT_MS = 3_000;
/** How often a running transfer looks again at what the peers fetching the same blob have. */
const PARTIAL_REFRESH_MS = 200;
/** How often a running transfer says again what it has (keeps the gossip entry alive). */
const PARTIAL_REANNOUNCE_MS = 1_000;
const ROUND_BACKOFF_MS = 300;
/** Peers whose last data is remembered (beyond: forgotten all at once, which only restarts their stall clocks). */
const MAX_HEARD_FROM = 1024;
/** Recent transfers kept for /v1/registry. */
const MAX_RECENT = 20;

export interface TransferReport {
  digest: string;
  sizeBytes: number;
  pieces: number;
  resumedPieces: number;
  /** Good pieces delivered by each peer. */
  servedBy: Record<string, number>;
  badPieces: number;
  dropped: Record<string, string>;
  ok: boolean;
  error?: string;
  finishedAtMs: number;
}

export interface BlobFetcherDeps {
  store: BlobStore;
  source: PieceSource;
  /** Peers the gossip says hold a blob. */
  holders(digest: string): string[];
  /** The other current members (asked directly when the gossip knows no holder). */
  members(): string[];
  /** What asking a peer found, and peers found not to hold a blob (fed back to the gossip). */
  learned(peer: string, digest: string, has: boolean): void;
  /** Peers fetching `digest` too, with the pieces they have (the gossip); absent: none known. */
  partialHolders?(digest: string): { peer: string; pieces: number[] }[];
  /** Tells the others what this node has of a blob it fetches (null: the fetch ended). */
  fetching?(digest: string, pieces: number[] | null): void;
  log: Logger;
  limits?: Partial<FetchLimits>;
}

export class BlobFetcher {
  private readonly limits: FetchLimits;
  private readonly running = new Map<string, Promise<void>>();
  private readonly slots: Slots;
  private readonly stopping = new AbortController();
  /** When each peer last sent this node data for any piece (pruned in piece(); peers are members). */
  private readonly heardFrom = new Map<string, number>();
  /** Pieces in flight to each peer, all transfers together. */
  private readonly peerLoad = new Map<string, number>();
  /** Running transfers (their plan and partial file, for serving the pieces they have). */
  private readonly active = new Map<string, { record: BlobRecord; fh: FileHandle; plan: PiecePlan }>();
  /** Wakes every running transfer (a piece finished: a peer may have room again). */
  private readonly wakers = new Set<() => void>();
  readonly recent: TransferReport[] = [];

  constructor(private readonly d: BlobFetcherDeps) {
    this.limits = { ...DEFAULT_FETCH_LIMITS, ...d.limits, plan: { ...DEFAULT_FETCH_LIMITS.plan, ...d.limits?.plan } };
    this.slots = new Slots(this.limits.maxConcurrentTransfers);
  }

  /** Resolves once the blob is in the store. One transfer per blob, shared by every waiter; a waiter's abort stops its wait, not the transfer. */
  fetch(record: BlobRecord, signal?: AbortSignal): Promise<void> {
    if (this.d.store.has(record.digest)) return Promise.resolve();
    let p = this.running.get(record.digest);
    if (!p) {
      p = this.transfer(record).finally(() => this.running.delete(record.digest));
      this.running.set(record.digest, p);
    }
    if (!signal) return p;
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => reject(new OmniError('ABORTED', 'the request went away'));
      signal.addEventListener('abort', onAbort, { once: true });
      p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
    });
  }

  stop(): void {
    this.stopping.abort(new Error('the node is stopping'));
  }

  /**
   * Piece `index` of a blob this node is fetching, once it has arrived (read from the partial
   * file and checked against its digest): PIECE_MISSING when it has not, BLOB_UNKNOWN when no
   * transfer of that blob runs.
   */
  async readPartial(digest: string, index: number): Promise<Buffer> {
    const t = this.active.get(digest);
    if (!t) throw new OmniError('BLOB_UNKNOWN', `blob ${digest} is not on this node`);
    if (!Number.isSafeInteger(index) || index < 0 || index >= t.record.pieces.length) throw new OmniError('BAD_REQUEST', `blob ${digest} has no piece ${index}`);
    if (!t.plan.isDone(index)) throw new OmniError('PIECE_MISSING', `piece ${index} of ${digest} has not arrived here yet`);
    const { start, end } = pieceSpan(index, t.record.sizeBytes, t.record.pieceSizeBytes);
    const buf = Buffer.allocUnsafe(end - start);
    let off = 0;
    while (off < buf.length) {
      const { bytesRead } = await t.fh.read(buf, off, buf.length - off, start + off);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    if (off !== buf.length || sha256Hex(buf) !== t.record.pieces[index]) throw new OmniError('PIECE_MISSING', `piece ${index} of ${digest} is not readable here`);
    return buf;
  }

  private async transfer(record: BlobRecord): Promise<void> {
    const release = await this.slots.take(this.stopping.signal);
    const report: TransferReport = { digest: record.digest, sizeBytes: record.sizeBytes, pieces: record.pieces.length, resumedPieces: 0, servedBy: {}, badPieces: 0, dropped: {}, ok: false, finishedAtMs: 0 };
    try {
      if (this.d.store.has(record.digest)) return;
      this.d.store.checkSize(record.sizeBytes);
      if (record.pieces.length !== pieceCount(record.sizeBytes, record.pieceSizeBytes)) throw new OmniError('BAD_RECORD', `blob ${record.digest} has a malformed record`);
      await this.download(record, report);
      report.ok = true;
    } catch (err) {
      report.error = (err as Error).message;
      throw err;
    } finally {
      release();
      report.finishedAtMs = Date.now();
      this.recent.push(report);
      if (this.recent.length > MAX_RECENT) this.recent.shift();
    }
  }

  private async download(record: BlobRecord, report: TransferReport): Promise<void> {
    const path = this.d.store.fetchPath(record.digest);
    const plan = new PiecePlan(record.pieces.length, this.limits.plan, Math.random);
    const fh = await open(path, 'a+').then(async (h) => {
      await h.close();
      return open(path, 'r+');
    });
    try {
      report.resumedPieces = await this.resume(fh, record, plan);
      const have = Math.min((await fh.stat()).size, record.sizeBytes);
      await this.d.store.ensureSpace(record.sizeBytes - have);
      await fh.truncate(record.sizeBytes);
      this.active.set(record.digest, { record, fh, plan });
      await this.run(fh, record, plan, report);
      report.servedBy = plan.servedBy();
      report.dropped = plan.droppedPeers();
      // Every piece was checked against the record as it arrived (or at the resume): fsync'ed and
      // renamed into the store without reading it back. Until then the pieces are still served
      // from this open file (a rename leaves it readable), so the peers fetching the same blob
      // never find this node with every piece and none to give.
      await this.d.store.commit(path, record.digest, { pieceSizeBytes: record.pieceSizeBytes, pieces: record.pieces }, { piecesVerified: true });
    } finally {
      this.active.delete(record.digest);
      this.d.fetching?.(record.digest, null);
      await fh.close();
    }
    const from = Object.entries(report.servedBy).map(([p, n]) => `${p.slice(-8)}:${n}`).join(' ');
    this.d.log.info(`registry: fetched blob ${record.digest} (${record.sizeBytes} bytes, ${record.pieces.length} pieces${report.resumedPieces ? `, ${report.resumedPieces} resumed` : ''}) from ${from || 'nobody'}${report.badPieces ? `; ${report.badPieces} bad pieces refetched` : ''}${Object.keys(report.dropped).length ? `; dropped ${Object.keys(report.dropped).length} peer(s)` : ''}`);
  }

  /** Pieces of an earlier, interrupted fetch that still match their digests. */
  private async resume(fh: FileHandle, record: BlobRecord, plan: PiecePlan): Promise<number> {
    const size = (await fh.stat()).size;
    let n = 0;
    for (let i = 0; i < record.pieces.length; i++) {
      const { start, end } = pieceSpan(i, record.sizeBytes, record.pieceSizeBytes);
      if (end > size) break;
      const buf = Buffer.allocUnsafe(end - start);
      const { bytesRead } = await fh.read(buf, 0, buf.length, start);
      if (bytesRead === buf.length && sha256Hex(buf) === record.pieces[i]) {
        plan.markDone(i);
        n++;
      }
    }
    return n;
  }

  /**
   * Adds the holders the gossip knows; when it knows none, asks every member directly. Adds the
   * peers fetching the blob too, with the pieces they have.
   */
  private async findHolders(record: BlobRecord, plan: PiecePlan): Promise<void> {
    let found = this.d.holders(record.digest);
    if (found.length === 0) {
      const asked = await Promise.all(
        this.d.members().map(async (peer) => {
          try {
            const [has] = await this.d.source.has(peer, [record.digest], AbortSignal.any([this.stopping.signal, AbortSignal.timeout(PROBE_TIMEOUT_MS)]));
            this.d.learned(peer, record.digest, has);
            return has ? peer : undefined;
          } catch {
            return undefined;
          }
        }),
      );
      found = asked.filter((p): p is string => p !== undefined);
    }
    for (const p of found) plan.addPeer(p);
    this.addPartialHolders(record, plan);
  }

  private addPartialHolders(record: BlobRecord, plan: PiecePlan): void {
    for (const { peer, pieces } of this.d.partialHolders?.(record.digest) ?? []) if (pieces.length > 0) plan.addPeer(peer, pieces);
  }

  /** Whether a transfer may ask `peer` for one more piece: within the limit across transfers, or its only request (no transfer starves). */
  private roomFor(plan: PiecePlan): (peer: string) => boolean {
    return (peer) => plan.inFlightCount === 0 || (this.peerLoad.get(peer) ?? 0) < this.limits.maxPerPeerAllTransfers;
  }

  private async run(fh: FileHandle, record: BlobRecord, plan: PiecePlan, report: TransferReport): Promise<void> {
    if (plan.complete) return;
    await this.findHolders(record, plan);
    const announce = () => this.d.fetching?.(record.digest, plan.donePieces());
    if (report.resumedPieces > 0) announce();
    let wake: () => void = () => undefined;
    const waker = () => wake();
    this.wakers.add(waker);
    let rounds = 0;
    // Peers dropped for a stall are taken back at most this often per transfer (a peer that
    // stalls every time is not waited for forever).
    let readmitsLeft = this.limits.maxRounds;
    let announcedAtMs = Date.now();
    try {
      for (;;) {
        if (this.stopping.signal.aborted) throw new OmniError('ABORTED', 'the node is stopping');
        for (const a of plan.next(this.roomFor(plan))) {
          this.peerLoad.set(a.peer, (this.peerLoad.get(a.peer) ?? 0) + 1);
          void this.piece(fh, record, plan, a, report)
            .then((ok) => ok && announce())
            .finally(() => {
              const n = (this.peerLoad.get(a.peer) ?? 1) - 1;
              if (n > 0) this.peerLoad.set(a.peer, n);
              else this.peerLoad.delete(a.peer);
              for (const w of this.wakers) w();
            });
        }
        if (plan.complete) return;
        if (plan.stuck) {
          if (++rounds > this.limits.maxRounds) {
            const dropped = Object.entries(plan.droppedPeers()).map(([p, why]) => `${p.slice(-12)}: ${why}`).join('; ');
            throw new OmniError('UNAVAILABLE', `no peer could supply blob ${record.digest}${dropped ? ` (${dropped})` : ' (no node holds it)'}`);
          }
          await sleep(ROUND_BACKOFF_MS * rounds);
          // findHolders() below also takes back whole holders that declined a piece for a while.
          const back = readmitsLeft > 0 ? plan.readmitTransient() : 0;
          if (back > 0) readmitsLeft--;
          if (back > 0) this.d.log.info(`registry: asking ${back} peer(s) dropped for a stall or a lost connection again for ${record.digest} (no other peer has its missing pieces)`);
          await this.findHolders(record, plan);
          continue;
        }
        rounds = 0;
        // Until a piece finishes, or the time to look again at what the other fetchers have.
        await new Promise<void>((r) => {
          const t = setTimeout(r, PARTIAL_REFRESH_MS);
          wake = () => (clearTimeout(t), r());
        });
        this.addPartialHolders(record, plan);
        if (Date.now() - announcedAtMs >= PARTIAL_REANNOUNCE_MS) {
          announcedAtMs = Date.now();
          if (plan.donePieces().length > 0) announce();
        }
      }
    } finally {
      this.wakers.delete(waker);
    }
  }

  /** One piece from one peer; resolves true when it arrived good and was written. */
  private async piece(fh: FileHandle, record: BlobRecord, plan: PiecePlan, a: Assignment, report: TransferReport): Promise<boolean> {
    const { start, end } = pieceSpan(a.piece, record.sizeBytes, record.pieceSizeBytes);
    const ctrl = new AbortController();
    const startedMs = Date.now();
    // Stalled when the peer sent nothing for this node, for any request, for the whole timeout:
    // a request queued behind other pieces from the same peer is waiting, not stalled.
    const stalled = () => {
      const quietMs = Date.now() - Math.max(startedMs, this.heardFrom.get(a.peer) ?? 0);
      if (quietMs < this.limits.progressTimeoutMs) timer = setTimeout(stalled, this.limits.progressTimeoutMs - quietMs);
      else ctrl.abort(new Error(`stalled: no data for ${this.limits.progressTimeoutMs} ms`));
    };
    let timer = setTimeout(stalled, this.limits.progressTimeoutMs);
    const onStop = () => ctrl.abort(new Error('the node is stopping'));
    this.stopping.signal.addEventListener('abort', onStop, { once: true });
    try {
      const buf = await this.d.source.fetchPiece(a.peer, record.digest, a.piece, end - start, {
        signal: ctrl.signal,
        onProgress: () => {
          if (this.heardFrom.size > MAX_HEARD_FROM && !this.heardFrom.has(a.peer)) this.heardFrom.clear();
          this.heardFrom.set(a.peer, Date.now());
        },
      });
      if (buf.length !== end - start || sha256Hex(buf) !== record.pieces[a.piece]) {
        report.badPieces++;
        this.d.log.warn(`registry: piece ${a.piece} of ${record.digest} from ${a.peer} fails its digest; asking another peer`);
        plan.onBadPiece(a.piece, a.peer);
        return false;
      }
      let off = 0;
      while (off < buf.length) off += (await fh.write(buf, off, buf.length - off, start + off)).bytesWritten;
      plan.onPiece(a.piece, a.peer);
      return true;
    } catch (err) {
      const e = err as OmniError;
      if (e.code === 'PIECE_MISSING' || e.code === 'PIECE_ELSEWHERE') {
        // A peer fetching the blob too, asked for a piece it does not have yet, or a holder that
        // just sent that piece to another fetcher: not their fault; another piece, or peer, then.
        plan.onMissing(a.piece, a.peer);
        return false;
      }
      // A whole holder that lost the blob is dropped for good (and the gossip corrected); a peer
      // that was fetching it may have given up or restarted, and may be asked again later.
      const gone = (e.code === 'BLOB_UNKNOWN' || e.code === 'BLOB_CORRUPT') && !plan.isPartial(a.peer);
      if (gone) this.d.learned(a.peer, record.digest, false);
      const why = ctrl.signal.aborted ? String((ctrl.signal.reason as Error)?.message ?? 'aborted') : e.message;
      this.d.log.warn(`registry: piece ${a.piece} of ${record.digest} from ${a.peer}: ${why}; dropping that peer from this transfer`);
      plan.onPeerFailed(a.piece, a.peer, why.slice(0, 200), !gone);
      return false;
    } finally {
      clearTimeout(timer);
      this.stopping.signal.removeEventListener('abort', onStop);
    }
  }
}

function sha256Hex(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

