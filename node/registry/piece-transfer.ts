// Blob pieces between nodes over libp2p (`/omni/registry/pieces/1.0.0`), so a node that lacks a
// blob fetches it from every peer that holds it (node/registry/blob-fetcher.ts). Only current
// members may open the protocol (the private network and noise authenticate the peer). One
// stream per request (a pushed copy's lasts while its bytes go), closed when answered, so the
// per-connection stream limit is never reached by streams left open; a server reads nothing
// after a request but a pushed copy's bytes:
//
//   caller → one JSON frame {op: "piece", digest, index}  or  {op: "have", digests: [...]}
//            or {op: "replicate", digest} (fetch that blob from its holders, answer when it is here)
//            or, for a blob of at most INLINE_REPLICA_BYTES, 'I' + u32 length + {op: "replicate",
//            digest, sizeBytes, pieceSizeBytes, pieces} + the blob's bytes (keep those bytes: no
//            catalog read, no fetch; hashed and checked against the digest and pieces — a record
//            sent without the bytes is not trusted, the catalog's is used). A node of an older
//            version refuses the 'I' frame (BAD_REQUEST): the pusher then asks again, the plain
//            way, once the catalog has the record.
//            or, for a larger blob the caller holds, 'S' + {op: "replicate", digest, sizeBytes,
//            pieceSizeBytes, pieces} (a pushed copy: the server answers 'H' {held: true} at once
//            when it holds the blob, else 'G' (go) once the size and its disk space are checked;
//            the caller then sends the blob's bytes, raw (no frames: neither side copies them),
//            which the server hashes and writes as they come — saying how many it has written
//            in 'A' frames (6-byte count), the caller never more than PUSH_WINDOW_BYTES ahead —
//            and keeps only when the digest and pieces match, then 'H'. One stream, no piece
//            requests, no catalog read, the bytes read from disk once. A node of an older
//            version refuses the 'S' frame (BAD_REQUEST): the caller asks it the plain way.)
//   server → 'H'+JSON header ({sizeBytes} for a piece, {have: [bool]} for have, {held: true}
//            for replicate), then for a
//            piece its bytes in 'D' frames of at most 256 KiB, then it closes; or 'E'+JSON
//            {code, message} (BLOB_UNKNOWN, BLOB_CORRUPT, PIECE_MISSING, PIECE_ELSEWHERE,
//            FORBIDDEN, BAD_REQUEST).
//
// A node serves the pieces of blobs it holds, and also those that have already arrived of a
// blob it is still fetching (PIECE_MISSING for the others): nodes pulling the same image at once
// pass pieces on to each other instead of all waiting on the holder's upload. A node holding a
// blob whole declines (PIECE_ELSEWHERE) a piece it has just sent to another fetcher while it
// still has pieces nobody was sent (protocol/registry/piece-spread.ts), so its upload carries
// each piece once before it carries any twice.
//
// The server reads each piece verified against its digest (BlobStore.readPiece): a corrupt copy
// is refused and removed there, never sent. The caller checks the digest again anyway.
import type { Stream, Connection } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import type { OmniHost } from '../p2p/host.js';
import { readFrames, readOneFrame, sendFrame, sendTaggedFrame, StreamReader } from '../p2p/framed-stream.js';
import { sendDrained } from '../p2p/drain.js';
import { FrameError, encodeTaggedFrame } from '../../protocol/framing.js';
import { OmniError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { BlobStore } from './blob-store.js';
import { isDigest } from '../../protocol/registry/digest.js';
import { Slots } from './slots.js';
import { PieceSpread } from '../../protocol/registry/piece-spread.js';

export const PIECES_PROTOCOL = '/omni/registry/pieces/1.0.0';
const MAX_REQUEST_BYTES = 128 * 1024;
/** A blob up to this size goes to a replica inside the request ('I' frame) instead of being fetched by it. */
export const INLINE_REPLICA_BYTES = 512 * 1024;
/** A record given with a replicate request lists at most this many pieces (beyond, the peer reads the catalog's). */
export const MAX_OFFERED_PIECES = 1024;
/** Digests one `have` request may ask about. */
export const MAX_HAVE_DIGESTS = 1000;
export const DATA_FRAME_BYTES = 256 * 1024;
/** No blob has more pieces than this (pushed blobs have at most about 1024, see pieceSizeFor). */
const MAX_PIECE_INDEX = 1_000_000;
const MAX_RESPONSE_FRAME_BYTES = DATA_FRAME_BYTES + 64 * 1024;
/** Streams per connection each way; the fetcher keeps far fewer in flight per peer. */
const MAX_STREAMS_PER_CONNECTION = 64;
/** Pieces this node reads and sends at once (the rest wait their turn). */
const MAX_CONCURRENT_SERVES = 16;
const REQUEST_TIMEOUT_MS = 10_000;
const DIAL_TIMEOUT_MS = 5_000;

const TAG_HEADER = 0x48; // 'H'
const TAG_DATA = 0x44; // 'D'
const TAG_ERROR = 0x45; // 'E'
const TAG_INLINE = 0x49; // 'I': a replicate request carrying the blob
const TAG_PUSH = 0x53; // 'S': a replicate request whose blob follows, raw, after the go-ahead
const TAG_GO = 0x47; // 'G': send the blob's bytes
const TAG_ACK = 0x41; // 'A': this many bytes of a pushed copy are written (6-byte count)
/** Bytes of a pushed copy sent beyond what the peer said it has written: what either side holds of it in memory. */
export const PUSH_WINDOW_BYTES = 4 * 1024 * 1024;
/** A pushed copy goes out in sends of at most this many bytes. */
const PUSH_SEND_BYTES = 1024 * 1024;
/** Pushed copies this node takes at once (the others wait their turn before their go-ahead). */
const MAX_CONCURRENT_RECEIVES = 8;

/** A small blob a pusher sends whole with its replicate request: its record and its bytes. */
export interface ReplicaOffer {
  record: { sizeBytes: number; pieceSizeBytes: number; pieces: string[] };
  /** The whole blob (at most INLINE_REPLICA_BYTES). */
  bytes: Buffer;
}

/** What the fetcher uses to get pieces (the libp2p service here; fakes in tests). */
export interface PieceSource {
  /** Piece `index` of `digest` from `peer`; onProgress on every arriving chunk. */
  fetchPiece(peer: string, digest: string, index: number, sizeBytes: number, opts: { signal: AbortSignal; onProgress: () => void }): Promise<Buffer>;
  /** Which of `digests` `peer` holds. */
  has(peer: string, digests: string[], signal: AbortSignal): Promise<boolean[]>;
}

/** The blob a caller streams to a peer (PieceService.push): its record and its bytes, read once. */
export interface PushedCopy {
  record: { sizeBytes: number; pieceSizeBytes: number; pieces: string[] };
  /** The blob's bytes in order; each chunk a buffer of its own (the stream may hold it until sent). */
  read(): AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
}

/** How long a replicate request may take (the peer fetches the whole blob). */
export const REPLICATE_TIMEOUT_MS = 10 * 60 * 1000;

export interface PieceServiceOptions {
  /** Throws (FORBIDDEN) unless `peer` is a current member. */
  authorize(peer: string): void;
  store: BlobStore;
  log: Logger;
  /** Brings a blob into this node's store (a replicate request): the bytes offered (verified), else fetched by the catalog's record. */
  replicate?(digest: string, signal: AbortSignal, offer?: ReplicaOffer): Promise<void>;
  /** A piece of a blob this node is still fetching (PIECE_MISSING until it has arrived). */
  readPartial?(digest: string, index: number): Promise<Buffer>;
}

function remoteError(frame: Uint8Array): OmniError {
  try {
    const e = JSON.parse(new TextDecoder().decode(frame.subarray(1))) as { code?: unknown; message?: unknown };
    return new OmniError(String(e.code ?? 'UNAVAILABLE').slice(0, 64), String(e.message ?? 'remote error').slice(0, 500));
  } catch {
    return new OmniError('BAD_RESPONSE', 'malformed error from peer');
  }
}

export class PieceService implements PieceSource {
  private readonly serving = new Slots(MAX_CONCURRENT_SERVES);
  private readonly receiving = new Slots(MAX_CONCURRENT_RECEIVES);
  private readonly spread = new PieceSpread();

  constructor(
    private readonly host: OmniHost,
    private readonly opts: PieceServiceOptions,
  ) {}

  async start(): Promise<void> {
    await this.host.handle(PIECES_PROTOCOL, (stream, conn) => void this.serve(stream, conn), {
      maxInboundStreams: MAX_STREAMS_PER_CONNECTION,
      maxOutboundStreams: MAX_STREAMS_PER_CONNECTION,
    });
  }

  async stop(): Promise<void> {
    await this.host.unhandle(PIECES_PROTOCOL).catch(() => undefined);
  }

  // ---------------------------------------------------------------- caller side

  /**
   * A stream to `peer` on the pieces protocol. The dial timeout covers the dial only: libp2p may
   * finish the protocol negotiation lazily, on the first read, with the signal given here, and a
   * timer still running then would be a total timeout on the answer (a busy peer, or one whose
   * answer waits behind other pieces, is not a dead one; the caller's progress timeout decides).
   */
  private async open(peer: string, signal: AbortSignal): Promise<Stream> {
    const dialing = new AbortController();
    const timer = setTimeout(() => dialing.abort(new Error(`no connection within ${DIAL_TIMEOUT_MS} ms`)), DIAL_TIMEOUT_MS);
    try {
      return await this.host.dialProtocol(peerIdFromString(peer), PIECES_PROTOCOL, { signal: AbortSignal.any([signal, dialing.signal]) });
    } catch (err) {
      throw new OmniError('UNAVAILABLE', `cannot reach node ${peer.slice(0, 80)}: ${(err as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
  }

  async fetchPiece(peer: string, digest: string, index: number, sizeBytes: number, opts: { signal: AbortSignal; onProgress: () => void }): Promise<Buffer> {
    const stream = await this.open(peer, opts.signal);
    const onAbort = () => stream.abort(new Error('piece request aborted'));
    opts.signal.addEventListener('abort', onAbort, { once: true });
    try {
      await sendFrame(stream, new TextEncoder().encode(JSON.stringify({ op: 'piece', digest, index })), opts.signal);
      const buf = Buffer.allocUnsafe(sizeBytes);
      let filled = -1; // -1: header not seen yet
      for await (const frame of readFrames(stream, MAX_RESPONSE_FRAME_BYTES)) {
        opts.onProgress();
        const tag = frame[0];
        if (tag === TAG_ERROR) throw remoteError(frame);
        if (filled < 0) {
          if (tag !== TAG_HEADER) throw new OmniError('BAD_RESPONSE', 'piece reply without a header');
          const h = JSON.parse(new TextDecoder().decode(frame.subarray(1))) as { sizeBytes?: unknown };
          if (h.sizeBytes !== sizeBytes) throw new OmniError('BAD_RESPONSE', `peer sends piece ${index} of ${String(h.sizeBytes)} bytes, ${sizeBytes} expected`);
          filled = 0;
          continue;
        }
        if (tag !== TAG_DATA) throw new OmniError('BAD_RESPONSE', 'malformed piece frame');
        const data = frame.subarray(1);
        if (filled + data.length > sizeBytes) throw new OmniError('BAD_RESPONSE', `peer sends more than the ${sizeBytes} bytes of piece ${index}`);
        buf.set(data, filled);
        filled += data.length;
      }
      if (filled !== sizeBytes) throw new OmniError('BAD_RESPONSE', `piece ${index} ended after ${Math.max(0, filled)} of ${sizeBytes} bytes`);
      return buf;
    } catch (err) {
      if (opts.signal.aborted) throw new OmniError('ABORTED', `piece ${index} from ${peer.slice(0, 80)}: ${String(opts.signal.reason?.message ?? 'aborted')}`);
      throw err instanceof OmniError ? err : new OmniError('UNAVAILABLE', `piece ${index} from ${peer.slice(0, 80)}: ${(err as Error).message}`);
    } finally {
      opts.signal.removeEventListener('abort', onAbort);
      if (stream.status === 'open') stream.abort(new Error('piece request done'));
    }
  }

  async has(peer: string, digests: string[], signal: AbortSignal): Promise<boolean[]> {
    const stream = await this.open(peer, signal);
    try {
      await sendFrame(stream, new TextEncoder().encode(JSON.stringify({ op: 'have', digests: digests.slice(0, MAX_HAVE_DIGESTS) })), signal);
      const frame = await withTimeout(readOneFrame(stream, MAX_RESPONSE_FRAME_BYTES), REQUEST_TIMEOUT_MS);
      if (frame[0] === TAG_ERROR) throw remoteError(frame);
      const h = JSON.parse(new TextDecoder().decode(frame.subarray(1))) as { have?: unknown };
      if (!Array.isArray(h.have) || h.have.length !== Math.min(digests.length, MAX_HAVE_DIGESTS)) throw new OmniError('BAD_RESPONSE', 'malformed have reply');
      return h.have.map((x) => x === true);
    } finally {
      if (stream.status === 'open') stream.abort(new Error('have request done'));
    }
  }

  /**
   * Asks `peer` to keep a blob; resolves once it holds it. With an offer (a small blob's record and
   * bytes) the peer keeps those bytes: it needs no catalog record (it may not be written yet).
   */
  async replicate(peer: string, digest: string, signal: AbortSignal, offer?: ReplicaOffer): Promise<void> {
    const stream = await this.open(peer, signal);
    stream.inactivityTimeout = 0; // the peer says nothing while it fetches
    const onAbort = () => stream.abort(new Error('replicate request aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      const bytes = offer && offer.record.pieces.length <= MAX_OFFERED_PIECES && offer.bytes.length <= INLINE_REPLICA_BYTES && offer.bytes.length === offer.record.sizeBytes ? offer.bytes : undefined;
      const json = Buffer.from(JSON.stringify({ op: 'replicate', digest, ...(bytes && offer ? offer.record : {}) }));
      if (bytes) {
        const frame = Buffer.allocUnsafe(5 + json.length + bytes.length);
        frame[0] = TAG_INLINE;
        frame.writeUInt32BE(json.length, 1);
        json.copy(frame, 5);
        bytes.copy(frame, 5 + json.length);
        await sendFrame(stream, frame, signal);
      } else await sendFrame(stream, json, signal);
      const frame = await withTimeout(readOneFrame(stream, MAX_RESPONSE_FRAME_BYTES), REPLICATE_TIMEOUT_MS);
      if (frame[0] === TAG_ERROR) throw remoteError(frame);
      if (frame[0] !== TAG_HEADER) throw new OmniError('BAD_RESPONSE', 'malformed replicate reply');
    } catch (err) {
      if (signal.aborted) throw new OmniError('ABORTED', 'replicate request aborted');
      throw err instanceof OmniError ? err : new OmniError('UNAVAILABLE', `replicate to ${peer.slice(0, 80)}: ${(err as Error).message}`);
    } finally {
      signal.removeEventListener('abort', onAbort);
      if (stream.status === 'open') stream.abort(new Error('replicate request done'));
    }
  }

  /**
   * Streams a blob to `peer`, which keeps it (one stream: the record, the peer's go-ahead, the
   * bytes, at most PUSH_WINDOW_BYTES beyond what the peer has written); resolves once the peer
   * holds it. A peer of an older version answers BAD_REQUEST (the caller may then ask it the plain
   * way, see replicate). The go-ahead and the final answer (the peer syncing the blob to disk) may
   * take up to REPLICATE_TIMEOUT_MS (a peer taking other copies makes this one wait its turn); while
   * the bytes go, no progress of the peer's writing or of the stream's sending for REQUEST_TIMEOUT_MS
   * fails it (TIMEOUT).
   */
  async push(peer: string, digest: string, copy: PushedCopy, signal: AbortSignal): Promise<void> {
    if (copy.record.pieces.length > MAX_OFFERED_PIECES) throw new OmniError('BAD_REQUEST', `blob ${digest} has more than ${MAX_OFFERED_PIECES} pieces to send with a copy`);
    const stream = await this.open(peer, signal);
    stream.inactivityTimeout = 0; // the peer says nothing while it syncs the blob
    const onAbort = () => stream.abort(new Error('push aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    const answers = readFrames(stream, MAX_RESPONSE_FRAME_BYTES)[Symbol.asyncIterator]();
    try {
      const { sizeBytes, pieceSizeBytes, pieces } = copy.record;
      await sendTaggedFrame(stream, TAG_PUSH, JSON.stringify({ op: 'replicate', digest, sizeBytes, pieceSizeBytes, pieces }), signal);
      const first = await withTimeout(answers.next(), REPLICATE_TIMEOUT_MS);
      if (first.done) throw new OmniError('UNAVAILABLE', `node ${peer.slice(0, 80)} closed the copy's stream without an answer`);
      if (first.value[0] === TAG_ERROR) throw remoteError(first.value);
      if (first.value[0] === TAG_HEADER) return; // held there already
      if (first.value[0] !== TAG_GO) throw new OmniError('BAD_RESPONSE', 'malformed answer to a pushed copy');
      // The peer's answers are read while the bytes go: its progress opens the window, and a
      // refusal part-way (its disk, a digest mismatch) stops the sending at once.
      const progress = new PushProgress();
      const refused = new AbortController();
      const reading = progress.follow(answers).finally(() => refused.abort());
      reading.catch(() => undefined);
      const sending = AbortSignal.any([signal, refused.signal]);
      let sent = 0;
      try {
        for await (const chunk of copy.read()) {
          for (let off = 0; off < chunk.length && !sending.aborted; off += PUSH_SEND_BYTES) {
            const part = chunk.subarray(off, off + PUSH_SEND_BYTES);
            if (sent + part.length > sizeBytes) throw new OmniError('BLOB_CORRUPT', `blob ${digest}: more bytes read here than the ${sizeBytes} recorded`);
            await progress.room(sent + part.length - PUSH_WINDOW_BYTES, sending, REQUEST_TIMEOUT_MS);
            if (sending.aborted) break;
            await sendDrained(stream, part, AbortSignal.any([sending, AbortSignal.timeout(REQUEST_TIMEOUT_MS)])).catch((err: Error) => {
              throw err.name === 'TimeoutError' ? new OmniError('TIMEOUT', `the copy to ${peer.slice(0, 80)} sent nothing for ${REQUEST_TIMEOUT_MS} ms`) : err;
            });
            sent += part.length;
          }
          if (sending.aborted) break;
        }
      } catch (err) {
        if (!refused.signal.aborted || signal.aborted) throw err;
      }
      // A file shorter than its record here: stop (the peer, its stream aborted, keeps nothing).
      if (!refused.signal.aborted && sent !== sizeBytes) throw new OmniError('BLOB_CORRUPT', `blob ${digest}: ${sent} bytes read here, ${sizeBytes} recorded`);
      const last = await withTimeout(reading, REPLICATE_TIMEOUT_MS);
      if (!last) throw new OmniError('UNAVAILABLE', `node ${peer.slice(0, 80)} closed the copy's stream without an answer`);
      if (last[0] === TAG_ERROR) throw remoteError(last);
      if (last[0] !== TAG_HEADER || sent !== sizeBytes) throw new OmniError('BAD_RESPONSE', 'malformed answer to a pushed copy');
    } catch (err) {
      if (signal.aborted) throw new OmniError('ABORTED', 'pushed copy aborted');
      throw err instanceof OmniError ? err : new OmniError('UNAVAILABLE', `copy to ${peer.slice(0, 80)}: ${(err as Error).message}`);
    } finally {
      signal.removeEventListener('abort', onAbort);
      if (stream.status === 'open') stream.abort(new Error('push done'));
    }
  }

  // ---------------------------------------------------------------- server side

  /** A piece from the store, or else from a fetch of that blob in progress here. */
  private async readPiece(digest: string, index: number): Promise<Buffer> {
    if (this.opts.store.has(digest) || !this.opts.readPartial) return this.opts.store.readPiece(digest, index);
    try {
      return await this.opts.readPartial(digest, index);
    } catch (err) {
      // The fetch may have just finished: the blob is in the store now.
      if (this.opts.store.has(digest)) return this.opts.store.readPiece(digest, index);
      throw err;
    }
  }

  /**
   * A copy streamed here: held already → 'H' at once; else it waits for one of
   * MAX_CONCURRENT_RECEIVES, the store checks the size limit and its disk space, 'G' goes, and the
   * raw bytes that follow go through the store's hashing writer (kept only when the digest and
   * pieces match), each run written acknowledged ('A'), then 'H'. Waiting longer than
   * REQUEST_TIMEOUT_MS for the next bytes fails it.
   */
  private async takePush(stream: Stream, req: Extract<PieceRequest, { op: 'push' }>, reader: StreamReader): Promise<void> {
    const { store } = this.opts;
    if (!this.opts.replicate) throw new OmniError('UNAVAILABLE', 'this node does not take replicas');
    if (!store.has(req.digest)) {
      stream.inactivityTimeout = 0;
      const release = await this.receiving.take();
      try {
        const t0 = performance.now();
        // The store asks for the bytes once it has checked the size limit and its disk space: the go-ahead goes then.
        const data = async function* (): AsyncGenerator<Uint8Array> {
          await sendTaggedFrame(stream, TAG_GO, new Uint8Array(0));
          try {
            yield* reader.raw(req.record.sizeBytes);
          } catch (err) {
            if (err instanceof FrameError) throw new OmniError('SIZE_INVALID', `the copy of ${req.digest}: ${err.message}`);
            throw err;
          }
        };
        // 7 bytes after each 1 MiB run: queued without waiting for a drain (the sender reads them
        // as they come); a stream gone fails the receive itself
        const ack = (writtenBytes: number) => {
          const count = Buffer.allocUnsafe(6);
          count.writeUIntBE(writtenBytes, 0, 6);
          try {
            stream.send(encodeTaggedFrame(TAG_ACK, count, (n) => Buffer.allocUnsafe(n)));
          } catch {
            // closed: the receive fails on its own
          }
        };
        await store.receive(req.digest, req.record, data(), ack);
        this.opts.log.debug(`registry: copy of ${req.digest} kept (pushed here) in ${(performance.now() - t0).toFixed(1)} ms`);
      } finally {
        release();
      }
    }
    await sendTaggedFrame(stream, TAG_HEADER, JSON.stringify({ held: true }));
  }

  private async serve(stream: Stream, conn: Connection): Promise<void> {
    const from = conn.remotePeer.toString();
    let release: (() => void) | undefined;
    try {
      this.opts.authorize(from);
      const reader = new StreamReader(stream, MAX_REQUEST_BYTES + INLINE_REPLICA_BYTES, REQUEST_TIMEOUT_MS);
      const req = await withTimeout(reader.frame(), REQUEST_TIMEOUT_MS)
        .then((first) => {
          if (!first) throw new OmniError('BAD_REQUEST', 'stream ended before a complete request arrived');
          return parseRequest(first);
        })
        .catch((err: unknown) => {
          reader.release();
          throw err;
        });
      // Only a pushed copy reads on: any other request's stream takes nothing more (bytes the peer
      // sends anyway fill the stream's read buffer, whose limit aborts it).
      if (req.op !== 'push') reader.release();
      if (req.op === 'push') {
        await this.takePush(stream, req, reader).finally(() => reader.release());
      } else if (req.op === 'have') {
        await sendTaggedFrame(stream, TAG_HEADER, JSON.stringify({ have: req.digests.map((d) => this.opts.store.has(d)) }));
      } else if (req.op === 'replicate') {
        if (!this.opts.replicate) throw new OmniError('UNAVAILABLE', 'this node does not take replicas');
        stream.inactivityTimeout = 0;
        const abort = new AbortController();
        stream.addEventListener('close', () => abort.abort(), { once: true });
        await this.opts.replicate(req.digest, abort.signal, req.offer);
        await sendTaggedFrame(stream, TAG_HEADER, JSON.stringify({ held: true }));
      } else {
        const whole = this.opts.store.info(req.digest);
        if (whole && this.spread.begin(req.digest, whole.pieces.length, req.index, from, Date.now()) === 'decline') {
          throw new OmniError('PIECE_ELSEWHERE', `piece ${req.index} of ${req.digest} went to another node a moment ago; ask it, or this node for another piece`);
        }
        try {
          release = await this.serving.take();
          const piece = await this.readPiece(req.digest, req.index);
          await sendTaggedFrame(stream, TAG_HEADER, JSON.stringify({ sizeBytes: piece.length }));
          for (let off = 0; off < piece.length; off += DATA_FRAME_BYTES) {
            await sendTaggedFrame(stream, TAG_DATA, piece.subarray(off, off + DATA_FRAME_BYTES));
          }
        } finally {
          if (whole) this.spread.sent(req.digest, req.index, from, Date.now());
        }
      }
      await stream.close({ signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    } catch (err) {
      const e = err instanceof OmniError ? err : new OmniError('BAD_REQUEST', (err as Error).message);
      if (e.code === 'FORBIDDEN') this.opts.log.warn(`registry: refused a pieces stream from ${from}: ${e.message}`);
      try {
        await sendTaggedFrame(stream, TAG_ERROR, JSON.stringify({ code: e.code, message: e.message.slice(0, 300) }));
        await stream.close({ signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
      } catch {
        stream.abort(new Error('pieces stream failed'));
      }
    } finally {
      release?.();
    }
  }
}

/** What the peer of a pushed copy says while the bytes go: how many it has written, then its answer. */
class PushProgress {
  written = 0;
  private ended = false;
  private wake: (() => void) | undefined;

  /** Reads the peer's answers: 'A' frames move `written`; resolves with the first other frame (undefined: the stream ended). */
  async follow(answers: AsyncIterator<Uint8Array>): Promise<Uint8Array | undefined> {
    try {
      for (;;) {
        const r = await answers.next();
        if (r.done) return undefined;
        const f = r.value;
        if (f[0] !== TAG_ACK) return f;
        if (f.length !== 7) throw new OmniError('BAD_RESPONSE', 'malformed progress of a pushed copy');
        this.written = Math.max(this.written, Buffer.from(f.buffer, f.byteOffset, f.length).readUIntBE(1, 6));
        this.wake?.();
      }
    } finally {
      this.ended = true;
      this.wake?.();
    }
  }

  /**
   * Waits until the peer has written at least `bytes` (or its answers ended, or `signal` aborted);
   * TIMEOUT when it says nothing for `timeoutMs`.
   */
  async room(bytes: number, signal: AbortSignal, timeoutMs: number): Promise<void> {
    while (this.written < bytes && !this.ended && !signal.aborted) {
      await new Promise<void>((resolve, reject) => {
        const settle = (fn: () => void) => {
          clearTimeout(timer);
          signal.removeEventListener('abort', woken);
          this.wake = undefined;
          fn();
        };
        const woken = () => settle(resolve);
        const timer = setTimeout(() => settle(() => reject(new OmniError('TIMEOUT', `the peer wrote nothing of the copy for ${timeoutMs} ms`))), timeoutMs);
        this.wake = woken;
        signal.addEventListener('abort', woken, { once: true });
      });
    }
  }
}

type PieceRequest =
  | { op: 'piece'; digest: string; index: number }
  | { op: 'have'; digests: string[] }
  | { op: 'replicate'; digest: string; offer?: ReplicaOffer }
  | { op: 'push'; digest: string; record: ReplicaOffer['record'] };

const HEX64 = /^[a-f0-9]{64}$/;

/**
 * The blob an inline replicate request carries, its record checked for shape and consistency (the
 * bytes are hashed against it when kept). Without bytes there is no offer: a record alone is not
 * trusted (the catalog's is used).
 */
function parseOffer(r: Record<string, unknown>, bytes: Buffer | undefined): ReplicaOffer | undefined {
  if (!bytes) return undefined;
  const record = parseRecord(r);
  if (bytes.length !== record.sizeBytes) throw new OmniError('BAD_REQUEST', `replicate: ${bytes.length} bytes sent for a blob of ${record.sizeBytes}`);
  return { record, bytes };
}

/** The record a replicate request carries with its blob, checked for shape and consistency. */
function parseRecord(r: Record<string, unknown>): ReplicaOffer['record'] {
  if (r.sizeBytes === undefined && r.pieceSizeBytes === undefined && r.pieces === undefined) throw new OmniError('BAD_REQUEST', 'a replicate request with a blob needs its record');
  const { sizeBytes, pieceSizeBytes, pieces } = r;
  if (!Number.isSafeInteger(sizeBytes) || (sizeBytes as number) < 0) throw new OmniError('BAD_REQUEST', 'replicate: bad sizeBytes');
  if (!Number.isSafeInteger(pieceSizeBytes) || (pieceSizeBytes as number) <= 0) throw new OmniError('BAD_REQUEST', 'replicate: bad pieceSizeBytes');
  if (!Array.isArray(pieces) || pieces.length > MAX_OFFERED_PIECES || !pieces.every((p) => typeof p === 'string' && HEX64.test(p))) throw new OmniError('BAD_REQUEST', 'replicate: bad pieces');
  const size = sizeBytes as number;
  const pieceSize = pieceSizeBytes as number;
  if (pieces.length !== Math.ceil(size / pieceSize)) throw new OmniError('BAD_REQUEST', 'replicate: the pieces do not fit the size');
  return { sizeBytes: size, pieceSizeBytes: pieceSize, pieces: pieces as string[] };
}

function parseRequest(frame: Uint8Array): PieceRequest {
  let r: Record<string, unknown>;
  let inline: Buffer | undefined;
  const pushed = frame[0] === TAG_PUSH;
  try {
    if (pushed) {
      if (frame.length > MAX_REQUEST_BYTES) throw new Error('request too large');
      r = JSON.parse(new TextDecoder().decode(frame.subarray(1)));
    } else if (frame[0] === TAG_INLINE) {
      const b = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
      const jsonBytes = b.length >= 5 ? b.readUInt32BE(1) : -1;
      if (jsonBytes < 0 || jsonBytes > MAX_REQUEST_BYTES || 5 + jsonBytes > b.length) throw new Error('bad inline frame');
      r = JSON.parse(b.toString('utf8', 5, 5 + jsonBytes));
      inline = b.subarray(5 + jsonBytes);
      if (inline.length > INLINE_REPLICA_BYTES) throw new Error('inline blob too large');
    } else {
      if (frame.length > MAX_REQUEST_BYTES) throw new Error('request too large');
      r = JSON.parse(new TextDecoder().decode(frame));
    }
  } catch {
    throw new OmniError('BAD_REQUEST', 'request is not JSON');
  }
  if ((inline || pushed) && r?.op !== 'replicate') throw new OmniError('BAD_REQUEST', 'only a replicate request carries a blob');
  if (pushed) {
    if (!isDigest(r.digest)) throw new OmniError('BAD_REQUEST', 'replicate needs a sha256 digest');
    return { op: 'push', digest: r.digest as string, record: parseRecord(r) };
  }
  if (r?.op === 'have') {
    if (!Array.isArray(r.digests) || r.digests.length > MAX_HAVE_DIGESTS || !r.digests.every(isDigest)) throw new OmniError('BAD_REQUEST', 'have needs digests: [sha256:…]');
    return { op: 'have', digests: r.digests as string[] };
  }
  if (r?.op === 'replicate') {
    if (!isDigest(r.digest)) throw new OmniError('BAD_REQUEST', 'replicate needs a sha256 digest');
    const offer = parseOffer(r, inline);
    return { op: 'replicate', digest: r.digest as string, ...(offer ? { offer } : {}) };
  }
  if (r?.op === 'piece') {
    if (!isDigest(r.digest)) throw new OmniError('BAD_REQUEST', 'piece needs a sha256 digest');
    if (!Number.isSafeInteger(r.index) || (r.index as number) < 0 || (r.index as number) > MAX_PIECE_INDEX) throw new OmniError('BAD_REQUEST', 'piece needs an index');
    return { op: 'piece', digest: r.digest as string, index: r.index as number };
  }
  throw new OmniError('BAD_REQUEST', 'op must be piece, have or replicate');
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new OmniError('TIMEOUT', `no answer within ${ms} ms`)), ms);
    p.then(resolve, reject).finally(() => clearTimeout(t));
  });
}
