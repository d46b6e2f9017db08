// Reading frames, then raw bytes, from what a libp2p stream delivers (node/p2p/framed-stream.ts):
// buffers and lists of buffers cut anywhere, without joining the lists.
import { describe, expect, it } from 'vitest';
import type { Stream } from '@libp2p/interface';
import { Uint8ArrayList } from 'uint8arraylist';
import { StreamReader, readFrames } from '../../node/p2p/framed-stream.js';
import { nextDrain } from '../../node/p2p/drain.js';
import { encodeFrame } from '../../protocol/framing.js';

/** A stream that delivers `chunks` (then ends, unless `hang`). */
function fakeStream(chunks: (Uint8Array | Uint8ArrayList)[], hang = false): Stream {
  return {
    async *[Symbol.asyncIterator]() {
      for (const c of chunks) yield c;
      if (hang) await new Promise(() => undefined);
    },
  } as unknown as Stream;
}

const bytes = (n: number, seed = 1) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);
/** `all` cut at `cuts`, every other piece delivered as a list of two buffers. */
function cut(all: Uint8Array, cuts: number[]): (Uint8Array | Uint8ArrayList)[] {
  const out: (Uint8Array | Uint8ArrayList)[] = [];
  let at = 0;
  for (const [i, end] of [...cuts, all.length].entries()) {
    const piece = all.subarray(at, end);
    at = end;
    if (i % 2 === 1 && piece.length > 1) out.push(new Uint8ArrayList(piece.subarray(0, 1), piece.subarray(1)));
    else out.push(piece);
  }
  return out;
}
const concat = (parts: Uint8Array[]) => Buffer.concat(parts);

describe('framed streams', () => {
  it('readFrames gives the same frames however the bytes are cut and listed', async () => {
    const frames = [bytes(10), bytes(0), bytes(70_000, 3), bytes(1, 9)];
    const all = concat(frames.map(encodeFrame));
    for (const cuts of [[], [1, 2, 3], [5, 11, 12, 40_000, 70_010], [all.length - 1]]) {
      const got: Uint8Array[] = [];
      for await (const f of readFrames(fakeStream(cut(all, cuts)), 100_000)) got.push(f);
      expect(got.map((f) => Buffer.from(f).toString('hex'))).toEqual(frames.map((f) => Buffer.from(f).toString('hex')));
    }
  });

  it('StreamReader reads a header frame, then exactly the raw bytes that follow', async () => {
    const header = bytes(40);
    const blob = bytes(300_000, 7);
    // header and raw bytes in separate deliveries, raw ones cut and listed
    const r = new StreamReader(fakeStream([encodeFrame(header), ...cut(blob, [1, 100, 65_536, 200_001])]), 1000, 1000);
    expect(Buffer.from((await r.frame())!)).toEqual(Buffer.from(header));
    const got: Uint8Array[] = [];
    for await (const part of r.raw(blob.length)) got.push(part);
    expect(concat(got)).toEqual(Buffer.from(blob));
    expect(await r.frame()).toBeUndefined(); // the stream ended between frames
  });

  it('raw bytes: a stream that ends short, or brings more than announced, fails', async () => {
    const blob = bytes(1000);
    const short = new StreamReader(fakeStream([blob.subarray(0, 600)]), 100, 1000);
    await expect(async () => {
      for await (const _ of short.raw(1000)) void _;
    }).rejects.toThrow(/ended 400 bytes before/);
    const long = new StreamReader(fakeStream([blob, bytes(1)]), 100, 1000);
    await expect(async () => {
      for await (const _ of long.raw(999)) void _;
    }).rejects.toThrow(/more raw bytes than announced/);
  });

  it('raw bytes are refused while a frame is half read; a frame cut by the end of the stream fails', async () => {
    const f = encodeFrame(bytes(50));
    const r = new StreamReader(fakeStream([f, f.subarray(0, 10)]), 100, 1000);
    await r.frame();
    await expect(r.frame()).rejects.toThrow(/ended inside a frame/);
    const r2 = new StreamReader(fakeStream([concat([f, f.subarray(0, 10)])]), 100, 1000);
    await r2.frame(); // the second, partial frame is now in the decoder
    await expect(async () => {
      for await (const _ of r2.raw(5)) void _;
    }).rejects.toThrow(/while a frame is pending/);
  });

  it('a stream that goes quiet fails with TIMEOUT', async () => {
    const r = new StreamReader(fakeStream([], true), 100, 50);
    await expect(r.frame()).rejects.toMatchObject({ code: 'TIMEOUT' });
  });
});

describe('nextDrain', () => {
  /** A stream's events and write status, nothing more. */
  function drainable() {
    const s = new EventTarget() as EventTarget & { writeStatus: string };
    s.writeStatus = 'writable';
    return s;
  }
  const settled = async (p: Promise<unknown>) => {
    let state = 'pending';
    p.then(
      () => (state = 'resolved'),
      () => (state = 'rejected'),
    );
    await new Promise((r) => setTimeout(r, 5));
    return state;
  };

  it('waits for the next drain every time (not only the first), and fails on close, abort or a stream not writable', async () => {
    const s = drainable();
    for (let i = 0; i < 3; i++) {
      const p = nextDrain(s as unknown as Stream);
      expect(await settled(p)).toBe('pending');
      s.dispatchEvent(new Event('drain'));
      expect(await settled(p)).toBe('resolved');
    }
    const closing = nextDrain(s as unknown as Stream);
    s.dispatchEvent(new Event('close'));
    expect(await settled(closing)).toBe('rejected');
    const ac = new AbortController();
    const aborting = nextDrain(s as unknown as Stream, ac.signal);
    ac.abort(new Error('stop'));
    await expect(aborting).rejects.toThrow('stop');
    s.writeStatus = 'closed';
    await expect(nextDrain(s as unknown as Stream)).rejects.toThrow(/closed/);
  });
});
