// Integrity checks for the Raft data dir that LevelDB (classic-level 3) does not make:
//  - every stored value is sealed with a CRC-32 over its key and payload, verified on read;
//  - before LevelDB opens, its write-ahead logs (*.log) are checked record by record. LevelDB
//    replays them with paranoid_checks off (classic-level cannot turn it on) and silently drops
//    a record that fails its checksum, together with the rest of its 32 KiB block, then
//    deletes the log: a synced vote could vanish without a trace. Here a damaged record stops
//    the node instead. Only a *torn tail* is accepted (the file ends inside a record, or in
//    zeros): that is what a crash during an unsynced append leaves, and LevelDB drops it.
import { crc32 } from 'node:zlib';
import { open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { OmniError } from '../errors.js';

export class StorageCorruptError extends OmniError {
  constructor(what: string, dir: string, detail: Record<string, unknown> = {}) {
    super('STORAGE_CORRUPT', `${what} (in ${dir}); ${RECOVERY_HINT}`, detail);
    this.name = 'StorageCorruptError';
  }
}

/** One line an operator can act on; the full steps are in README (Durability). */
export const RECOVERY_HINT =
  'this node cannot prove its Raft state is intact and will not start: from a healthy member run "omni nodes remove <name>", then move its data dir (--data) away and "omnid join" with a fresh one under the same --name (README: Durability)';

// ------------------------------------------------------------------ sealed records

/** First byte of a sealed value: the record format, so a later format can be told apart. */
const RECORD_FORMAT = 1;
const SEAL_BYTES = 5;

function recordCrc(key: string, payload: Uint8Array): number {
  // Not crc32(payload, crc32(key)) for an empty payload: node:zlib's crc32 returns 0, ignoring
  // the value it continues from, for an empty array over an empty ArrayBuffer (what
  // TextEncoder.encode('') gives) — the live state generation '' was sealed with CRC 0 and the
  // node then refused to start (STORAGE_CORRUPT), found by `npm run soak`.
  const k = crc32(key);
  return payload.length === 0 ? k : crc32(payload, k);
}

/** [format][crc32(key ‖ payload), big-endian][payload]: a value moved to another key fails too. */
export function sealRecord(key: string, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(SEAL_BYTES + payload.length);
  out[0] = RECORD_FORMAT;
  new DataView(out.buffer).setUint32(1, recordCrc(key, payload));
  out.set(payload, SEAL_BYTES);
  return out;
}

const TEXT_ENCODER = new TextEncoder();

/** sealRecord(key, the UTF-8 of text), encoded in place: one buffer, not two (a value may be 1 MiB). */
export function sealText(key: string, text: string): Uint8Array {
  const out = new Uint8Array(SEAL_BYTES + Buffer.byteLength(text, 'utf8'));
  const { written } = TEXT_ENCODER.encodeInto(text, out.subarray(SEAL_BYTES));
  if (SEAL_BYTES + written !== out.length) return sealRecord(key, TEXT_ENCODER.encode(text));
  out[0] = RECORD_FORMAT;
  new DataView(out.buffer, out.byteOffset, out.byteLength).setUint32(1, recordCrc(key, out.subarray(SEAL_BYTES)));
  return out;
}

/** The payload of a sealed value, or undefined when it is damaged. */
export function unsealRecord(key: string, value: Uint8Array): Uint8Array | undefined {
  if (value.length < SEAL_BYTES || value[0] !== RECORD_FORMAT) return undefined;
  const payload = value.subarray(SEAL_BYTES);
  const stored = new DataView(value.buffer, value.byteOffset, value.length).getUint32(1);
  if (stored === recordCrc(key, payload)) return payload;
  // An empty payload sealed by a version with the crc32 pitfall above carries CRC 0: still read.
  return payload.length === 0 && stored === 0 ? payload : undefined;
}

// ------------------------------------------------------------------ LevelDB write-ahead logs

// leveldb/db/log_format.h: 32 KiB blocks of physical records, each with a 7-byte header
// (masked CRC-32C of type ‖ data, little-endian; length, little-endian u16; type).
const BLOCK_BYTES = 32 * 1024;
const HEADER_BYTES = 7;
const enum RecordType {
  Zero = 0,
  Full = 1,
  First = 2,
  Middle = 3,
  Last = 4,
}
const CRC_MASK_DELTA = 0xa282ead8;

/** CRC-32C (Castagnoli) lookup tables for slicing-by-8 (a log may hold a 64 MiB snapshot). */
const CRC32C_TABLES = (() => {
  const t = Array.from({ length: 8 }, () => new Uint32Array(256));
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[0][i] = c >>> 0;
  }
  for (let i = 0; i < 256; i++) for (let k = 1; k < 8; k++) t[k][i] = (t[k - 1][i] >>> 8) ^ t[0][t[k - 1][i] & 0xff];
  return t;
})();

