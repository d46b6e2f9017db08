import { describe, expect, it } from 'vitest';
import { FrameDecoder, FrameError, encodeFrame, lengthPrefix, readLengthPrefix } from '../../protocol/framing.js';
import { seededRng } from '../../protocol/rng.js';

describe('length-prefixed framing', () => {
  it('round-trips frames split at every possible chunk boundary', () => {
    const payloads = [new Uint8Array(0), new Uint8Array([1, 2, 3]), new Uint8Array(300).fill(7), new Uint8Array(20_000).fill(9)];
    const wire = Buffer.concat(payloads.map(encodeFrame));
    for (const chunkSize of [1, 2, 3, 127, 128, 1000, wire.length]) {
      const d = new FrameDecoder(1 << 20);
      const got: Uint8Array[] = [];
      for (let i = 0; i < wire.length; i += chunkSize) got.push(...d.push(wire.subarray(i, i + chunkSize)));
      expect(got.map((f) => Buffer.from(f).toString('hex'))).toEqual(payloads.map((p) => Buffer.from(p).toString('hex')));
      expect(d.idle).toBe(true);
    }
  });

  it('refuses an oversized frame from its prefix alone, before buffering it', () => {
    const d = new FrameDecoder(100);
    const prefixOnly = encodeFrame(new Uint8Array(101)).subarray(0, 1);
    expect(() => d.push(prefixOnly)).toThrowError(FrameError);
    try {
      new FrameDecoder(100).push(prefixOnly);
    } catch (err) {
      expect((err as FrameError).code).toBe('FRAME_TOO_LARGE');
    }
  });

  it('refuses an endless length prefix', () => {
    const d = new FrameDecoder(1 << 30);
    expect(() => d.push(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]))).toThrowError(/prefix is too long/);
  });

  it('never throws anything but FrameError on random bytes', () => {
    const rng = seededRng(7);
    for (let t = 0; t < 500; t++) {
      const bytes = new Uint8Array(rng.int(64));
      for (let i = 0; i < bytes.length; i++) bytes[i] = rng.int(256);
      try {
        new FrameDecoder(1000).push(bytes);
      } catch (err) {
        expect(err).toBeInstanceOf(FrameError);
      }
    }
  });
});

describe('length prefixes of whole buffers', () => {
  it('reads back what lengthPrefix writes, after other bytes too, and refuses cut or overlong prefixes', () => {
    for (const n of [0, 1, 127, 128, 300, 16_383, 16_384, 2 ** 21, 2 ** 28 + 5, 2 ** 34]) {
      const bytes = new Uint8Array([9, 9, ...lengthPrefix(n), 7]);
      expect(readLengthPrefix(bytes, 2)).toEqual([n, bytes.length - 1]);
      expect(encodeFrame(new Uint8Array(Math.min(n, 300))).subarray(0, lengthPrefix(Math.min(n, 300)).length)).toEqual(new Uint8Array(lengthPrefix(Math.min(n, 300))));
    }
    expect(() => readLengthPrefix(new Uint8Array([]), 0)).toThrow(FrameError);
    expect(() => readLengthPrefix(new Uint8Array([0x80, 0x80]), 0)).toThrow(FrameError);
    expect(() => readLengthPrefix(new Uint8Array([0x80, 0x80, 0x80, 0x80, 0x80, 0x01]), 0)).toThrow(FrameError);
  });
});
