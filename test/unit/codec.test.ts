import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  DecodeError,
  ENTRY_VIEW_MIN_BYTES,
  EncodeError,
  MAX_CONF_IDS,
  MAX_NODE_ID_BYTES,
  MAX_RAFT_MESSAGE_BYTES,
  MessageTooLargeError,
  OMNI_PROTO,
  decodeConfChange,
  decodeEntry,
  decodeHardState,
  decodeRaftMessage,
  decodeSnapshot,
  encodeConfChange,
  encodeEntry,
  encodeHardState,
  encodeRaftMessage,
  encodeSnapshot,
} from '../../protocol/codec.js';
import {
  ConfChangeType,
  EntryType,
  MessageType,
  emptyMessage,
  type Message,
  type Snapshot,
} from '../../protocol/raft/types.js';
import { seededRng } from '../../protocol/rng.js';

const MAX_SAFE = Number.MAX_SAFE_INTEGER;
const ALL_MESSAGE_TYPES = Object.values(MessageType).filter((v): v is MessageType => typeof v === 'number');

/** Seeded PRNG (the project's mulberry32): every run replays exactly, never Math.random. */
const mulberry32 = (seed: number): (() => number) => seededRng(seed).next;

function randomBytes(next: () => number, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = Math.floor(next() * 256);
  return bytes;
}

/** Protobuf varint, for hand-built wire bytes. */
function varint(value: bigint): number[] {
  let v = BigInt.asUintN(64, value);
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}

const snapshot: Snapshot = {
  meta: { index: MAX_SAFE, term: 7, conf: { voters: ['n1', 'n2', 'n3'], learners: ['ñ4-ü'] } },
  data: new Uint8Array([1, 2, 3, 255]),
};

function fullMessage(type: MessageType): Message {
  return {
    type,
    from: 'node-a',
    to: 'node-b',
    term: MAX_SAFE,
    logTerm: MAX_SAFE - 1,
    index: 2 ** 40,
    entries: [
      { term: 1, index: 2, type: EntryType.Normal, data: new Uint8Array([0, 1, 2]) },
      { term: MAX_SAFE, index: MAX_SAFE, type: EntryType.ConfChange, data: new Uint8Array(0) },
    ],
    commit: 2 ** 32 + 1,
    reject: true,
    rejectHint: 2 ** 31,
    snapshot,
    context: new Uint8Array([42, 43]),
  };
}

/** Whatever the input, a decoder either returns a valid value or throws DecodeError. */
function expectDecodeOrDecodeError(bytes: Uint8Array): Message | undefined {
  try {
    const m = decodeRaftMessage(bytes);
    // A decoded message is valid: it re-encodes and round-trips to itself.
    expect(decodeRaftMessage(encodeRaftMessage(m))).toEqual(m);
    return m;
  } catch (err) {
    if (!(err instanceof DecodeError)) throw err;
    return undefined;
  }
}

function expectOnlyDecodeError(decode: () => unknown): void {
  try {
    decode();
  } catch (err) {
    if (!(err instanceof DecodeError)) throw err;
  }
}

describe('proto schema', () => {
  it('embedded text equals proto/omni.proto', () => {
    const file = readFileSync(new URL('../../proto/omni.proto', import.meta.url), 'utf8');
    expect(OMNI_PROTO).toBe(file);
  });
});

