// Raft snapshots streamed in chunks on their own libp2p protocol (/omni/raft/snapshot/1.0.0), so
// heartbeats and appends on /omni/raft/1.0.0 never queue behind a large state transfer.
//
// One transfer = one consistent view of the replicated state (a SnapshotSource, e.g. a LevelDB
// snapshot) sent as rows in ascending key order. Frames (protocol/raft/snapshot-wire.ts):
//
//   sender → offer{id, header}                 header: the encoded Raft Snap message (meta only)
//   receiver → accept{resume, afterKey, rowCount}   its durable position for (sender, id)
//   sender → begin{resume}                     resume there, or start over
//   sender → chunk{seq, rows}…                 ≤ ~1 MiB of rows each, at most `windowChunks` unacked
//   receiver → ack{seq}…                       after sink.write resolved (the rows are written)
//   sender → end{rowCount, checksum}           sha256 over every row of the transfer
//   receiver → done | error{code, message}     done after sink.complete and onComplete(header)
//
// A broken stream is retried with backoff and resumes after the last row the receiver has
// written; an attempt is abandoned when nothing moves for `progressTimeoutMs` (no ack, no frame,
// no row from the source), never on a total time. The checksum covers the whole transfer across
// resumed streams: both sides keep the running hash in memory at every chunk boundary. A receiver
// that restarted has lost its hash but not its rows: it recomputes the hash from the rows it holds
// (SnapshotSink.stagedRows, read back in order) and resumes too — re-reading what is on its own
// disk costs far less than receiving it again. A sender that restarted has a new view: it starts
// over.
// sendSnapshot never throws: it resolves 'finish' or 'failure', for raft.reportSnapshot.
import { createHash, type Hash } from 'node:crypto';
import type { Connection, PeerId, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import type { OmniHost } from '../p2p/host.js';
import { readFrames, sendFrame } from '../p2p/framed-stream.js';
import type { Logger } from '../logger.js';
import { DecodeError, decodeRaftMessage } from '../../protocol/codec.js';
import { FrameError } from '../../protocol/framing.js';
import { MessageType } from '../../protocol/raft/types.js';
import {
  MAX_SNAPSHOT_FRAME_BYTES,
  MAX_SNAPSHOT_HEADER_BYTES,
  MAX_SNAPSHOT_REPLY_FRAME_BYTES,
  MAX_SNAPSHOT_ROW_BYTES,
  MAX_SNAPSHOT_ROWS_PER_CHUNK,
  SNAPSHOT_CHUNK_TARGET_BYTES,
  compareKeys,
  decodeSnapshotFrame,
  encodeSnapshotFrame,
  keysEqual,
  rowBytes,
  writeRowChecksumPrefix,
  type SnapshotFrame,
  type SnapshotFrameKind,
  type SnapshotRow,
} from '../../protocol/raft/snapshot-wire.js';

export const SNAPSHOT_PROTOCOL = '/omni/raft/snapshot/1.0.0';

/** One consistent view of the replicated state (e.g. a LevelDB explicit snapshot) being sent. */
export interface SnapshotSource {
  /** Same id = same view: a transfer of this id can resume. */
  readonly id: string;
  /** The view's rows in ascending key order, strictly after `afterKey` (undefined: from the first). */
  rows(afterKey: Uint8Array | undefined, signal: AbortSignal): AsyncIterable<[key: Uint8Array, value: Uint8Array]>;
}

export interface SnapshotSink {
  /** The last row key durably received for (from, id), to resume after; undefined: start over (and drop any partial one). */
  resumeAfter(from: string, id: string): Promise<Uint8Array | undefined>;
  /** Rows in key order; written when the promise resolves (the ack follows it), durable once complete() resolved. */
  write(from: string, id: string, rows: [Uint8Array, Uint8Array][]): Promise<void>;
  /** All rows arrived and the stream's checksum matched. */
  complete(from: string, id: string, rowCount: number): Promise<void>;
  /** Drop what was received of (from, id). May be called when nothing of it was written. */
  abort(from: string, id: string): Promise<void>;
  /**
   * The rows durably received for (from, id) so far, in the order they came, as they came (a
   * receiver that restarted recomputes its checksum from them to resume). Optional: without it a
   * restarted receiver starts over.
   */
  stagedRows?(from: string, id: string, signal: AbortSignal): AsyncIterable<[key: Uint8Array, value: Uint8Array]>;
}

/** What sendSnapshot resolves to: raft.reportSnapshot(peer, result === 'finish' ? Finish : Failure). */
export type SnapshotSendResult = 'finish' | 'failure';

/**
 * Called when a transfer completed: `header` is the Raft Snap message the sender offered. It is
 * called again, without sink calls, when the same peer offers the id it completed last (its
 * previous attempt lost the final done): keep the last completed view until Raft took or
 * refused a newer snapshot.
 */
export type SnapshotCompleteHandler = (from: string, header: Uint8Array, id: string) => void;

export interface SnapshotStreamOptions {
  /** The libp2p host (only these four members are used). */
  host: Pick<OmniHost, 'peerId' | 'handle' | 'unhandle' | 'dialProtocol'>;
  log: Logger;
  /** Whether a peer may send this node a snapshot (cluster members only). Default: everyone. */
  isTrustedSender?: (peer: string) => boolean;
  /** An attempt (either side) is abandoned after this long without any progress. */
  progressTimeoutMs?: number;
  /** Chunks in flight without an ack (bounds the receiver's buffering). */
  windowChunks?: number;
  /** Row bytes per chunk, at most SNAPSHOT_CHUNK_TARGET_BYTES. */
  chunkTargetBytes?: number;
  /** Failed attempts in a row (no new ack between them) before sendSnapshot gives up. */
  maxAttemptsWithoutProgress?: number;
  backoffMinMs?: number;
  backoffMaxMs?: number;
  dialTimeoutMs?: number;
  /** Transfers this node receives at once (one per peer at most). */
  maxConcurrentInbound?: number;
  /** Transfers this node sends at once (one per peer at most); more wait their turn. */
  maxConcurrentOutbound?: number;
}

export const DEFAULT_SNAPSHOT_PROGRESS_TIMEOUT_MS = 30_000;
export const DEFAULT_SNAPSHOT_WINDOW_CHUNKS = 4;
export const DEFAULT_SNAPSHOT_MAX_ATTEMPTS = 5;
export const DEFAULT_SNAPSHOT_MAX_CONCURRENT_INBOUND = 2;
export const DEFAULT_SNAPSHOT_MAX_CONCURRENT_OUTBOUND = 2;
/** Partial transfers whose checksum state is kept for a resume (one per sending peer). */
export const MAX_RESUMABLE_PARTIALS = 16;
/** libp2p streams per connection and direction: one transfer, plus one replacing it. */
const MAX_STREAMS_PER_CONNECTION = 2;
const CLOSE_TIMEOUT_MS = 5_000;
/**
 * What a paused inbound stream may buffer before libp2p resets it: yamux's largest stream window
 * (16 MiB, all a well-behaved peer can have in flight) plus one frame.
 */
const INBOUND_READ_BUFFER_BYTES = 16 * 1024 * 1024 + MAX_SNAPSHOT_FRAME_BYTES;

/** Error codes a receiver answers with; the retryable ones make the sender try again. */
const RETRYABLE_CODES = new Set(['BUSY', 'SINK_FAILED', 'STOPPING']);

class RemoteError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

/** The peer broke the protocol (or our source did): no retry, no resume. */
class ProtocolError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

class SinkError extends Error {}

interface Boundary {
  /** Last row key covered; undefined: before the first row. */
  key: Uint8Array | undefined;
  rowCount: number;
  /** The running checksum over every row up to `key`. */
  hash: Hash;
}

interface SendState {
  /** The last acked boundary (durable at the receiver). */
  acked: Boundary;
  /** Boundaries sent and not (yet) acked, oldest first: a lost ack may still be durable. */
  inflight: (Boundary & { seq: number })[];
}

interface ResumablePartial {
  id: string;
  afterKey: Uint8Array;
  rowCount: number;
  hash: Hash;
}

export class SnapshotStream {
  private readonly opts: SnapshotStreamOptions;
  private readonly selfId: string;
  private readonly progressTimeoutMs: number;
  private readonly windowChunks: number;
  private readonly chunkTargetBytes: number;
  private readonly maxAttempts: number;
  private readonly backoffMinMs: number;
  private readonly backoffMaxMs: number;
  private readonly dialTimeoutMs: number;
  private readonly maxInbound: number;
  private readonly outboundSlots: Limiter;
  private readonly stopper = new AbortController();
  /** One outbound transfer per peer: a call for the same view joins it, another view supersedes it. */
  private readonly outbound = new Map<string, { id: string; ac: AbortController; result: Promise<SnapshotSendResult> }>();
  /** Where a failed transfer stopped, per peer, for a later call with the same view. */
  private readonly sendStates = new Map<string, { id: string; state: SendState }>();
  /** One inbound stream per peer. */
  private readonly inbound = new Map<string, { stream: Stream; done: Promise<void> }>();
  private readonly partials = new Map<string, ResumablePartial>();
  /** The last transfer id each peer completed (a few peers): a re-offer of it is answered done. */
  private readonly completed = new Map<string, string>();
  private handling: { onComplete: SnapshotCompleteHandler; sink: SnapshotSink } | undefined;

  /** Counters for logs and tests. */
  readonly stats = { sent: 0, sendFailures: 0, attemptsRetried: 0, resumedSends: 0, received: 0, refusedInbound: 0, resumedReceives: 0, checksumsRebuilt: 0 };

  constructor(opts: SnapshotStreamOptions) {
    this.opts = opts;
    this.selfId = opts.host.peerId.toString();
    this.progressTimeoutMs = opts.progressTimeoutMs ?? DEFAULT_SNAPSHOT_PROGRESS_TIMEOUT_MS;
    this.windowChunks = Math.max(1, opts.windowChunks ?? DEFAULT_SNAPSHOT_WINDOW_CHUNKS);
    this.chunkTargetBytes = Math.min(SNAPSHOT_CHUNK_TARGET_BYTES, Math.max(1, opts.chunkTargetBytes ?? SNAPSHOT_CHUNK_TARGET_BYTES));
    this.maxAttempts = Math.max(1, opts.maxAttemptsWithoutProgress ?? DEFAULT_SNAPSHOT_MAX_ATTEMPTS);
    this.backoffMinMs = opts.backoffMinMs ?? 100;
    this.backoffMaxMs = opts.backoffMaxMs ?? 5_000;
    this.dialTimeoutMs = opts.dialTimeoutMs ?? 5_000;
    this.maxInbound = Math.max(1, opts.maxConcurrentInbound ?? DEFAULT_SNAPSHOT_MAX_CONCURRENT_INBOUND);
    this.outboundSlots = new Limiter(Math.max(1, opts.maxConcurrentOutbound ?? DEFAULT_SNAPSHOT_MAX_CONCURRENT_OUTBOUND));
  }

  /** Starts receiving snapshots into `sink`; `onComplete` gets each finished transfer's header. */
  async handle(onComplete: SnapshotCompleteHandler, sink: SnapshotSink): Promise<void> {
    this.handling = { onComplete, sink };
    await this.opts.host.handle(SNAPSHOT_PROTOCOL, (stream, conn) => void this.receive(stream, conn), {
      maxInboundStreams: MAX_STREAMS_PER_CONNECTION,
      maxOutboundStreams: MAX_STREAMS_PER_CONNECTION,
    });
  }

  /** Aborts every transfer both ways and stops receiving. Partial transfers stay in the sink. */
  async stop(): Promise<void> {
    this.stopper.abort(new Error('snapshot stream stopped'));
    for (const { stream } of this.inbound.values()) stream.abort(new Error('snapshot stream stopped'));
    if (this.handling) await this.opts.host.unhandle(SNAPSHOT_PROTOCOL).catch(() => undefined);
    await Promise.all([...this.inbound.values()].map((i) => i.done));
  }

  // ------------------------------------------------------------------ sender

  /**
   * Streams `source` to `peer` with `header` (the encoded Raft Snap message, meta only), retrying
   * broken streams from the last acked row. Resolves 'finish' once the peer completed the snapshot,
   * 'failure' otherwise (aborted, superseded, peer refused, too many attempts without progress).
   * Never throws.
   *
   * One transfer per peer: a call for the view (`source.id`) already on its way to that peer joins
   * it (same result; the first caller's signal governs it), a call for another view supersedes it
   * (the older resolves 'failure'). A call for the view a failed call left part way resumes where
   * that one stopped, so Raft re-sending a snapshot never restarts it from the first row.
   */
  sendSnapshot(peer: PeerId | string, header: Uint8Array, source: SnapshotSource, signal: AbortSignal): Promise<SnapshotSendResult> {
    const peerKey = peer.toString();
    const running = this.outbound.get(peerKey);
    if (running && running.id === source.id && !running.ac.signal.aborted) return running.result;
    running?.ac.abort(new Error('superseded by a newer snapshot to the same peer'));
    const ac = new AbortController();
    const entry = { id: source.id, ac, result: Promise.resolve<SnapshotSendResult>('failure') };
    this.outbound.set(peerKey, entry);
    entry.result = this.send(peer, peerKey, header, source, AbortSignal.any([signal, ac.signal, this.stopper.signal])).finally(() => {
      if (this.outbound.get(peerKey) === entry) this.outbound.delete(peerKey);
    });
    return entry.result;
  }

  private async send(peer: PeerId | string, peerKey: string, header: Uint8Array, source: SnapshotSource, all: AbortSignal): Promise<SnapshotSendResult> {
    let release: (() => void) | undefined;
    const kept = this.sendStates.get(peerKey);
    const state: SendState = kept?.id === source.id ? kept.state : { acked: { key: undefined, rowCount: 0, hash: createHash('sha256') }, inflight: [] };
    this.sendStates.delete(peerKey);
    try {
      if (header.length === 0 || header.length > MAX_SNAPSHOT_HEADER_BYTES) throw new ProtocolError('BAD_HEADER', `header of ${header.length} bytes`);
      const peerId = typeof peer === 'string' ? peerIdFromString(peer) : peer;
      release = await this.outboundSlots.take(all);
      let failures = 0;
      let backoffMs = this.backoffMinMs;
      for (;;) {
        const outcome = await this.attempt(peerId, header, source, state, all);
        if (outcome.done) {
          this.stats.sent++;
          this.opts.log.info(`snapshot ${source.id.slice(0, 64)} sent to ${peerKey}: ${state.acked.rowCount} rows`);
          return 'finish';
        }
        if (outcome.fatal || all.aborted) throw outcome.error;
        failures = outcome.progressed ? 1 : failures + 1;
        if (outcome.progressed) backoffMs = this.backoffMinMs;
        if (failures >= this.maxAttempts) throw new Error(`${failures} attempts without progress, last: ${outcome.error.message}`);
        this.stats.attemptsRetried++;
        this.opts.log.debug(`snapshot to ${peerKey}: ${outcome.error.message}; retry in ${backoffMs} ms after row ${state.acked.rowCount}`);
        await sleep(backoffMs, all);
        backoffMs = Math.min(this.backoffMaxMs, backoffMs * 2);
      }
    } catch (err) {
      this.stats.sendFailures++;
      const why = all.aborted ? `aborted (${String((all.reason as Error)?.message ?? all.reason)})` : (err as Error).message;
      this.opts.log.warn(`snapshot ${source.id.slice(0, 64)} to ${peerKey} failed: ${why}`);
      // Kept for a later call with the same view (bounded: a few peers).
      if (state.acked.rowCount > 0 || state.inflight.length > 0) {
        this.sendStates.set(peerKey, { id: source.id, state });
        if (this.sendStates.size > MAX_RESUMABLE_PARTIALS) this.sendStates.delete(this.sendStates.keys().next().value!);
      }
      return 'failure';
    } finally {
      release?.();
    }
  }

  /** One stream: offer, resume point, chunks, end. Never throws. */
  private async attempt(
    peer: PeerId,
    header: Uint8Array,
    source: SnapshotSource,
    state: SendState,
    outer: AbortSignal,
  ): Promise<{ done: true } | { done: false; fatal: boolean; progressed: boolean; error: Error }> {
    const local = new AbortController();
    const signal = AbortSignal.any([outer, local.signal]);
    const watchdog = new Watchdog(this.progressTimeoutMs, () => local.abort(new Error(`no progress for ${this.progressTimeoutMs} ms`)));
    let stream: Stream | undefined;
    let progressed = false;
    const onAbort = () => stream?.abort(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      stream = await this.opts.host.dialProtocol(peer, SNAPSHOT_PROTOCOL, { signal: AbortSignal.any([signal, AbortSignal.timeout(this.dialTimeoutMs)]) });
      if (signal.aborted) onAbort();
      stream.inactivityTimeout = 0; // our own progress watchdog decides
      watchdog.touch();
      const out = stream;
      const inbox = new Inbox(out, () => watchdog.touch());
      const send = async (f: SnapshotFrame) => {
        await sendFrame(out, encodeSnapshotFrame(f), signal);
        watchdog.touch();
      };
      const onAck = (f: SnapshotFrame) => {
        if (f.kind !== 'ack') return;
        const next = state.inflight[0];
        if (!next || next.seq !== f.seq) throw new ProtocolError('BAD_ACK', `ack of chunk ${f.seq}, expected ${next?.seq ?? 'none'}`);
        state.acked = state.inflight.shift()!;
        progressed = true;
      };

      await send({ kind: 'offer', id: source.id, header });
      const accept = await inbox.take(['accept', 'done']);
      if (accept.kind === 'done') {
        // The receiver completed this very view already (our previous attempt lost its done).
        await out.close({ signal: AbortSignal.timeout(CLOSE_TIMEOUT_MS) }).catch(() => out.abort(new Error('close timed out')));
        return { done: true };
      }
      if (accept.kind !== 'accept') throw new ProtocolError('BAD_FRAME', 'no accept');
      const base = resumePoint(state, accept);
      if (base.rowCount > state.acked.rowCount) progressed = true; // the receiver kept rows whose ack was lost
      state.acked = base;
      state.inflight = [];
      if (base.key !== undefined) this.stats.resumedSends++;
      await send({ kind: 'begin', resume: base.key !== undefined });

      const hash = base.hash.copy();
      let lastKey = base.key;
      let rowCount = base.rowCount;
      let seq = 0;
      let chunk: SnapshotRow[] = [];
      let chunkBytes = 0;
      const flush = async () => {
        for (let f = inbox.poll(); f; f = inbox.poll()) {
          if (f.kind !== 'ack') throw new ProtocolError('BAD_FRAME', `unexpected ${f.kind} from the receiver`);
          onAck(f);
        }
        while (state.inflight.length >= this.windowChunks) onAck(await inbox.take(['ack']));
        const rows = chunk;
        chunk = [];
        chunkBytes = 0;
        state.inflight.push({ seq, key: lastKey, rowCount, hash: hash.copy() });
        await send({ kind: 'chunk', seq: seq++, rows });
      };
      const rows = source.rows(base.key, signal)[Symbol.asyncIterator]();
      try {
        for (;;) {
          let r: IteratorResult<SnapshotRow>;
          try {
            r = await rows.next();
          } catch (err) {
            if (signal.aborted) throw err;
            throw new ProtocolError('SOURCE_FAILED', `reading the snapshot: ${(err as Error).message}`);
          }
          if (r.done) break;
          const [key, value] = r.value;
          watchdog.touch();
          if (lastKey !== undefined && compareKeys(key, lastKey) <= 0) throw new ProtocolError('SOURCE_ORDER', 'the source yielded a key not after the previous one');
          const size = rowBytes(key, value);
          if (size > MAX_SNAPSHOT_ROW_BYTES) throw new ProtocolError('SOURCE_ROW', `a row of ${size} bytes exceeds ${MAX_SNAPSHOT_ROW_BYTES}`);
          if (chunk.length > 0 && (chunkBytes + size > this.chunkTargetBytes || chunk.length >= MAX_SNAPSHOT_ROWS_PER_CHUNK)) await flush();
          chunk.push([key, value]);
          chunkBytes += size;
          updateChecksum(hash, key, value);
          lastKey = key;
          rowCount++;
        }
      } finally {
        await rows.return?.(undefined)?.catch(() => undefined);
      }
      if (chunk.length > 0) await flush();
      await send({ kind: 'end', rowCount, checksum: new Uint8Array(hash.digest()) });
      for (;;) {
        const f = await inbox.take(['ack', 'done']);
        if (f.kind === 'done') break;
        onAck(f);
      }
      if (state.inflight.length > 0) throw new ProtocolError('BAD_ACK', 'done before every chunk was acked');
      await out.close({ signal: AbortSignal.timeout(CLOSE_TIMEOUT_MS) }).catch(() => out.abort(new Error('close timed out')));
      return { done: true };
    } catch (err) {
      const error = signal.aborted && !outer.aborted ? (local.signal.reason as Error) : (err as Error);
      const fatal = outer.aborted || err instanceof ProtocolError || err instanceof DecodeError || err instanceof FrameError || (err instanceof RemoteError && !RETRYABLE_CODES.has(err.code));
      return { done: false, fatal, progressed, error };
    } finally {
      watchdog.stop();
      signal.removeEventListener('abort', onAbort);
      if (stream && stream.status === 'open') stream.abort(new Error('snapshot attempt ended'));
    }
  }

  // ------------------------------------------------------------------ receiver

  private async receive(stream: Stream, conn: Connection): Promise<void> {
    const from = conn.remotePeer.toString();
    let finish!: () => void;
    const me = { stream, done: new Promise<void>((r) => (finish = r)) };
    let registered = false;
    try {
      if (this.opts.isTrustedSender && !this.opts.isTrustedSender(from)) throw new ProtocolError('FORBIDDEN', 'this node takes snapshots only from cluster members');
      if (this.stopper.signal.aborted || !this.handling) throw new RemoteError('STOPPING', 'this node is stopping');
      const prev = this.inbound.get(from);
      if (!prev && this.inbound.size >= this.maxInbound) throw new RemoteError('BUSY', `already receiving ${this.inbound.size} snapshots`);
      this.inbound.set(from, me);
      registered = true;
      if (prev) {
        // A new stream from the same peer replaces its old one (which may be half-open).
        prev.stream.abort(new Error('replaced by a newer snapshot stream from the same peer'));
        await prev.done;
        if (stream.status !== 'open') return;
      }
      await this.serve(stream, from, this.handling);
    } catch (err) {
      await this.refuse(stream, from, err as Error);
    } finally {
      if (registered && this.inbound.get(from) === me) this.inbound.delete(from);
      if (stream.status === 'open') stream.abort(new Error('snapshot stream done'));
      finish();
    }
  }

  private async refuse(stream: Stream, from: string, err: Error): Promise<void> {
    const code = err instanceof ProtocolError || err instanceof RemoteError ? err.code : err instanceof FrameError ? err.code : err instanceof DecodeError ? 'BAD_FRAME' : err instanceof SinkError ? 'SINK_FAILED' : undefined;
    if (code === undefined) {
      // The stream broke (reset, closed, replaced, no progress): the partial transfer is kept.
      this.opts.log.debug(`snapshot from ${from}: stream ended: ${err.message}`);
      return;
    }
    this.stats.refusedInbound++;
    this.opts.log.warn(`snapshot from ${from}: refused (${code}): ${err.message}`);
    if (stream.status !== 'open' || stream.writeStatus !== 'writable') return;
    try {
      await sendFrame(stream, encodeSnapshotFrame({ kind: 'error', code, message: err.message.slice(0, 300) }), AbortSignal.timeout(CLOSE_TIMEOUT_MS));
      await stream.close({ signal: AbortSignal.timeout(CLOSE_TIMEOUT_MS) });
    } catch {
      stream.abort(err);
    }
  }

  private async serve(stream: Stream, from: string, h: { onComplete: SnapshotCompleteHandler; sink: SnapshotSink }): Promise<void> {
    stream.inactivityTimeout = 0;
    stream.maxReadBufferLength = INBOUND_READ_BUFFER_BYTES;
    const watchdog = new Watchdog(this.progressTimeoutMs, () => stream.abort(new Error(`no progress for ${this.progressTimeoutMs} ms`)));
    const frames = readFrames(stream, MAX_SNAPSHOT_FRAME_BYTES)[Symbol.asyncIterator]();
    const next = async (kinds: readonly SnapshotFrameKind[]): Promise<SnapshotFrame> => {
      const r = await frames.next();
      if (r.done) throw new Error('stream ended before the snapshot completed');
      watchdog.touch();
      return decodeSnapshotFrame(r.value, MAX_SNAPSHOT_FRAME_BYTES, kinds);
    };
    const sink = h.sink;
    const sinkCall = async <T>(what: string, p: () => Promise<T>): Promise<T> => {
      watchdog.pause(); // this side waits on itself, not on the peer
      try {
        return await p();
      } catch (err) {
        throw new SinkError(`sink.${what}: ${(err as Error).message}`);
      } finally {
        watchdog.touch();
      }
    };
    let id: string | undefined;
    try {
      const offer = await next(['offer']);
      if (offer.kind !== 'offer') throw new ProtocolError('BAD_FRAME', 'expected an offer');
      this.checkHeader(offer.header, from);
      if (this.completed.get(from) === offer.id) {
        // Completed already (the sender's retry after a lost done): no rows to send again, but
        // the header goes to Raft again (it may carry a newer term than the one stepped before).
        this.stats.received++;
        try {
          h.onComplete(from, offer.header, offer.id);
        } catch (err) {
          throw new RemoteError('INTERNAL', `applying the snapshot: ${(err as Error).message}`);
        }
        await sendFrame(stream, encodeSnapshotFrame({ kind: 'done' }));
        await stream.close({ signal: AbortSignal.timeout(CLOSE_TIMEOUT_MS) }).catch(() => stream.abort(new Error('close timed out')));
        return;
      }
      id = offer.id;
      let partial = this.partials.get(from);
      if (partial && partial.id !== offer.id) {
        this.partials.delete(from);
        await sinkCall('abort', () => sink.abort(from, partial!.id));
        partial = undefined;
      }
      const durable = await sinkCall('resumeAfter', () => sink.resumeAfter(from, offer.id));
      if (partial === undefined && durable !== undefined && sink.stagedRows) {
        // Rows left by this node before a restart: their checksum, recomputed from them.
        partial = await sinkCall('stagedRows', () => this.rebuildPartial(sink, from, offer.id, durable));
        if (partial) this.remember(from, partial);
      }
      const canResume = partial !== undefined && durable !== undefined && keysEqual(partial.afterKey, durable);
      await sendFrame(stream, encodeSnapshotFrame(canResume ? { kind: 'accept', resume: true, afterKey: partial!.afterKey, rowCount: partial!.rowCount } : { kind: 'accept', resume: false, afterKey: new Uint8Array(0), rowCount: 0 }));
      const begin = await next(['begin']);
      if (begin.kind !== 'begin' || (begin.resume && !canResume)) throw new ProtocolError('BAD_FRAME', 'begin resumes where nothing can be resumed');
      let pos: { afterKey: Uint8Array | undefined; rowCount: number; hash: Hash };
      if (begin.resume) {
        pos = partial!;
        this.stats.resumedReceives++;
      } else {
        this.partials.delete(from);
        if (partial !== undefined || durable !== undefined) await sinkCall('abort', () => sink.abort(from, offer.id));
        pos = { afterKey: undefined, rowCount: 0, hash: createHash('sha256') };
      }
      for (let seq = 0; ; seq++) {
        const f = await next(['chunk', 'end']);
        if (f.kind === 'end') {
          const checksum = pos.hash.copy().digest();
          if (f.rowCount !== pos.rowCount) throw new ProtocolError('ROW_COUNT_MISMATCH', `end says ${f.rowCount} rows, ${pos.rowCount} arrived`);
          if (!checksum.equals(f.checksum)) throw new ProtocolError('CHECKSUM_MISMATCH', 'the rows received do not match the sender checksum');
          await sinkCall('complete', () => sink.complete(from, offer.id, pos.rowCount));
          this.partials.delete(from);
          this.completed.delete(from);
          this.completed.set(from, offer.id);
          if (this.completed.size > MAX_RESUMABLE_PARTIALS) this.completed.delete(this.completed.keys().next().value!);
          id = undefined; // nothing partial left to drop
          this.stats.received++;
          try {
            h.onComplete(from, offer.header, offer.id);
          } catch (err) {
            throw new RemoteError('INTERNAL', `applying the snapshot: ${(err as Error).message}`);
          }
          await sendFrame(stream, encodeSnapshotFrame({ kind: 'done' }));
          await stream.close({ signal: AbortSignal.timeout(CLOSE_TIMEOUT_MS) }).catch(() => stream.abort(new Error('close timed out')));
          this.opts.log.info(`snapshot ${offer.id.slice(0, 64)} from ${from}: ${pos.rowCount} rows`);
          return;
        }
        if (f.kind !== 'chunk') throw new ProtocolError('BAD_FRAME', 'expected a chunk');
        if (f.seq !== seq) throw new ProtocolError('BAD_FRAME', `chunk ${f.seq}, expected ${seq}`);
        const hash = pos.hash.copy();
        let last = pos.afterKey;
        for (const [key, value] of f.rows) {
          if (last !== undefined && compareKeys(key, last) <= 0) throw new ProtocolError('OUT_OF_ORDER', 'rows are not in ascending key order');
          updateChecksum(hash, key, value);
          last = key;
        }
        // While the rows are written, the stream is paused: no yamux window updates, so the peer
        // can put at most one window (≤ 16 MiB) more in our read buffer, whatever it does.
        setPaused(stream, true);
        await sinkCall('write', () => sink.write(from, offer.id, f.rows));
        setPaused(stream, false);
        pos = { afterKey: last, rowCount: pos.rowCount + f.rows.length, hash };
        this.remember(from, { id: offer.id, afterKey: last!, rowCount: pos.rowCount, hash });
        await sendFrame(stream, encodeSnapshotFrame({ kind: 'ack', seq }));
      }
    } catch (err) {
      // A peer that broke the protocol loses its partial transfer; a broken stream keeps it.
      const violation = err instanceof ProtocolError || err instanceof DecodeError || err instanceof FrameError || (err instanceof RemoteError && err.code === 'INTERNAL');
      if (violation && id !== undefined) {
        this.partials.delete(from);
        await sink.abort(from, id).catch((e: Error) => this.opts.log.warn(`snapshot from ${from}: sink.abort: ${e.message}`));
      }
      throw err;
    } finally {
      watchdog.stop();
      await frames.return?.(undefined).catch(() => undefined);
    }
  }

  /**
   * The resume state of (from, id) from the rows the sink holds: their count and running checksum,
   * if they end at `durable` in strictly ascending order (undefined otherwise: start over).
   */
  private async rebuildPartial(sink: SnapshotSink, from: string, id: string, durable: Uint8Array): Promise<ResumablePartial | undefined> {
    const hash = createHash('sha256');
    let rowCount = 0;
    let last: Uint8Array | undefined;
    try {
      for await (const [key, value] of sink.stagedRows!(from, id, this.stopper.signal)) {
        if (last !== undefined && compareKeys(key, last) <= 0) return undefined;
        updateChecksum(hash, key, value);
        last = key;
        rowCount++;
      }
    } catch (err) {
      if (this.stopper.signal.aborted) throw err;
      this.opts.log.warn(`snapshot ${id.slice(0, 64)} from ${from}: the rows held cannot be read back (${(err as Error).message}); starting over`);
      return undefined;
    }
    if (last === undefined || !keysEqual(last, durable)) return undefined;
    this.stats.checksumsRebuilt++;
    this.opts.log.info(`snapshot ${id.slice(0, 64)} from ${from}: resuming after a restart from the ${rowCount} rows held`);
    return { id, afterKey: last, rowCount, hash };
  }

  private checkHeader(header: Uint8Array, from: string): void {
    let ok = false;
    try {
      const m = decodeRaftMessage(header, MAX_SNAPSHOT_HEADER_BYTES);
      ok = m.type === MessageType.Snap && m.from === from && m.to === this.selfId && m.term > 0 && m.snapshot !== undefined;
    } catch {
      ok = false;
    }
    if (!ok) throw new ProtocolError('BAD_HEADER', 'the header is not a Snap message from the sending peer to this node');
  }

  private remember(from: string, p: ResumablePartial): void {
    this.partials.delete(from);
    this.partials.set(from, p);
    while (this.partials.size > MAX_RESUMABLE_PARTIALS) {
      const [oldest, old] = this.partials.entries().next().value!;
      this.partials.delete(oldest);
      void this.handling?.sink.abort(oldest, old.id).catch(() => undefined);
    }
  }
}

/** The boundary to resume from: the receiver's durable position if we know its checksum state there. */
function resumePoint(state: SendState, accept: SnapshotFrame & { kind: 'accept' }): Boundary {
  const start: Boundary = { key: undefined, rowCount: 0, hash: createHash('sha256') };
  if (!accept.resume) return start;
  for (const b of [state.acked, ...state.inflight]) {
    if (b.key !== undefined && b.rowCount === accept.rowCount && keysEqual(b.key, accept.afterKey)) return b;
  }
  return start;
}

/** Frames from the receiver, read as they arrive; one consumer takes them in order. */
class Inbox {
  private readonly queue: SnapshotFrame[] = [];
  private waiter: { resolve: () => void } | undefined;
  private failure: Error | undefined;

  constructor(stream: Stream, onFrame: () => void) {
    void (async () => {
      try {
        for await (const frame of readFrames(stream, MAX_SNAPSHOT_REPLY_FRAME_BYTES)) {
          onFrame();
          this.queue.push(decodeSnapshotFrame(frame, MAX_SNAPSHOT_REPLY_FRAME_BYTES, ['accept', 'ack', 'done', 'error']));
          this.waiter?.resolve();
        }
        this.failure = new Error('the receiver closed the stream');
      } catch (err) {
        this.failure = err as Error;
      }
      this.waiter?.resolve();
    })();
  }

  /** The next frame if one arrived (an error frame throws). */
  poll(): SnapshotFrame | undefined {
    const f = this.queue.shift();
    if (f?.kind === 'error') throw new RemoteError(f.code, f.message);
    return f;
  }

  async take(kinds: readonly SnapshotFrameKind[]): Promise<SnapshotFrame> {
    for (;;) {
      const f = this.poll();
      if (f) {
        if (!kinds.includes(f.kind)) throw new ProtocolError('BAD_FRAME', `unexpected ${f.kind} from the receiver`);
        return f;
      }
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve) => (this.waiter = { resolve }));
      this.waiter = undefined;
    }
  }
}

