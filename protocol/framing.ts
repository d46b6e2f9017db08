// Length-prefixed framing for byte streams: each frame is an unsigned LEB128 varint length
// followed by that many payload bytes. Pure: the node/ transports feed it chunks as they arrive.
// A frame longer than the decoder's limit is refused as soon as its length prefix is read,
// before any of its payload is buffered.

/** A length prefix is at most 5 bytes (lengths below 2^35; every limit we use is far lower). */
export const MAX_LENGTH_PREFIX_BYTES = 5;

export class FrameError extends Error {
  readonly code: 'FRAME_TOO_LARGE' | 'BAD_FRAME';
  constructor(code: 'FRAME_TOO_LARGE' | 'BAD_FRAME', message: string) {
    super(message);
    this.name = 'FrameError';
    this.code = code;
  }
}

export function encodeFrame(payload: Uint8Array): Uint8Array {
  return encodeFrameInto(payload.length, (out, at) => out.set(payload, at), (n) => new Uint8Array(n));
}

/**
 * A frame whose payload is `tag` then `body`, built in one buffer from `alloc` (the node passes
 * Buffer.allocUnsafe: a 256 KiB data frame is then neither zero-filled nor copied twice).
 */
export function encodeTaggedFrame(tag: number, body: Uint8Array, alloc: (n: number) => Uint8Array): Uint8Array {
  return encodeFrameInto(body.length + 1, (out, at) => {
    out[at] = tag;
    out.set(body, at + 1);
  }, alloc);
}

/** The length prefix of a frame of `payloadBytes` (unsigned LEB128). */
export function lengthPrefix(payloadBytes: number): number[] {
  const prefix: number[] = [];
  let n = payloadBytes;
  while (n >= 0x80) {
    prefix.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  prefix.push(n);
  return prefix;
}

/**
 * The length prefix at `at` of a buffer held whole (not a stream): [length, where the payload
 * starts]; FrameError when it is cut short or too long.
 */
export function readLengthPrefix(bytes: Uint8Array, at: number): [length: number, next: number] {
  let length = 0;
  for (let i = 0; i < MAX_LENGTH_PREFIX_BYTES && at + i < bytes.length; i++) {
    const b = bytes[at + i];
    length += (b & 0x7f) * 2 ** (7 * i);
    if ((b & 0x80) === 0) return [length, at + i + 1];
  }
  throw new FrameError('BAD_FRAME', 'bad length prefix');
}

function encodeFrameInto(payloadBytes: number, fill: (out: Uint8Array, at: number) => void, alloc: (n: number) => Uint8Array): Uint8Array {
  const prefix = lengthPrefix(payloadBytes);
  const out = alloc(prefix.length + payloadBytes);
  out.set(prefix, 0);
  fill(out, prefix.length);
  return out;
}

/** Incremental decoder: push() chunks, get back whole frames. Throws FrameError on a bad stream. */
export class FrameDecoder {
  private readonly maxFrameBytes: number;
  private prefixValue = 0;
  private prefixBytes = 0;
  private frame: Uint8Array | undefined;
  private filled = 0;

  /** `alloc` makes each frame's buffer (the node passes Buffer.allocUnsafe: no zero-fill of bytes about to be overwritten). */
  constructor(
    maxFrameBytes: number,
    private readonly alloc: (n: number) => Uint8Array = (n) => new Uint8Array(n),
  ) {
    this.maxFrameBytes = maxFrameBytes;
  }

  /** True while no partial frame is buffered. */
  get idle(): boolean {
    return this.frame === undefined && this.prefixBytes === 0;
  }

  push(chunk: Uint8Array): Uint8Array[] {
    const frames: Uint8Array[] = [];
    let i = 0;
    while (i < chunk.length) {
      if (this.frame === undefined) {
        i = this.readPrefix(chunk, i, frames);
        continue;
      }
      const take = Math.min(this.frame.length - this.filled, chunk.length - i);
      this.frame.set(chunk.subarray(i, i + take), this.filled);
      this.filled += take;
      i += take;
      if (this.filled === this.frame.length) {
        frames.push(this.frame);
        this.frame = undefined;
      }
    }
    return frames;
  }

  private readPrefix(chunk: Uint8Array, start: number, frames: Uint8Array[]): number {
    let i = start;
    while (i < chunk.length) {
      const b = chunk[i++];
      this.prefixValue += (b & 0x7f) * 2 ** (7 * this.prefixBytes);
      this.prefixBytes++;
      if (b & 0x80) {
        if (this.prefixBytes >= MAX_LENGTH_PREFIX_BYTES) throw new FrameError('BAD_FRAME', 'frame length prefix is too long');
        continue;
      }
      const length = this.prefixValue;
      this.prefixValue = 0;
      this.prefixBytes = 0;
      if (length > this.maxFrameBytes) {
        throw new FrameError('FRAME_TOO_LARGE', `frame of ${length} bytes exceeds the ${this.maxFrameBytes}-byte limit`);
      }
      if (length === 0) frames.push(new Uint8Array(0));
      else {
        this.frame = this.alloc(length);
        this.filled = 0;
      }
      return i;
    }
    return i;
  }
}
