// Frames over a libp2p stream: write with backpressure, read whole frames with a size limit; and
// raw bytes after frames (a blob after its header: no framing, no copy on either side).
import type { Stream } from '@libp2p/interface';
import { FrameDecoder, FrameError, encodeFrame, encodeTaggedFrame } from '../../protocol/framing.js';
import { OmniError } from '../errors.js';
import { sendDrained } from './drain.js';

/** Sends one frame; waits for the stream to drain when its write buffer is full. */
export async function sendFrame(stream: Stream, payload: Uint8Array, signal?: AbortSignal): Promise<void> {
  await sendDrained(stream, encodeFrame(payload), signal);
}

/** Sends one frame whose payload is the byte `tag` then `body` (one buffer, one copy of the body). */
export async function sendTaggedFrame(stream: Stream, tag: number, body: Uint8Array | string, signal?: AbortSignal): Promise<void> {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  await sendDrained(stream, encodeTaggedFrame(tag, bytes, (n) => Buffer.allocUnsafe(n)), signal);
}

/** Yields whole frames as they arrive; throws FrameError on an oversized or malformed frame. */
export async function* readFrames(stream: Stream, maxFrameBytes: number): AsyncGenerator<Uint8Array> {
  const decoder = new FrameDecoder(maxFrameBytes, (n) => Buffer.allocUnsafe(n));
  for await (const chunk of stream) {
    if (chunk instanceof Uint8Array) {
      for (const frame of decoder.push(chunk)) yield frame;
      continue;
    }
    // a list of buffers (what the muxer delivers after a pause): each goes to the decoder as it is
    // (its subarray() would first copy them all into one)
    for (const part of chunk) for (const frame of decoder.push(part)) yield frame;
  }
}

/** Reads exactly one frame (a request or a response), or throws if the stream ends first. */
export async function readOneFrame(stream: Stream, maxFrameBytes: number): Promise<Uint8Array> {
  for await (const frame of readFrames(stream, maxFrameBytes)) return frame;
  throw new Error('stream ended before a complete message arrived');
}

/**
 * Reads whole frames from a stream, and then raw bytes: `raw(n)` once no frame is half read and
 * none is waiting (the peer sends raw bytes only when asked, after its last frame). Each wait for
 * the stream is bounded by `waitMs` (OmniError TIMEOUT).
 */
export class StreamReader {
  private readonly chunks: AsyncIterator<Uint8Array | Iterable<Uint8Array>>;
  private readonly decoder: FrameDecoder;
  private readonly ready: Uint8Array[] = [];

  constructor(
    stream: Stream,
    maxFrameBytes: number,
    private readonly waitMs: number,
  ) {
    this.chunks = (stream as AsyncIterable<Uint8Array | Iterable<Uint8Array>>)[Symbol.asyncIterator]();
    this.decoder = new FrameDecoder(maxFrameBytes, (n) => Buffer.allocUnsafe(n));
  }

  /** The next whole frame; undefined when the stream ends between frames (FrameError when it ends inside one). */
  async frame(): Promise<Uint8Array | undefined> {
    for (;;) {
      const next = this.ready.shift();
      if (next) return next;
      const r = await this.next();
      if (r.done) {
        if (!this.decoder.idle) throw new FrameError('BAD_FRAME', 'the stream ended inside a frame');
        return undefined;
      }
      for (const part of partsOf(r.value)) this.ready.push(...this.decoder.push(part));
    }
  }

  /**
   * Exactly `bytes` raw bytes, as the stream delivers them (views of its buffers, not copied).
   * Throws when the stream ends first, or when it brings more than `bytes` in the same delivery
   * (the peer sent more than it announced).
   */
  async *raw(bytes: number): AsyncGenerator<Uint8Array> {
    if (this.ready.length > 0 || !this.decoder.idle) throw new FrameError('BAD_FRAME', 'raw bytes asked for while a frame is pending');
    let left = bytes;
    while (left > 0) {
      const r = await this.next();
      if (r.done) throw new FrameError('BAD_FRAME', `the stream ended ${left} bytes before the end of its raw bytes`);
      for (const part of partsOf(r.value)) {
        if (part.length > left) throw new FrameError('BAD_FRAME', 'more raw bytes than announced');
        left -= part.length;
        if (part.length > 0) yield part;
      }
    }
  }

  /** Stops reading the stream (its listener is removed; what the peer still sends is not taken). */
  release(): void {
    void this.chunks.return?.()?.catch(() => undefined);
  }

  private next(): Promise<IteratorResult<Uint8Array | Iterable<Uint8Array>>> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new OmniError('TIMEOUT', `nothing came within ${this.waitMs} ms`)), this.waitMs);
    });
    return Promise.race([this.chunks.next(), timeout]).finally(() => clearTimeout(timer));
  }
}

/** The buffers of what a stream delivers: one, or a list's (without joining them). */
function partsOf(chunk: Uint8Array | Iterable<Uint8Array>): Iterable<Uint8Array> {
  return chunk instanceof Uint8Array ? [chunk] : chunk;
}
