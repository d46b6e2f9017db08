// Wire codec of the Raft snapshot stream (/omni/raft/snapshot/1.0.0, node/raft/snapshot-stream.ts):
// SnapshotFrame of proto/omni.proto, one per length-prefixed frame. Pure: no I/O.
//
// Every decoder takes a size limit and validates what it returns (bounded ids, headers, row
// counts, checksum length, safe integers): the peer on the other end is untrusted.
import protobuf from 'protobufjs';
import { DecodeError, EncodeError, MessageTooLargeError, OMNI_ROOT } from '../codec.js';

/** Rows are packed into one chunk until it would pass this many bytes of keys and values. */
export const SNAPSHOT_CHUNK_TARGET_BYTES = 1024 * 1024;
/** Largest single row (key + value) a snapshot may hold; a chunk holds at least one row. */
export const MAX_SNAPSHOT_ROW_BYTES = 4 * 1024 * 1024;
/** Most rows in one chunk (a chunk of tiny rows: bounds the receiver's per-chunk arrays). */
export const MAX_SNAPSHOT_ROWS_PER_CHUNK = 64 * 1024;
/** Largest encoded Raft Snap header (meta only: index, term, a ConfState of at most 2×10k ids). */
export const MAX_SNAPSHOT_HEADER_BYTES = 2 * 1024 * 1024;
/** Longest snapshot id, in UTF-8 bytes. */
export const MAX_SNAPSHOT_ID_BYTES = 256;
export const SNAPSHOT_CHECKSUM_BYTES = 32;
const MAX_ERROR_CODE_CHARS = 64;
const MAX_ERROR_MESSAGE_CHARS = 500;
/** Protobuf overhead of a chunk beyond its key and value bytes: tags and lengths, 12 bytes a row at most. */
const CHUNK_OVERHEAD_BYTES = 16 + MAX_SNAPSHOT_ROWS_PER_CHUNK * 12;
/** Largest frame the sender sends and the receiver accepts (a full chunk, or a header). */
export const MAX_SNAPSHOT_FRAME_BYTES = Math.max(MAX_SNAPSHOT_ROW_BYTES, SNAPSHOT_CHUNK_TARGET_BYTES) + CHUNK_OVERHEAD_BYTES;
/** Largest frame the receiver sends (accept, ack, done, error): the sender refuses bigger ones. */
export const MAX_SNAPSHOT_REPLY_FRAME_BYTES = 64 * 1024;

export type SnapshotRow = [key: Uint8Array, value: Uint8Array];

export type SnapshotFrame =
  | { kind: 'offer'; id: string; header: Uint8Array }
  | { kind: 'accept'; resume: boolean; afterKey: Uint8Array; rowCount: number }
  | { kind: 'begin'; resume: boolean }
  | { kind: 'chunk'; seq: number; rows: SnapshotRow[] }
  | { kind: 'end'; rowCount: number; checksum: Uint8Array }
  | { kind: 'ack'; seq: number }
  | { kind: 'done' }
  | { kind: 'error'; code: string; message: string };

export type SnapshotFrameKind = SnapshotFrame['kind'];

/** Bytes a row counts for against SNAPSHOT_CHUNK_TARGET_BYTES and MAX_SNAPSHOT_ROW_BYTES. */
export function rowBytes(key: Uint8Array, value: Uint8Array): number {
  return key.length + value.length;
}

/**
 * What the transfer checksum hashes before each row's key and value: both lengths as uint32 BE,
 * so that (key, value) boundaries are part of the digest. Feed: these 8 bytes, key, value.
 * Writes into `out` (8 bytes, reused by the caller: one allocation per transfer, not per row).
 */