/** Calls `onExpire` once when touch() was not called for `ms` (paused: never). */
class Watchdog {
  private last = performance.now();
  private paused = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly ms: number,
    private readonly onExpire: () => void,
  ) {
    this.arm(ms);
  }

  touch(): void {
    this.last = performance.now();
    this.paused = false;
  }

  /** Until the next touch(): this side is waiting on itself (e.g. a sink write), not on the peer. */
  pause(): void {
    this.paused = true;
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(delayMs: number): void {
    this.timer = setTimeout(() => {
      const idle = performance.now() - this.last;
      if (this.paused || idle < this.ms) this.arm(this.paused ? this.ms : this.ms - idle);
      else {
        this.timer = undefined;
        this.onExpire();
      }
    }, delayMs);
  }
}

/** At most `max` holders; take() waits in FIFO order or until its signal aborts. */
class Limiter {
  private held = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly max: number) {}

  async take(signal: AbortSignal): Promise<() => void> {
    signal.throwIfAborted();
    if (this.held < this.max) this.held++;
    else
      await new Promise<void>((resolve, reject) => {
        const w = () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        };
        const onAbort = () => {
          const i = this.waiting.indexOf(w);
          if (i >= 0) this.waiting.splice(i, 1);
          reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
        };
        this.waiting.push(w);
        signal.addEventListener('abort', onAbort, { once: true });
      });
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.held--;
    };
  }
}

const checksumPrefix = new Uint8Array(8);

/** Adds one row to a transfer checksum (hash.update copies synchronously: the prefix is reused). */
function updateChecksum(hash: Hash, key: Uint8Array, value: Uint8Array): void {
  hash.update(writeRowChecksumPrefix(checksumPrefix, key, value));
  hash.update(key);
  hash.update(value);
}

function setPaused(stream: Stream, paused: boolean): void {
  try {
    if (paused) stream.pause();
    else stream.resume();
  } catch {
    // the stream is closing: reading ends anyway
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
