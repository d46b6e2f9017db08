// Looks positions of a bundle up in its source map (version 3) without decoding the map whole.
//
// node:module's SourceMap decodes every mapping into an array of its own: for omnid's bundle (2.5 MB
// of map, ~550,000 mappings) that is 55-65 MiB of V8 heap, kept for the life of the process, and
// 0.4-0.6 s of CPU — paid by every omnid the first time any stack trace is formatted (Node formats
// one for each socket destroyed with an error: a peer that is down, a connection reset). Here the
// mappings stay one string: a first lookup walks it once, keeping the decoder's state at every
// CHECKPOINT_EVERY-th mapping (~9,000 checkpoints, ~0.3 MB); a lookup then decodes at most that many
// mappings from the nearest checkpoint. Answers are node:module SourceMap.findEntry's — the last
// mapping at or before the position (test/unit/source-map-index.test.ts compares them) — except for
// a mapping without a source, which maps nothing here (node:module repeats the one before it). It
// assumes what the spec asks and esbuild writes: within a line, columns only grow (node:module's
// search assumes it too, but answers differently for a map that breaks it).
//
// The checkpoints of omnid's map are made at build time (scripts/build.mjs writes them beside the
// map, encodeIndexFile): a first stack trace then reads the map's bytes and that file (~10–25 ms, by host)
// instead of parsing the map and walking all its mappings (100–170 ms of the main thread, paid at
// the first socket error — during every cold start, a failover, a sync).
//
// Pure: no I/O. A malformed map or index gives wrong positions or none, never an exception from lookup().