describe('RaftMessage round trip', () => {
  it.each(ALL_MESSAGE_TYPES)('type %i with entries, snapshot and large numbers', (type) => {
    const m = fullMessage(type);
    const decoded = decodeRaftMessage(encodeRaftMessage(m));
    expect(decoded).toEqual(m);
    expect(decoded.context.constructor).toBe(Uint8Array);
    expect(decoded.entries[0].data.constructor).toBe(Uint8Array);
    expect(decoded.snapshot?.data.constructor).toBe(Uint8Array);
  });

  it.each(ALL_MESSAGE_TYPES)('type %i, empty message', (type) => {
    const m = emptyMessage(type, '', '', 0);
    const decoded = decodeRaftMessage(encodeRaftMessage(m));
    expect(decoded).toEqual(m);
    expect('snapshot' in decoded).toBe(false);
    expect(decoded.entries).toEqual([]);
    expect(decoded.context).toEqual(new Uint8Array(0));
    expect(Object.keys(decoded).sort()).toEqual(Object.keys(m).sort());
  });

  it('a large entry is a plain view into the message it came in; a small one is a copy', () => {
    const big = new Uint8Array(ENTRY_VIEW_MIN_BYTES).map((_, i) => i % 251);
    const small = new Uint8Array([1, 2, 3]);
    const m = { ...emptyMessage(MessageType.App, 'a', 'b', 3), entries: [{ term: 3, index: 7, type: EntryType.Normal, data: small }, { term: 3, index: 8, type: EntryType.Normal, data: big }] };
    const wire = new Uint8Array(encodeRaftMessage(m));
    const decoded = decodeRaftMessage(wire);
    expect(decoded.entries.map((e) => [...e.data.subarray(0, 5)])).toEqual([[1, 2, 3], [0, 1, 2, 3, 4]]);
    expect(decoded.entries[1].data).toEqual(big);
    expect(decoded.entries[1].data.constructor).toBe(Uint8Array);
    expect(decoded.entries[1].data.buffer).toBe(wire.buffer);
    expect(decoded.entries[0].data.buffer).not.toBe(wire.buffer);
  });

  it('encodes to a plain Uint8Array', () => {
    expect(encodeRaftMessage(fullMessage(MessageType.App)).constructor).toBe(Uint8Array);
  });

  it('an empty snapshot is kept, with default meta', () => {
    const m = { ...emptyMessage(MessageType.Snap, 'a', 'b', 1) };
    m.snapshot = { meta: { index: 0, term: 0, conf: { voters: [], learners: [] } }, data: new Uint8Array(0) };
    expect(decodeRaftMessage(encodeRaftMessage(m))).toEqual(m);
  });

  it('decoded bytes do not alias the input', () => {
    const bytes = encodeRaftMessage(fullMessage(MessageType.App));
    const decoded = decodeRaftMessage(bytes);
    bytes.fill(0);
    expect(decoded).toEqual(fullMessage(MessageType.App));
  });

  it('node ids up to the limit pass, longer ones are refused on both sides', () => {
    const m = emptyMessage(MessageType.Vote, 'x'.repeat(MAX_NODE_ID_BYTES), 'é'.repeat(MAX_NODE_ID_BYTES / 2), 1);
    expect(decodeRaftMessage(encodeRaftMessage(m))).toEqual(m);
    const long = { ...m, from: 'x'.repeat(MAX_NODE_ID_BYTES + 1) };
    expect(() => encodeRaftMessage(long)).toThrow(EncodeError);
    // Hand-built: field 2 (from), 257 bytes.
    const wire = new Uint8Array([0x12, ...varint(257n), ...new Array<number>(257).fill(0x61)]);
    expect(() => decodeRaftMessage(wire)).toThrow(DecodeError);
  });
});

describe('numbers', () => {
  it.each([2 ** 53, -1, 1.5, Number.NaN, Infinity])('encoding term %d throws EncodeError', (term) => {
    expect(() => encodeRaftMessage(emptyMessage(MessageType.App, 'a', 'b', term))).toThrow(EncodeError);
  });

  it.each([2n ** 53n, 2n ** 64n - 1n, 2n ** 63n])('decoding term %d throws DecodeError', (term) => {
    const wire = new Uint8Array([0x20, ...varint(term)]); // field 4 (term), varint
    expect(() => decodeRaftMessage(wire)).toThrow(DecodeError);
  });

  it('decodes 2^53 - 1 exactly', () => {
    const wire = new Uint8Array([0x20, ...varint(2n ** 53n - 1n)]);
    expect(decodeRaftMessage(wire).term).toBe(MAX_SAFE);
  });
});