export function writeRowChecksumPrefix(out: Uint8Array, key: Uint8Array, value: Uint8Array): Uint8Array {
  const k = key.length;
  const v = value.length;
  out[0] = k >>> 24;
  out[1] = (k >>> 16) & 0xff;
  out[2] = (k >>> 8) & 0xff;
  out[3] = k & 0xff;
  out[4] = v >>> 24;
  out[5] = (v >>> 16) & 0xff;
  out[6] = (v >>> 8) & 0xff;
  out[7] = v & 0xff;
  return out;
}

/** Byte-wise order of keys (LevelDB's default comparator): negative when a < b. */
export function compareKeys(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

export function keysEqual(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.length === b.length && compareKeys(a, b) === 0;
}

// ---------------------------------------------------------------------------

type Fail = (why: string) => never;
const encodeFail: Fail = (why) => {
  throw new EncodeError(why);
};
const decodeFail: Fail = (why) => {
  throw new DecodeError(why);
};

export function encodeSnapshotFrame(f: SnapshotFrame): Uint8Array {
  checkFrame(f, encodeFail);
  const writer = FrameType.encode(toWire(f));
  if (writer.len > MAX_SNAPSHOT_FRAME_BYTES) throw new MessageTooLargeError(writer.len, MAX_SNAPSHOT_FRAME_BYTES);
  const buf = writer.finish();
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Decodes and validates one frame; `kinds`, when given, are the only kinds accepted. */
export function decodeSnapshotFrame(bytes: Uint8Array, maxBytes: number, kinds?: readonly SnapshotFrameKind[]): SnapshotFrame {
  if (bytes.byteLength > maxBytes) throw new MessageTooLargeError(bytes.byteLength, maxBytes);
  let raw: RawFrame;
  try {
    raw = FrameType.decode(bytes) as unknown as RawFrame;
  } catch (err) {
    throw new DecodeError(`SnapshotFrame: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const f = fromWire(raw);
  if (kinds && !kinds.includes(f.kind)) decodeFail(`unexpected ${f.kind} frame (expected ${kinds.join(' or ')})`);
  checkFrame(f, decodeFail);
  return f;
}

// ---------------------------------------------------------------------------

type U64 = number | { toNumber(): number };
type RawBytes = Uint8Array | number[];
interface RawFrame {
  offer?: { id: string; header: RawBytes } | null;
  accept?: { resume: boolean; afterKey: RawBytes; rowCount: U64 } | null;
  begin?: { resume: boolean } | null;
  chunk?: { seq: U64; rows: { key: RawBytes; value: RawBytes }[] } | null;
  end?: { rowCount: U64; checksum: RawBytes } | null;
  ack?: { seq: U64 } | null;
  done?: object | null;
  error?: { code: string; message: string } | null;
}

const num = (v: U64): number => (typeof v === 'number' ? v : v.toNumber());
/** A view of protobufjs's bytes (a Buffer view into the frame): no copy. */
const bytesOf = (v: RawBytes): Uint8Array => (v instanceof Uint8Array ? new Uint8Array(v.buffer, v.byteOffset, v.byteLength) : Uint8Array.from(v));

function fromWire(raw: RawFrame): SnapshotFrame {
  if (raw.offer) return { kind: 'offer', id: raw.offer.id, header: bytesOf(raw.offer.header) };
  if (raw.accept) return { kind: 'accept', resume: raw.accept.resume, afterKey: bytesOf(raw.accept.afterKey), rowCount: num(raw.accept.rowCount) };
  if (raw.begin) return { kind: 'begin', resume: raw.begin.resume };
  if (raw.chunk) return { kind: 'chunk', seq: num(raw.chunk.seq), rows: raw.chunk.rows.map((r) => [bytesOf(r.key), bytesOf(r.value)]) };
  if (raw.end) return { kind: 'end', rowCount: num(raw.end.rowCount), checksum: bytesOf(raw.end.checksum) };
  if (raw.ack) return { kind: 'ack', seq: num(raw.ack.seq) };
  if (raw.done) return { kind: 'done' };
  if (raw.error) return { kind: 'error', code: raw.error.code, message: raw.error.message };
  return decodeFail('SnapshotFrame without a body');
}

function toWire(f: SnapshotFrame): object {
  switch (f.kind) {
    case 'offer':
      return { offer: { id: f.id, header: f.header } };
    case 'accept':
      return { accept: { resume: f.resume, afterKey: f.afterKey, rowCount: f.rowCount } };
    case 'begin':
      return { begin: { resume: f.resume } };
    case 'chunk':
      return { chunk: { seq: f.seq, rows: f.rows.map(([key, value]) => ({ key, value })) } };
    case 'end':
      return { end: { rowCount: f.rowCount, checksum: f.checksum } };
    case 'ack':
      return { ack: { seq: f.seq } };
    case 'done':
      return { done: {} };
    case 'error':
      return { error: { code: f.code, message: f.message } };
  }
}

function checkCount(v: number, what: string, fail: Fail): void {
  if (!Number.isSafeInteger(v) || v < 0) fail(`${what}: ${v} is not a safe non-negative integer`);
}

function checkFrame(f: SnapshotFrame, fail: Fail): void {
  switch (f.kind) {
    case 'offer': {
      const idBytes = protobuf.util.utf8.length(f.id);
      if (idBytes === 0 || idBytes > MAX_SNAPSHOT_ID_BYTES) fail(`offer.id: ${idBytes} bytes (1 to ${MAX_SNAPSHOT_ID_BYTES})`);
      if (f.header.length === 0 || f.header.length > MAX_SNAPSHOT_HEADER_BYTES) fail(`offer.header: ${f.header.length} bytes (1 to ${MAX_SNAPSHOT_HEADER_BYTES})`);
      return;
    }
    case 'accept':
      checkCount(f.rowCount, 'accept.rowCount', fail);
      if (f.afterKey.length > MAX_SNAPSHOT_ROW_BYTES) fail('accept.afterKey too long');
      if (!f.resume && (f.rowCount !== 0 || f.afterKey.length !== 0)) fail('accept without resume carries a position');
      return;
    case 'chunk': {
      checkCount(f.seq, 'chunk.seq', fail);
      if (f.rows.length === 0 || f.rows.length > MAX_SNAPSHOT_ROWS_PER_CHUNK) fail(`chunk of ${f.rows.length} rows (1 to ${MAX_SNAPSHOT_ROWS_PER_CHUNK})`);
      let total = 0;
      for (const [key, value] of f.rows) {
        const size = rowBytes(key, value);
        if (size > MAX_SNAPSHOT_ROW_BYTES) fail(`row of ${size} bytes exceeds ${MAX_SNAPSHOT_ROW_BYTES}`);
        total += size;
      }
      // One oversized row may fill a chunk alone; several rows stay within the target.
      if (f.rows.length > 1 && total > SNAPSHOT_CHUNK_TARGET_BYTES) fail(`chunk of ${total} row bytes exceeds ${SNAPSHOT_CHUNK_TARGET_BYTES}`);
      return;
    }
    case 'end':
      checkCount(f.rowCount, 'end.rowCount', fail);
      if (f.checksum.length !== SNAPSHOT_CHECKSUM_BYTES) fail(`end.checksum: ${f.checksum.length} bytes, ${SNAPSHOT_CHECKSUM_BYTES} expected`);
      return;
    case 'ack':
      checkCount(f.seq, 'ack.seq', fail);
      return;
    case 'error':
      if (f.code.length === 0 || f.code.length > MAX_ERROR_CODE_CHARS) fail('error.code: 1 to 64 characters');
      if (f.message.length > MAX_ERROR_MESSAGE_CHARS) fail(`error.message: more than ${MAX_ERROR_MESSAGE_CHARS} characters`);
      return;
    case 'begin':
    case 'done':
      return;
  }
}

const FrameType = OMNI_ROOT.lookupType('omni.SnapshotFrame');
