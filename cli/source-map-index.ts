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
// Pure: no I/O. A malformed map gives wrong positions or none, never an exception from lookup().

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

  constructor(
    private readonly mappings: string,
    private readonly sources: readonly string[],
  ) {}

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