describe('enums', () => {
  it('unknown message type throws DecodeError', () => {
    expect(() => decodeRaftMessage(new Uint8Array([0x08, 99]))).toThrow(DecodeError);
    expect(() => decodeRaftMessage(new Uint8Array([0x08, ...varint(-1n)]))).toThrow(DecodeError);
    expect(() => encodeRaftMessage(emptyMessage(99 as MessageType, 'a', 'b', 1))).toThrow(EncodeError);
  });

  it('unknown entry type throws DecodeError', () => {
    const entry = [0x18, 5]; // Entry field 3 (type) = 5
    const wire = new Uint8Array([0x3a, entry.length, ...entry]); // RaftMessage field 7 (entries)
    expect(() => decodeRaftMessage(wire)).toThrow(DecodeError);
    expect(() => decodeEntry(new Uint8Array(entry))).toThrow(DecodeError);
  });

  it('unknown conf change type throws DecodeError', () => {
    expect(() => decodeConfChange(new Uint8Array([0x08, 7, 0x12, 1, 0x61]))).toThrow(DecodeError);
    expect(decodeConfChange(new Uint8Array([0x08, 2, 0x12, 1, 0x61]))).toEqual({
      type: ConfChangeType.RemoveNode,
      node: 'a',
    });
  });
});

