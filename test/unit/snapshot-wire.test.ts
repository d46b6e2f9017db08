// The snapshot stream's wire codec (protocol/raft/snapshot-wire.ts): every frame kind round-trips,
// and a decoder fed hostile bytes returns a valid frame or throws DecodeError / MessageTooLargeError.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { DecodeError, EncodeError, MessageTooLargeError } from '../../protocol/codec.js';
import {
  MAX_SNAPSHOT_FRAME_BYTES,
  MAX_SNAPSHOT_ID_BYTES,
  SNAPSHOT_CHUNK_TARGET_BYTES,
  compareKeys,
  decodeSnapshotFrame,
  encodeSnapshotFrame,
  keysEqual,
  writeRowChecksumPrefix,
  type SnapshotFrame,
} from '../../protocol/raft/snapshot-wire.js';

const bytes = (...b: number[]) => new Uint8Array(b);
const roundTrip = (f: SnapshotFrame) => decodeSnapshotFrame(encodeSnapshotFrame(f), MAX_SNAPSHOT_FRAME_BYTES);

describe('snapshot wire codec', () => {
  it('round-trips every frame kind', () => {
    const frames: SnapshotFrame[] = [
      { kind: 'offer', id: 'snap-1', header: bytes(1, 2, 3) },
      { kind: 'accept', resume: true, afterKey: bytes(9, 9), rowCount: 1234 },
      { kind: 'accept', resume: false, afterKey: new Uint8Array(0), rowCount: 0 },
      { kind: 'begin', resume: true },
      { kind: 'begin', resume: false },
      { kind: 'chunk', seq: 7, rows: [[bytes(1), bytes()], [bytes(2), bytes(5, 6)]] },
      { kind: 'end', rowCount: 2 ** 40, checksum: new Uint8Array(32).fill(3) },
      { kind: 'ack', seq: 0 },
      { kind: 'done' },
      { kind: 'error', code: 'BUSY', message: 'try later' },
    ];
    for (const f of frames) {
      const back = roundTrip(f);
      expect(back.kind).toBe(f.kind);
      expect(JSON.stringify(back, (_k, v) => (v instanceof Uint8Array ? [...v] : v))).toBe(JSON.stringify(f, (_k, v) => (v instanceof Uint8Array ? [...v] : v)));
    }
  });

  it('refuses frames that break a limit, on encode and on decode', () => {
    const bad: SnapshotFrame[] = [
      { kind: 'offer', id: '', header: bytes(1) },
      { kind: 'offer', id: 'x'.repeat(MAX_SNAPSHOT_ID_BYTES + 1), header: bytes(1) },
      { kind: 'offer', id: 'a', header: new Uint8Array(0) },
      { kind: 'chunk', seq: 0, rows: [] },
      { kind: 'chunk', seq: 0, rows: [[bytes(1), new Uint8Array(SNAPSHOT_CHUNK_TARGET_BYTES)], [bytes(2), bytes(1)]] },
      { kind: 'end', rowCount: 1, checksum: new Uint8Array(31) },
      { kind: 'accept', resume: false, afterKey: bytes(1), rowCount: 0 },
      { kind: 'ack', seq: -1 },
      { kind: 'error', code: '', message: '' },
    ];
    for (const f of bad) expect(() => encodeSnapshotFrame(f), f.kind).toThrow(EncodeError);
    // A single row larger than the chunk target travels alone.
    expect(roundTrip({ kind: 'chunk', seq: 0, rows: [[bytes(1), new Uint8Array(SNAPSHOT_CHUNK_TARGET_BYTES + 10)]] }).kind).toBe('chunk');
  });

  it('decodes only the kinds asked for, within the size limit', () => {
    const ack = encodeSnapshotFrame({ kind: 'ack', seq: 1 });
    expect(() => decodeSnapshotFrame(ack, 1024, ['accept'])).toThrow(DecodeError);
    expect(() => decodeSnapshotFrame(ack, ack.length - 1)).toThrow(MessageTooLargeError);
    expect(() => decodeSnapshotFrame(new Uint8Array(0), 1024)).toThrow(DecodeError); // no body
  });

  it('turns random and mutated bytes into a valid frame or a DecodeError', () => {
    const valid = encodeSnapshotFrame({ kind: 'chunk', seq: 3, rows: [[bytes(1, 2), bytes(3)], [bytes(4), bytes(5, 6, 7)]] });
    const arb = fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 })).map(([i, b]) => {
        const m = valid.slice();
        m[i] = b;
        return m;
      }),
    );
    fc.assert(
      fc.property(arb, (input) => {
        try {
          const f = decodeSnapshotFrame(input, 4096);
          // whatever decoded must encode again (it passed the same validation)
          encodeSnapshotFrame(f);
        } catch (err) {
          if (!(err instanceof DecodeError)) throw err;
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('orders keys byte-wise like LevelDB and writes the checksum prefix as two uint32 BE lengths', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 8 }), fc.uint8Array({ maxLength: 8 }), (x, y) => {
        expect(Math.sign(compareKeys(x, y))).toBe(Math.sign(Buffer.compare(Buffer.from(x), Buffer.from(y))));
        expect(keysEqual(x, y)).toBe(Buffer.from(x).equals(Buffer.from(y)));
      }),
    );
    expect(keysEqual(undefined, undefined)).toBe(true);
    expect(keysEqual(undefined, bytes())).toBe(false);
    const out = writeRowChecksumPrefix(new Uint8Array(8), new Uint8Array(0x010203), new Uint8Array(5));
    expect([...out]).toEqual([0, 1, 2, 3, 0, 0, 0, 5]);
  });
});