export function crc32c(data: Uint8Array, seed = 0): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = CRC32C_TABLES;
  let c = ~seed >>> 0;
  let i = 0;
  for (const end8 = data.length - 7; i < end8; i += 8) {
    c ^= data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24);
    c = t7[c & 0xff] ^ t6[(c >>> 8) & 0xff] ^ t5[(c >>> 16) & 0xff] ^ t4[c >>> 24] ^ t3[data[i + 4]] ^ t2[data[i + 5]] ^ t1[data[i + 6]] ^ t0[data[i + 7]];
  }
  for (; i < data.length; i++) c = t0[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

function maskedRecordCrc(type: number, data: Uint8Array): number {
  const c = crc32c(data, crc32c(Uint8Array.of(type)));
  return ((((c >>> 15) | (c << 17)) >>> 0) + CRC_MASK_DELTA) >>> 0;
}

export interface LogCheck {
  file: string;
  /** Bytes of records that passed. */
  validBytes: number;
  /** Bytes after the last complete record that look like an interrupted append (benign). */
  tornTailBytes: number;
}

/**
 * Checks every LevelDB write-ahead log in `dir` (call it before LevelDB opens the dir: opening
 * replays the logs and deletes them). Throws StorageCorruptError for any record that is
 * damaged; accepts a torn tail.
 */
export async function checkLevelDbLogs(dir: string): Promise<LogCheck[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const logs = names.filter((n) => /^\d+\.log$/.test(n)).sort();
  const out: LogCheck[] = [];
  for (const name of logs) out.push(await checkLogFile(dir, name));
  return out;
}

async function checkLogFile(dir: string, name: string): Promise<LogCheck> {
  const fh = await open(join(dir, name), 'r');
  try {
    const size = (await fh.stat()).size;
    const block = new Uint8Array(BLOCK_BYTES);
    let inFragment = false;
    let fragmentBytes = 0;
    let validBytes = 0;
    const corrupt = (at: number, why: string) => new StorageCorruptError(`LevelDB log ${name} is damaged at byte ${at}: ${why}`, dir, { file: name, offset: at });
    for (let base = 0; base < size; base += BLOCK_BYTES) {
      const len = Math.min(BLOCK_BYTES, size - base);
      const { bytesRead } = await fh.read(block, 0, len, base);
      if (bytesRead !== len) throw corrupt(base, 'short read');
      const atEof = base + len === size;
      let pos = 0;
      while (pos < len) {
        if (len - pos < HEADER_BYTES) {
          // A full block ends in a zero trailer; a short one is a header cut off by a crash.
          if (!atEof || len === BLOCK_BYTES) break;
          return { file: name, validBytes, tornTailBytes: size - validBytes };
        }
        const crc = readU32le(block, pos);
        const length = block[pos + 4] | (block[pos + 5] << 8);
        const type = block[pos + 6];
        if (type === RecordType.Zero && length === 0 && crc === 0) {
          // Zeros: space the file system allocated but never filled (a crash). Benign only
          // as the tail: zeros with records after them are a hole in synced data.
          if (await zerosToEnd(fh, block, pos, len, base, size)) return { file: name, validBytes, tornTailBytes: size - validBytes };
          throw corrupt(base + pos, 'zeroed bytes followed by data');
        }
        if (type < RecordType.Full || type > RecordType.Last) throw corrupt(base + pos, `bad record type ${type}`);
        const end = pos + HEADER_BYTES + length;
        if (end > len) {
          // Records never cross a block: beyond the block is damage, beyond the file a torn append.
          if (atEof && end <= BLOCK_BYTES) return { file: name, validBytes, tornTailBytes: size - validBytes };
          throw corrupt(base + pos, `record length ${length} runs past its block`);
        }
        if (maskedRecordCrc(type, block.subarray(pos + HEADER_BYTES, end)) !== crc) throw corrupt(base + pos, 'checksum mismatch');
        if (type === RecordType.Full || type === RecordType.First) {
          // LevelDB may leave an empty First fragment at a block's end (then starts over).
          if (inFragment && fragmentBytes > 0) throw corrupt(base + pos, 'fragmented record without its last part');
          inFragment = type === RecordType.First;
          fragmentBytes = length;
        } else {
          if (!inFragment) throw corrupt(base + pos, 'record fragment without its first part');
          fragmentBytes += length;
          inFragment = type === RecordType.Middle;
        }
        pos = end;
        if (!inFragment) validBytes = base + pos;
      }
    }
    // A record whose last fragment was never written: an interrupted append.
    return { file: name, validBytes, tornTailBytes: size - validBytes };
  } finally {
    await fh.close();
  }
}

async function zerosToEnd(fh: import('node:fs/promises').FileHandle, block: Uint8Array, pos: number, len: number, base: number, size: number): Promise<boolean> {
  for (let i = pos; i < len; i++) if (block[i] !== 0) return false;
  const buf = new Uint8Array(BLOCK_BYTES);
  for (let at = base + len; at < size; at += BLOCK_BYTES) {
    const n = Math.min(BLOCK_BYTES, size - at);
    await fh.read(buf, 0, n, at);
    for (let i = 0; i < n; i++) if (buf[i] !== 0) return false;
  }
  return true;
}

function readU32le(b: Uint8Array, at: number): number {
  return (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
}