describe('size limit', () => {
  it('bytes over the default limit throw MessageTooLargeError without decoding', () => {
    // All zeros: decoding would fail with "invalid tag"; the size check must come first.
    const bytes = new Uint8Array(MAX_RAFT_MESSAGE_BYTES + 1);
    const err = (() => {
      try {
        decodeRaftMessage(bytes);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(MessageTooLargeError);
    expect((err as MessageTooLargeError).code).toBe('MESSAGE_TOO_LARGE');
  });

  it('a custom small maxBytes works', () => {
    const bytes = encodeRaftMessage(fullMessage(MessageType.App));
    expect(decodeRaftMessage(bytes, bytes.length)).toEqual(fullMessage(MessageType.App));
    expect(() => decodeRaftMessage(bytes, bytes.length - 1)).toThrow(MessageTooLargeError);
    expect(() => decodeRaftMessage(new Uint8Array(17), 16)).toThrow(MessageTooLargeError);
    expect(() => decodeSnapshot(encodeSnapshot(snapshot), 4)).toThrow(MessageTooLargeError);
  });

  it('encoding an oversized message throws MessageTooLargeError', () => {
    const m = emptyMessage(MessageType.App, 'a', 'b', 1);
    m.entries = [{ term: 1, index: 1, type: EntryType.Normal, data: new Uint8Array(MAX_RAFT_MESSAGE_BYTES) }];
    expect(() => encodeRaftMessage(m)).toThrow(MessageTooLargeError);
  });
});

describe('garbage', () => {
  it('5,000 random inputs decode to a valid message or throw DecodeError', () => {
    const next = mulberry32(0xc0dec);
    let decoded = 0;
    for (let i = 0; i < 5_000; i++) {
      const bytes = randomBytes(next, Math.floor(next() * 96));
      if (expectDecodeOrDecodeError(bytes)) decoded++;
      expectOnlyDecodeError(() => decodeEntry(bytes));
      expectOnlyDecodeError(() => decodeSnapshot(bytes));
      expectOnlyDecodeError(() => decodeHardState(bytes));
      expectOnlyDecodeError(() => decodeConfChange(bytes));
    }
    expect(decoded).toBeGreaterThan(0); // the fuzz reaches the validation, not only the parser
  });

  it('5,000 mutated valid messages decode to a valid message or throw DecodeError', () => {
    const next = mulberry32(42);
    const valid = encodeRaftMessage(fullMessage(MessageType.App));
    for (let i = 0; i < 5_000; i++) {
      const bytes = valid.slice();
      const flips = 1 + Math.floor(next() * 4);
      for (let f = 0; f < flips; f++) bytes[Math.floor(next() * bytes.length)] = Math.floor(next() * 256);
      expectDecodeOrDecodeError(bytes);
    }
  });

  it('truncated messages throw DecodeError (or decode, at a field boundary)', () => {
    const m = fullMessage(MessageType.Snap);
    const bytes = encodeRaftMessage(m);
    for (let cut = 0; cut < bytes.length; cut++) expectDecodeOrDecodeError(bytes.subarray(0, cut));
    // context (field 12) is written last: cutting inside it can never be a valid message.
    const contextStart = bytes.length - (2 + m.context.length);
    for (let cut = contextStart + 1; cut < bytes.length; cut++) {
      expect(() => decodeRaftMessage(bytes.subarray(0, cut))).toThrow(DecodeError);
    }
    const entry = encodeEntry(m.entries[0]);
    expect(() => decodeEntry(entry.subarray(0, entry.length - 1))).toThrow(DecodeError);
  });
});

describe('storage codecs', () => {
  it('ConfChange round trip', () => {
    for (const type of [ConfChangeType.AddVoter, ConfChangeType.AddLearner, ConfChangeType.RemoveNode]) {
      const cc = { type, node: 'node-z' };
      expect(decodeConfChange(encodeConfChange(cc))).toEqual(cc);
    }
    expect(() => encodeConfChange({ type: ConfChangeType.AddVoter, node: '' })).toThrow(EncodeError);
    expect(() => decodeConfChange(new Uint8Array(0))).toThrow(DecodeError); // empty node id
  });

  it('HardState round trip', () => {
    const hs = { term: MAX_SAFE, vote: 'n2', commit: 12345 };
    expect(decodeHardState(encodeHardState(hs))).toEqual(hs);
    expect(decodeHardState(new Uint8Array(0))).toEqual({ term: 0, vote: '', commit: 0 });
  });

  it('Entry round trip', () => {
    const e = { term: 3, index: MAX_SAFE, type: EntryType.ConfChange, data: new Uint8Array([7]) };
    const decoded = decodeEntry(encodeEntry(e));
    expect(decoded).toEqual(e);
    expect(decoded.data.constructor).toBe(Uint8Array);
  });

  it('Snapshot round trip', () => {
    expect(decodeSnapshot(encodeSnapshot(snapshot))).toEqual(snapshot);
    expect(decodeSnapshot(new Uint8Array(0))).toEqual({
      meta: { index: 0, term: 0, conf: { voters: [], learners: [] } },
      data: new Uint8Array(0),
    });
  });

  it('conf lists are bounded', () => {
    const ids = Array.from({ length: MAX_CONF_IDS + 1 }, (_, i) => `n${i}`);
    const big = { ...snapshot, meta: { ...snapshot.meta, conf: { voters: ids, learners: [] } } };
    expect(() => encodeSnapshot(big)).toThrow(EncodeError);
    // Hand-built: SnapshotMeta.conf with MAX_CONF_IDS + 1 voters "a".
    const conf = ids.flatMap(() => [0x0a, 1, 0x61]);
    const meta = [0x1a, ...varint(BigInt(conf.length)), ...conf];
    const wire = new Uint8Array([0x0a, ...varint(BigInt(meta.length)), ...meta]);
    expect(() => decodeSnapshot(wire)).toThrow(DecodeError);
    const ok = { ...snapshot, meta: { ...snapshot.meta, conf: { voters: ids.slice(1), learners: [] } } };
    expect(decodeSnapshot(encodeSnapshot(ok))).toEqual(ok);
  });
});

describe('errors', () => {
  it('have stable codes', () => {
    expect(new DecodeError('x').code).toBe('DECODE_ERROR');
    expect(new EncodeError('x').code).toBe('ENCODE_ERROR');
    expect(new MessageTooLargeError(2, 1).code).toBe('MESSAGE_TOO_LARGE');
  });
});
