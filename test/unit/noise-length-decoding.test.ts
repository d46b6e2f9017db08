// Noise frames split without an Error per read (node/p2p/noise-length-decoding.ts): the library's
// LengthPrefixedDecoder, patched, yields the same frames and raises the same errors, and never
// asks its length decoder about an empty buffer (nor throws for one).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { LengthPrefixedDecoder } from '@libp2p/utils';
import { Uint8ArrayList } from 'uint8arraylist';
import { installQuietLengthDecoding, quietLengthDecoder } from '../../node/p2p/noise-length-decoding.js';

/** The length decoder noise gives the decoder (a 2-byte big-endian length; RangeError when short). */
type LengthDecoder = NonNullable<NonNullable<ConstructorParameters<typeof LengthPrefixedDecoder>[0]>['lengthDecoder']>;

function uint16BE(calls: { empty: number; all: number }): LengthDecoder {
  return (data) => {
    calls.all++;
    if (data.byteLength === 0) calls.empty++;
    if (data.byteLength < 2) throw RangeError('Could not decode int16BE');
    return data instanceof Uint8Array ? (data[0] << 8) | data[1] : data.getUint16(0);
  };
}

function framed(payloads: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(payloads.reduce((n, p) => n + 2 + p.length, 0));
  let at = 0;
  for (const p of payloads) {
    out[at] = p.length >> 8;
    out[at + 1] = p.length & 0xff;
    out.set(p, at + 2);
    at += 2 + p.length;
  }
  return out;
}

function decoder(calls: { empty: number; all: number }, maxDataLength = 65_535) {
  return new LengthPrefixedDecoder({ lengthDecoder: uint16BE(calls), maxBufferSize: 1 << 20, maxDataLength, encodingLength: () => 2 });
}

describe('noise length decoding', () => {
  installQuietLengthDecoding();

  it('yields every frame, whole and in order, however the bytes are cut into reads', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { maxLength: 12 }), fc.array(fc.integer({ min: 1, max: 700 }), { maxLength: 20 }), (payloads, cuts) => {
        const bytes = framed(payloads);
        const calls = { empty: 0, all: 0 };
        const d = decoder(calls);
        const got: Uint8Array[] = [];
        let at = 0;
        for (const cut of [...cuts, bytes.length]) {
          if (at >= bytes.length) break;
          const read = bytes.subarray(at, Math.min(bytes.length, at + cut));
          at += read.length;
          for (const f of d.decode(read)) got.push(f.subarray());
        }
        expect(got).toEqual(payloads);
        // the reads that ended on a frame's end asked nothing of the library's length decoder
        expect(calls.empty).toBe(0);
      }),
      { numRuns: 500 },
    );
  });

  it('a read ending on a frame boundary never reaches the length decoder with an empty buffer', () => {
    const calls = { empty: 0, all: 0 };
    const d = decoder(calls);
    for (let i = 0; i < 100; i++) expect([...d.decode(framed([new Uint8Array([i, i])]))].length).toBe(1);
    expect(calls.all).toBe(100);
    expect(calls.empty).toBe(0);
  });

  it('a length split across reads waits for its second byte (the RangeError of a short buffer still counts)', () => {
    const calls = { empty: 0, all: 0 };
    const d = decoder(calls);
    const bytes = framed([new Uint8Array(300).fill(7)]);
    expect([...d.decode(bytes.subarray(0, 1))]).toEqual([]);
    const frames = [...d.decode(bytes.subarray(1))].map((f) => f.subarray());
    expect(frames).toEqual([new Uint8Array(300).fill(7)]);
  });

  it('raises what it raised before: a frame over the limit, and any other error of the length decoder', () => {
    const calls = { empty: 0, all: 0 };
    expect(() => [...decoder(calls, 10).decode(framed([new Uint8Array(11)]))]).toThrow(/Invalid message length/);
    const failing = new LengthPrefixedDecoder({
      lengthDecoder: () => {
        throw new TypeError('broken');
      },
      encodingLength: () => 2,
    });
    expect(() => [...failing.decode(new Uint8Array([1, 2, 3]))]).toThrow(TypeError);
  });

  it('an empty buffer reads as a length of 0; other buffers reach the decoder itself', () => {
    const calls = { empty: 0, all: 0 };
    const quiet = quietLengthDecoder(uint16BE(calls) as Parameters<typeof quietLengthDecoder>[0]);
    expect(quiet(new Uint8Array(0))).toBe(0);
    expect(quiet(new Uint8ArrayList())).toBe(0);
    expect(calls.all).toBe(0);
    expect(quiet(new Uint8Array([1, 2]))).toBe(258);
    expect(() => quiet(new Uint8Array([1]))).toThrow(RangeError);
    expect(calls.all).toBe(2);
    // wrapping twice is wrapping once
    expect(quietLengthDecoder(quiet)).toBe(quiet);
  });

  it('a decoder whose frame of length 0 has no prefix is left as it is (its length decoder still sees the empty buffer)', () => {
    const calls = { empty: 0, all: 0 };
    const bare = new LengthPrefixedDecoder({ lengthDecoder: uint16BE(calls), encodingLength: () => 0 });
    expect([...bare.decode(new Uint8Array(0))]).toEqual([]);
    expect(calls.empty).toBe(1);
  });

  it('an empty read yields nothing and leaves the decoder as it was', () => {
    const calls = { empty: 0, all: 0 };
    const d = decoder(calls);
    expect([...d.decode(new Uint8Array(0))]).toEqual([]);
    expect([...d.decode(framed([new Uint8Array([9])]))].map((f) => f.subarray())).toEqual([new Uint8Array([9])]);
    expect(calls.empty).toBe(0);
  });

});