const CHECKPOINT_EVERY = 64;
/** Decoder state per checkpoint: string offset of the mapping, generated line and column, then the running source, line, column and name before it. */
const STRIDE = 7;
const BASE64 = new Int8Array(128).fill(-1);
for (const [i, ch] of [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'].entries()) BASE64[ch.charCodeAt(0)] = i;
const SEMICOLON = 59;
const COMMA = 44;

export interface OriginalPosition {
  /** As the map lists it (relative to the map's directory, or absolute). */
  source: string;
  /** 0-based, as node:module's SourceMap. */
  line: number;
  column: number;
}

/** The running values of the fields that are relative to the previous mapping. */
interface Cursor {
  pos: number;
  line: number;
  column: number;
  source: number;
  srcLine: number;
  srcColumn: number;
  name: number;
}

export class SourceMapIndex {
  private checkpoints: Int32Array | undefined;
  private count = 0;

  /** `checkpoints`: the table checkpointTable() gave for these mappings (an index file's); made on first use otherwise. */
  constructor(
    private readonly mappings: string,
    private readonly sources: readonly string[],
    checkpoints?: Int32Array,
  ) {
    if (checkpoints && checkpoints.length % STRIDE === 0) {
      this.checkpoints = checkpoints;
      this.count = checkpoints.length / STRIDE;
    }
  }

  /** The decoder's state at every CHECKPOINT_EVERY-th mapping (what an index file keeps). */
  checkpointTable(): Int32Array {
    return (this.checkpoints ??= this.index());
  }

  /** The original position of generated `line`, `column` (0-based), or undefined where nothing maps. */
  lookup(line: number, column: number): OriginalPosition | undefined {
    const cps = (this.checkpoints ??= this.index());
    // the last checkpoint whose mapping is at or before the position
    let lo = 0;
    let hi = this.count - 1;
    let from = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const at = mid * STRIDE;
      if (cps[at + 1] < line || (cps[at + 1] === line && cps[at + 2] <= column)) {
        from = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    if (from < 0) return undefined;
    const at = from * STRIDE;
    // the state before the checkpoint's mapping: its column is decoded again from the line's previous one
    const c: Cursor = { pos: cps[at], line: cps[at + 1], column: 0, source: cps[at + 3], srcLine: cps[at + 4], srcColumn: cps[at + 5], name: cps[at + 6] };
    c.column = this.previousColumn(from);
    let found: OriginalPosition | undefined | null = null;
    for (;;) {
      const m = this.next(c);
      if (m === undefined) break;
      if (c.line > line || (c.line === line && c.column > column)) break;
      // a mapping without a source, or naming one the map does not list, maps nothing
      found = m === 1 || c.source < 0 || c.source >= this.sources.length ? undefined : { source: this.sources[c.source], line: c.srcLine, column: c.srcColumn };
    }
    return found ?? undefined;
  }

  /** The generated column before checkpoint `i`'s mapping (0 when it opens its line). */
  private previousColumn(i: number): number {
    const cps = this.checkpoints!;
    return cps[i * STRIDE + 2] - this.columnDelta(cps[i * STRIDE]);
  }

  /** The relative generated column of the mapping at `pos`. */
  private columnDelta(pos: number): number {
    return this.vlq({ pos } as Cursor);
  }

  /** One walk over the mappings, keeping the state at every CHECKPOINT_EVERY-th one. */
  private index(): Int32Array {
    let out = new Int32Array(STRIDE * 1024);
    const c: Cursor = { pos: 0, line: 0, column: 0, source: 0, srcLine: 0, srcColumn: 0, name: 0 };
    let n = 0;
    for (;;) {
      const start = this.skipSeparators(c);
      if (start < 0) break;
      if (n++ % CHECKPOINT_EVERY !== 0) {
        this.decodeAt(c);
        continue;
      }
      const k = this.count++;
      if ((k + 1) * STRIDE > out.length) {
        const grown = new Int32Array(out.length * 2);
        grown.set(out);
        out = grown;
      }
      const at = k * STRIDE;
      out[at] = start;
      out[at + 3] = c.source;
      out[at + 4] = c.srcLine;
      out[at + 5] = c.srcColumn;
      out[at + 6] = c.name;
      this.decodeAt(c);
      out[at + 1] = c.line;
      out[at + 2] = c.column;
    }
    return out.subarray(0, this.count * STRIDE);
  }

  /** Moves past ',' and ';' (a ';' starts the next generated line); the offset of the next mapping, or -1 at the end. */
  private skipSeparators(c: Cursor): number {
    const s = this.mappings;
    while (c.pos < s.length) {
      const ch = s.charCodeAt(c.pos);
      if (ch === SEMICOLON) {
        c.line++;
        c.column = 0;
      } else if (ch !== COMMA) return c.pos;
      c.pos++;
    }
    return -1;
  }

  /** The next mapping from `c` (updated): 1 for a mapping without a source, 4 or 5 with one; undefined at the end. */
  private next(c: Cursor): number | undefined {
    if (this.skipSeparators(c) < 0) return undefined;
    return this.decodeAt(c);
  }

  /** Decodes the mapping at c.pos (no separator there) into `c`; how many fields it had. */
  private decodeAt(c: Cursor): number {
    c.column += this.vlq(c);
    if (this.atEnd(c)) return 1;
    c.source += this.vlq(c);
    c.srcLine += this.vlq(c);
    c.srcColumn += this.vlq(c);
    if (this.atEnd(c)) return 4;
    c.name += this.vlq(c);
    return 5;
  }

  private atEnd(c: Cursor): boolean {
    const ch = this.mappings.charCodeAt(c.pos);
    return c.pos >= this.mappings.length || ch === COMMA || ch === SEMICOLON;
  }

  /** One base64 VLQ value at c.pos (c.pos moves past it); 0 for a malformed one. */
  private vlq(c: Cursor): number {
    const s = this.mappings;
    let value = 0;
    let shift = 0;
    for (;;) {
      if (c.pos >= s.length) return 0;
      const code = s.charCodeAt(c.pos++);
      const digit = code < 128 ? BASE64[code] : -1;
      if (digit < 0) return 0;
      value += (digit & 31) * 2 ** shift;
      shift += 5;
      if ((digit & 32) === 0 || shift > 30) break;
    }
    const magnitude = Math.floor(value / 2);
    return value % 2 === 1 ? -magnitude : magnitude;
  }
}

// ---------------------------------------------------------------- index files

/** The first bytes of an index file (version 1). */
const INDEX_MAGIC = 'OMSMIDX1';
/** Where the map's mappings string is in the map file, its sources, and the checkpoints of its mappings. */
export interface IndexFile {
  /** The map file's size: an index of another map is not used. */
  mapBytes: number;
  /** Byte offset and length of the mappings string's contents in the map file (base64 and separators: one byte a character). */
  mappingsOffset: number;
  mappingsLength: number;
  sources: string[];
  checkpoints: Int32Array;
}
/** The key of the mappings in the map file; then a colon and the string, with JSON's white space around the colon. */
const MAPPINGS_KEY = '"mappings"';
const JSON_SPACE = [0x20, 0x09, 0x0a, 0x0d];
const COLON = 0x3a;
/** The host's byte order is the file's (checkpoints copied whole, not read one by one). */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
const QUOTE = 0x22;

/** The index file's bytes: magic, header length (u32 LE), header JSON, zero padding to 4 bytes, checkpoints (i32 LE). */
export function encodeIndexFile(f: IndexFile): Buffer {
  const header = Buffer.from(JSON.stringify({ mapBytes: f.mapBytes, mappingsOffset: f.mappingsOffset, mappingsLength: f.mappingsLength, sources: f.sources, checkpoints: f.checkpoints.length }));
  const at = align4(INDEX_MAGIC.length + 4 + header.length);
  const out = Buffer.alloc(at + f.checkpoints.length * 4);
  out.write(INDEX_MAGIC, 0, 'latin1');
  out.writeUInt32LE(header.length, INDEX_MAGIC.length);
  header.copy(out, INDEX_MAGIC.length + 4);
  if (LITTLE_ENDIAN) out.set(new Uint8Array(f.checkpoints.buffer, f.checkpoints.byteOffset, f.checkpoints.byteLength), at);
  else for (let i = 0; i < f.checkpoints.length; i++) out.writeInt32LE(f.checkpoints[i], at + i * 4);
  return out;
}

/** An index file's contents; undefined when the bytes are not one (damaged, truncated, another version). */
export function decodeIndexFile(b: Uint8Array): IndexFile | undefined {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  if (buf.length < INDEX_MAGIC.length + 4 || buf.toString('latin1', 0, INDEX_MAGIC.length) !== INDEX_MAGIC) return undefined;
  const headerBytes = buf.readUInt32LE(INDEX_MAGIC.length);
  const at = align4(INDEX_MAGIC.length + 4 + headerBytes);
  if (at > buf.length) return undefined;
  let h: unknown;
  try {
    h = JSON.parse(buf.toString('utf8', INDEX_MAGIC.length + 4, INDEX_MAGIC.length + 4 + headerBytes));
  } catch {
    return undefined;
  }
  const o = h as Partial<Record<'mapBytes' | 'mappingsOffset' | 'mappingsLength' | 'checkpoints', unknown>> & { sources?: unknown };
  const ints = [o.mapBytes, o.mappingsOffset, o.mappingsLength, o.checkpoints];
  if (!ints.every((v) => Number.isSafeInteger(v) && (v as number) >= 0) || !Array.isArray(o.sources) || !o.sources.every((x) => typeof x === 'string')) return undefined;
  const count = o.checkpoints as number;
  if (count % STRIDE !== 0 || at + count * 4 !== buf.length) return undefined;
  const checkpoints = new Int32Array(count);
  if (LITTLE_ENDIAN) new Uint8Array(checkpoints.buffer).set(buf.subarray(at, at + count * 4));
  else for (let i = 0; i < count; i++) checkpoints[i] = buf.readInt32LE(at + i * 4);
  return { mapBytes: o.mapBytes as number, mappingsOffset: o.mappingsOffset as number, mappingsLength: o.mappingsLength as number, sources: o.sources as string[], checkpoints };
}

/** Where the mappings string's contents are in `map` (a map file's bytes, JSON text: the key `"mappings"`, a colon, the string); undefined when it has none. */
export function findMappings(map: Uint8Array): { offset: number; length: number } | undefined {
  const buf = Buffer.from(map.buffer, map.byteOffset, map.byteLength);
  const key = buf.indexOf(MAPPINGS_KEY, 0, 'latin1');
  if (key < 0) return undefined;
  let at = key + MAPPINGS_KEY.length;
  const skipSpace = () => {
    while (at < buf.length && JSON_SPACE.includes(buf[at])) at++;
  };
  skipSpace();
  if (buf[at++] !== COLON) return undefined;
  skipSpace();
  if (buf[at++] !== QUOTE) return undefined;
  const end = buf.indexOf(QUOTE, at);
  return end < 0 ? undefined : { offset: at, length: end - at };
}

/** The index of `map` (a map file's bytes) from its index file; undefined when `index` is not one, or is another map's. */
export function indexFromFile(map: Uint8Array, index: Uint8Array): SourceMapIndex | undefined {
  const f = decodeIndexFile(index);
  const where = findMappings(map);
  if (!f || !where || f.mapBytes !== map.byteLength || where.offset !== f.mappingsOffset || where.length !== f.mappingsLength) return undefined;
  const mappings = Buffer.from(map.buffer, map.byteOffset, map.byteLength).toString('latin1', where.offset, where.offset + where.length);
  return new SourceMapIndex(mappings, f.sources, f.checkpoints);
}

function align4(n: number): number {
  return (n + 3) & ~3;
}
