// The kv records of ClusterState, in key order, in pages (issue 12: state that scales).
//
// A page holds up to PAGE_MAX_KEYS consecutive keys (and about PAGE_MAX_BYTES) in columns: their
// keys; their numbers (version, createIndex, modIndex, sizeBytes, flags); and the values kept in
// memory. A value that lives on disk only (spilled, see StateOptions in state.ts) has nothing
// here but its flag: a compare on it reads it from disk (ClusterState.apply asks for it). Not an
// object per record: a record with a spilled value costs its key string and a few array slots
// (about 90 bytes with a 20-character key on 64-bit V8, against ~235 for a Map of objects with a
// hex hash of the value and a B-tree of the keys), and a page is a handful of objects whatever
// its size.
//
// A page is also the unit on disk: row `i/<page id>` holds a header line
// `[1, count, sizeBytes sum, first key, last key]` and the page's columns as JSON
// (`[keys, numbers, values]`), so a node starts by reading a few thousand rows instead
// of one row per key. A page read from disk stays closed — its row text, checked against the
// header of its neighbours — until a record in it is first asked for: then its columns are
// parsed and checked (CorruptPageError if they do not hold). So a start costs a few thousand
// header lines, not half a million records. Pages changed since the last takeDirty() are
// written again whole; a page that merges into its neighbour or empties is deleted. Page ids
// are local: two replicas with the same records may page them differently (a snapshot streams
// the leader's pages; the follower goes on from them).
//
// Pure: no I/O. A row that does not hold at load is an InvalidFieldError (the caller makes it
// StateRestoreError).
import { InvalidFieldError, readKvKey, readKvValue, readSafeInt } from './commands.js';

/** A kv record as the state keeps it: with its value, or without (spilled: on disk only). */
export interface KvEntry {
  key: string;
  version: number;
  createIndex: number;
  modIndex: number;
  /** Bytes the record counts in the state. */
  sizeBytes: number;
  /** The value; undefined when it is on disk only. */
  value?: string;
}

/** Most keys in a page; a page over it splits. */
export const PAGE_MAX_KEYS = 64;
/** About the most bytes of keys and in-memory values in a page; one record may exceed it alone. */
export const PAGE_MAX_BYTES = 16 * 1024;
/** A page this small after a delete merges into its next page when both fit in one. */
const PAGE_MERGE_KEYS = PAGE_MAX_KEYS / 4;
/** Keys per page when pages are written from scratch (rows()): room to grow before a split. */
const PAGE_FILL_KEYS = PAGE_MAX_KEYS / 2;
export const PAGE_ROW_PREFIX = 'i/';
const PAGE_FORMAT = 1;
/** Numbers per record: version, createIndex, modIndex, sizeBytes, flags. */
const STRIDE = 5;
const SPILLED = 1;
/** Bytes a record counts towards PAGE_MAX_BYTES besides its key and value. */
const ENTRY_OVERHEAD_BYTES = 24;
/** Largest page id: ids are safe integers written in base 36. */
const MAX_PAGE_ID = Number.MAX_SAFE_INTEGER;
/**
 * Pages kept open (parsed) at most; the least recently used beyond are closed again (back to their
 * row text). An open page costs ~120 bytes a record in the V8 heap (key strings, key and number
 * arrays), its text ~55: with every page left open, 524,288 keys of bench:state held ~65 MiB of
 * columns, and V8 commits about twice its live heap.
 */
export const DEFAULT_MAX_OPEN_PAGES = 1024;

/** A stored page whose columns do not hold (found when it is opened, after the start). */
export class CorruptPageError extends Error {
  readonly code = 'STATE_CORRUPT';
  constructor(row: string, why: string) {
    super(`kv page ${row} is corrupt: ${why}`);
    this.name = 'CorruptPageError';
  }
}

/** A page: read from a row (KvIndex.readPage; closed until used) or built in memory (open). */
export interface Page {
  id: number;
  /** The row (its text, or its UTF-8 bytes as read) while the page is closed; undefined once open. */
  text: string | Uint8Array | undefined;
  /** Closed by this index (its text written here from open columns): reopened without checking each record. */
  trusted?: boolean;
  /** Of a closed page, from its header (an open page reads its columns). */
  count: number;
  first: string;
  last: string;
  sizeSum: number;
  /** The columns of an open page (empty while closed): keys, STRIDE numbers per key. */
  keys: string[];
  nums: number[];
  /** The values kept in memory, in key order (the records not spilled). */
  vals: string[];
  /** Approximate bytes of an open page (see entryBytes). */
  bytes: number;
}

const entryBytes = (key: string, val: string): number => key.length + val.length + ENTRY_OVERHEAD_BYTES;
const isSpilled = (p: Page, i: number): boolean => (p.nums[i * STRIDE + 4] & SPILLED) !== 0;
const firstKey = (p: Page): string => (p.text === undefined ? p.keys[0] : p.first);
export const pageRow = (id: number): string => `${PAGE_ROW_PREFIX}${id.toString(36)}`;

/** How many records before slot i are spilled (have no value in p.vals). */
function spilledBefore(p: Page, i: number): number {
  let n = 0;
  for (let j = 0; j < i; j++) if (p.nums[j * STRIDE + 4] & SPILLED) n++;
  return n;
}

/** The value of slot i ('' when spilled). */
function valAt(p: Page, i: number): string {
  return isSpilled(p, i) ? '' : p.vals[i - spilledBefore(p, i)];
}

/** Removes slot i's value (before its numbers go). */
function removeVal(p: Page, i: number): void {
  if (!isSpilled(p, i)) p.vals.splice(i - spilledBefore(p, i), 1);
}

/** Inserts slot i's value (its numbers, with the flag, already in place). */
function insertVal(p: Page, i: number, val: string): void {
  if (!isSpilled(p, i)) p.vals.splice(i - spilledBefore(p, i), 0, val);
}

/** Keys in UTF-16 code unit order (the order of a prefix scan). */
export function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The first index i with keys[i] >= key. */
export function lowerBound(keys: readonly string[], key: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (keys[mid] < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function entryAt(p: Page, i: number): KvEntry {
  const n = i * STRIDE;
  const e: KvEntry = { key: p.keys[i], version: p.nums[n], createIndex: p.nums[n + 1], modIndex: p.nums[n + 2], sizeBytes: p.nums[n + 3] };
  if (!isSpilled(p, i)) e.value = valAt(p, i);
  return e;
}

const valOf = (e: KvEntry): string => e.value ?? '';

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const NEWLINE = 10;

/** Text of a page row as read (strict UTF-8). */
const rowText = (t: string | Uint8Array): string => (typeof t === 'string' ? t : UTF8.decode(t));

/** The sum of the sizeBytes column of a page's numbers. */
function sizeSumOf(nums: readonly number[]): number {
  let sum = 0;
  for (let n = 3; n < nums.length; n += STRIDE) sum += nums[n];
  return sum;
}

/** The row text of a page: its header line, then its columns. */
function encodePage(p: Page): string {
  if (p.text !== undefined) return rowText(p.text);
  const header = JSON.stringify([PAGE_FORMAT, p.keys.length, sizeSumOf(p.nums), p.keys[0], p.keys[p.keys.length - 1]]);
  return `${header}\n${JSON.stringify([p.keys, p.nums, p.vals])}`;
}

function openPage(keys: string[], nums: number[], vals: string[], id = 0): Page {
  const p: Page = { id, text: undefined, count: 0, first: '', last: '', sizeSum: 0, keys, nums, vals, bytes: 0 };
  for (let i = 0; i < keys.length; i++) p.bytes += entryBytes(keys[i], valAt(p, i));
  return p;
}

export class KvIndex {
  /** Pages in key order; none is empty. */
  #pages: Page[] = [];
  /** The open pages, least recently used first. */
  readonly #openPages = new Set<Page>();
  readonly #maxOpenPages: number;
  #size = 0;
  #nextId = 1;
  /** The applied index the closed pages were read at: none of their records is newer. */
  #readAt = 0;
  readonly #dirty = new Set<Page>();
  readonly #removed = new Set<number>();

  /** `maxOpenPages`: pages kept parsed between operations (at least 1). */
  constructor(maxOpenPages = DEFAULT_MAX_OPEN_PAGES) {
    this.#maxOpenPages = Math.max(1, Math.floor(maxOpenPages));
  }

  get size(): number {
    return this.#size;
  }

  /** The index of the page that holds key or would (the last whose first key is <= key). */
  #pageFor(key: string): number {
    const pages = this.#pages;
    let lo = 0;
    let hi = pages.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (firstKey(pages[mid]) <= key) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** The open page at `at` (a closed one is parsed and checked first). */
  #open(at: number): Page {
    const p = this.#pages[at];
    if (p.text === undefined) {
      this.#used(p);
      return p;
    }
    const row = pageRow(p.id);
    let cols: Pick<Page, 'keys' | 'nums' | 'vals' | 'bytes'>;
    try {
      const t = p.text;
      const body = typeof t === 'string' ? t.slice(t.indexOf('\n') + 1) : UTF8.decode(t.subarray(t.indexOf(NEWLINE) + 1));
      cols = p.trusted ? trustedColumns(body) : readColumns(row, body, this.#readAt);
    } catch (err) {
      throw new CorruptPageError(row, (err as Error).message);
    }
    if (cols.keys.length !== p.count || cols.keys[0] !== p.first || cols.keys[cols.keys.length - 1] !== p.last || sizeSumOf(cols.nums) !== p.sizeSum) {
      throw new CorruptPageError(row, 'its records do not match its header');
    }
    Object.assign(p, cols, { text: undefined, first: '', last: '', trusted: false });
    this.#used(p);
    return p;
  }

  /** Marks an open page most recently used. */
  #used(p: Page): void {
    this.#openPages.delete(p);
    this.#openPages.add(p);
  }

  /**
   * Closes the least recently used open pages beyond the bound. Called where no page is held
   * (before an operation, between the steps of an iteration): an operation may open a few more
   * (a split, a merge) until the next one.
   */
  #trim(): void {
    const open = this.#openPages;
    while (open.size > this.#maxOpenPages) {
      const coldest = open.values().next().value!;
      open.delete(coldest);
      this.#close(coldest);
    }
  }

  /** An open page back to its row text (written again from its columns; it stays dirty if it was). */
  #close(p: Page): void {
    const text = encodePage(p);
    Object.assign(p, { text, trusted: true, count: p.keys.length, first: p.keys[0], last: p.keys[p.keys.length - 1], sizeSum: sizeSumOf(p.nums), keys: [], nums: [], vals: [], bytes: 0 });
  }

  /** The page and slot of key, when it is there. */
  #find(key: string): [Page, number] | undefined {
    if (this.#pages.length === 0) return undefined;
    this.#trim();
    const p = this.#open(this.#pageFor(key));
    const i = lowerBound(p.keys, key);
    return i < p.keys.length && p.keys[i] === key ? [p, i] : undefined;
  }

  get(key: string): KvEntry | undefined {
    const at = this.#find(key);
    return at && entryAt(at[0], at[1]);
  }

  has(key: string): boolean {
    return this.#find(key) !== undefined;
  }

  /** Inserts the record, or replaces the one with its key. */
  set(e: KvEntry): void {
    const val = valOf(e);
    const flags = e.value === undefined ? SPILLED : 0;
    if (this.#pages.length === 0) {
      this.#pages.push(this.#newPage(openPage([e.key], [e.version, e.createIndex, e.modIndex, e.sizeBytes, flags], flags ? [] : [val])));
      this.#size = 1;
      return;
    }
    this.#trim();
    const at = this.#pageFor(e.key);
    const p = this.#open(at);
    const i = lowerBound(p.keys, e.key);
    this.#dirty.add(p);
    if (i < p.keys.length && p.keys[i] === e.key) {
      const n = i * STRIDE;
      p.bytes += entryBytes(e.key, val) - entryBytes(e.key, valAt(p, i));
      removeVal(p, i);
      p.nums[n] = e.version;
      p.nums[n + 1] = e.createIndex;
      p.nums[n + 2] = e.modIndex;
      p.nums[n + 3] = e.sizeBytes;
      p.nums[n + 4] = flags;
      insertVal(p, i, val);
    } else {
      p.keys.splice(i, 0, e.key);
      p.nums.splice(i * STRIDE, 0, e.version, e.createIndex, e.modIndex, e.sizeBytes, flags);
      insertVal(p, i, val);
      p.bytes += entryBytes(e.key, val);
      this.#size++;
    }
    if (p.keys.length > PAGE_MAX_KEYS || (p.bytes > PAGE_MAX_BYTES && p.keys.length > 1)) this.#split(at, i);
  }

  delete(key: string): boolean {
    if (this.#pages.length === 0) return false;
    this.#trim();
    const at = this.#pageFor(key);
    const p = this.#open(at);
    const i = lowerBound(p.keys, key);
    if (i >= p.keys.length || p.keys[i] !== key) return false;
    p.bytes -= entryBytes(key, valAt(p, i));
    removeVal(p, i);
    p.keys.splice(i, 1);
    p.nums.splice(i * STRIDE, STRIDE);
    this.#size--;
    if (p.keys.length === 0) {
      this.#dropPage(at);
      return true;
    }
    this.#dirty.add(p);
    if (p.keys.length < PAGE_MERGE_KEYS) {
      // A small page joins its next or previous neighbour when both fit in one.
      if (!(at + 1 < this.#pages.length && this.#merge(at))) if (at > 0) this.#merge(at - 1);
    }
    return true;
  }

  /** Moves the page after `at` into it when both fit in one (both open then); whether it did. */
  #merge(at: number): boolean {
    const p = this.#open(at);
    const next = this.#open(at + 1);
    if (p.keys.length + next.keys.length > PAGE_FILL_KEYS + PAGE_MERGE_KEYS || p.bytes + next.bytes > PAGE_MAX_BYTES / 2) return false;
    p.keys.push(...next.keys);
    for (const n of next.nums) p.nums.push(n);
    p.vals.push(...next.vals);
    p.bytes += next.bytes;
    this.#dirty.add(p);
    this.#dropPage(at + 1);
    return true;
  }

  /** Keys from `from` on (all keys without it), in UTF-16 code unit order. */
  *keys(from = ''): IterableIterator<string> {
    for (const [p, i] of this.#positions(from)) yield p.keys[i];
  }

  /** Records from `from` on, in key order (fresh objects). */
  *entries(from = ''): IterableIterator<KvEntry> {
    for (const [p, i] of this.#positions(from)) yield entryAt(p, i);
  }

  *#positions(from: string): IterableIterator<[Page, number]> {
    if (this.#pages.length === 0) return;
    let at = this.#pageFor(from);
    let i = lowerBound(this.#open(at).keys, from);
    // Pages may change between yields (a caller that writes while it reads): follow keys, not slots.
    while (at < this.#pages.length) {
      this.#trim();
      const p = this.#open(at);
      if (i >= p.keys.length) {
        at++;
        i = 0;
        continue;
      }
      const last = p.keys[i];
      yield [p, i];
      if (this.#pages[at] !== p || p.keys[i] !== last) {
        if (this.#pages.length === 0) return;
        at = this.#pageFor(last);
        const q = this.#open(at);
        i = lowerBound(q.keys, last);
        if (i < q.keys.length && q.keys[i] === last) i++;
        continue;
      }
      i++;
    }
  }

  /** The sum of the records' sizeBytes (closed pages: as their headers say). */
  sumSizeBytes(): number {
    let sum = 0;
    for (const p of this.#pages) {
      sum += p.text !== undefined ? p.sizeSum : sizeSumOf(p.nums);
    }
    return sum;
  }

  /** Pages held, and how many of them are open (parsed; at most the bound given to the constructor). */
  pageCounts(): { pages: number; open: number } {
    return { pages: this.#pages.length, open: this.#pages.filter((p) => p.text === undefined).length };
  }

  /** Whether pages changed since the last takeDirty(). */
  get hasDirty(): boolean {
    return this.#dirty.size > 0 || this.#removed.size > 0;
  }

  /** Every page counts as changed (to write them all, e.g. converting rows of an older format). */
  markAllDirty(): void {
    for (const p of this.#pages) this.#dirty.add(p);
  }

  /** The page rows changed since the last call (null: the page is gone), and forgets them. */
  takeDirty(out: Map<string, string | null> = new Map()): Map<string, string | null> {
    for (const id of this.#removed) out.set(pageRow(id), null);
    for (const p of this.#dirty) out.set(pageRow(p.id), encodePage(p));
    this.#removed.clear();
    this.#dirty.clear();
    return out;
  }

  /** Forgets what changed (the pages are as stored). */
  clearDirty(): void {
    this.#removed.clear();
    this.#dirty.clear();
  }

  /** Page rows of records given in key order, written from scratch (PAGE_FILL_KEYS per page). */
  static *pageRows(entries: Iterable<KvEntry>): IterableIterator<[string, string]> {
    let id = 1;
    let p: Page | undefined;
    for (const e of entries) {
      const val = valOf(e);
      if (!p || p.keys.length >= PAGE_FILL_KEYS || (p.bytes + entryBytes(e.key, val) > PAGE_MAX_BYTES / 2 && p.keys.length > 0)) {
        if (p) yield [pageRow(p.id), encodePage(p)];
        p = openPage([], [], [], id++);
      }
      p.keys.push(e.key);
      p.nums.push(e.version, e.createIndex, e.modIndex, e.sizeBytes, e.value === undefined ? SPILLED : 0);
      if (e.value !== undefined) p.vals.push(val);
      p.bytes += entryBytes(e.key, val);
    }
    if (p) yield [pageRow(p.id), encodePage(p)];
  }

  /**
   * A page row as read from disk, closed: only its id and header line are checked here (the
   * rest when it is opened, see #open). Throws InvalidFieldError.
   */
  static readPage(row: string, text: string | Uint8Array): Page {
    const idText = row.slice(PAGE_ROW_PREFIX.length);
    const id = /^[0-9a-z]{1,11}$/.test(idText) ? parseInt(idText, 36) : NaN;
    if (!row.startsWith(PAGE_ROW_PREFIX) || !(id >= 1 && id <= MAX_PAGE_ID) || pageRow(id) !== row) throw new InvalidFieldError(row, 'not a page row');
    let header: unknown;
    try {
      const nl = typeof text === 'string' ? text.indexOf('\n') : text.indexOf(NEWLINE);
      if (nl > 0) header = JSON.parse(typeof text === 'string' ? text.slice(0, nl) : UTF8.decode(text.subarray(0, nl)));
    } catch {
      header = undefined;
    }
    if (!Array.isArray(header) || header.length !== 5 || header[0] !== PAGE_FORMAT) throw new InvalidFieldError(row, `must start with a line [${PAGE_FORMAT}, count, sizeBytes, first key, last key]`);
    const count = readSafeInt(header[1], `${row}.count`, 1);
    if (count > PAGE_MAX_KEYS) throw new InvalidFieldError(`${row}.count`, `must be at most ${PAGE_MAX_KEYS}`);
    const sizeSum = readSafeInt(header[2], `${row}.sizeBytes`, count);
    const first = readKvKey(header[3], `${row}.first`);
    const last = readKvKey(header[4], `${row}.last`);
    if (count === 1 ? first !== last : !(first < last)) throw new InvalidFieldError(`${row}.last`, 'must follow the first key (be it, in a page of one record)');
    return { id, text, count, first, last, sizeSum, keys: [], nums: [], vals: [], bytes: 0 };
  }

  /**
   * The index of pages read at applied index `readAt` (any order): no record in them is newer.
   * Throws InvalidFieldError when two pages share an id or their key ranges overlap.
   */
  static fromRead(pages: Page[], readAt: number, maxOpenPages = DEFAULT_MAX_OPEN_PAGES): KvIndex {
    const index = new KvIndex(maxOpenPages);
    index.#readAt = readAt;
    pages.sort((a, b) => (firstKey(a) < firstKey(b) ? -1 : firstKey(a) > firstKey(b) ? 1 : 0));
    const ids = new Set<number>();
    let size = 0;
    for (let j = 0; j < pages.length; j++) {
      const p = pages[j];
      if (ids.has(p.id)) throw new InvalidFieldError(pageRow(p.id), 'page id used twice');
      ids.add(p.id);
      if (j > 0 && !(pages[j - 1].last < p.first)) throw new InvalidFieldError(pageRow(p.id), `its keys overlap those of page ${pageRow(pages[j - 1].id)}`);
      size += p.count;
      if (p.id >= index.#nextId) index.#nextId = p.id + 1;
    }
    index.#pages = pages;
    index.#size = size;
    return index;
  }

  /** Opens every page now (checks every record; tests). Pages beyond the bound are closed again as it goes. */
  openAll(): void {
    for (let at = 0; at < this.#pages.length; at++) {
      this.#trim();
      this.#open(at);
    }
  }

  #newPage(p: Page): Page {
    if (this.#nextId > MAX_PAGE_ID) throw new Error('kv index: page ids exhausted');
    p.id = this.#nextId++;
    this.#dirty.add(p);
    this.#used(p);
    return p;
  }

  /** Splits the open page at `at` (just changed at slot `i`) until every part is within the bounds. */
  #split(at: number, i: number): void {
    const p = this.#pages[at];
    let cut: number;
    if (p.keys.length > PAGE_MAX_KEYS && i === p.keys.length - 1) {
      // Appending in key order (the common case: increasing keys): the new key starts a page,
      // so pages written in order end up full rather than half full.
      cut = i;
    } else {
      // By bytes when over the byte bound, else by count: the halves hold about the same.
      cut = p.keys.length >>> 1;
      if (p.bytes > PAGE_MAX_BYTES) {
        let acc = 0;
        for (cut = 0; cut < p.keys.length - 1; cut++) {
          acc += entryBytes(p.keys[cut], valAt(p, cut));
          if (acc >= p.bytes / 2) break;
        }
        cut = Math.max(1, Math.min(p.keys.length - 1, cut + 1));
      }
    }
    const spilled = spilledBefore(p, cut);
    const q = this.#newPage(openPage(p.keys.splice(cut), p.nums.splice(cut * STRIDE), p.vals.splice(cut - spilled)));
    p.bytes -= q.bytes;
    this.#pages.splice(at + 1, 0, q);
    // Only possible by bytes (a count split halves a page of PAGE_MAX_KEYS + 1): q first, so p stays at `at`.
    if (q.keys.length > 1 && q.bytes > PAGE_MAX_BYTES) this.#split(at + 1, -1);
    if (p.keys.length > 1 && p.bytes > PAGE_MAX_BYTES) this.#split(at, -1);
  }

  #dropPage(at: number): void {
    const [p] = this.#pages.splice(at, 1);
    this.#dirty.delete(p);
    this.#openPages.delete(p);
    this.#removed.add(p.id);
  }
}

/** The columns of a page this index closed itself (written by encodePage from checked columns). */
function trustedColumns(text: string): Pick<Page, 'keys' | 'nums' | 'vals' | 'bytes'> {
  const [keys, nums, vals] = JSON.parse(text) as [string[], number[], string[]];
  let bytes = 0;
  let v = 0;
  for (let i = 0; i < keys.length; i++) bytes += entryBytes(keys[i], nums[i * STRIDE + 4] & SPILLED ? '' : vals[v++]);
  return { keys, nums, vals, bytes };
}

/** The columns of a page row's second line, every record checked (InvalidFieldError). */
function readColumns(row: string, text: string, applied: number): Pick<Page, 'keys' | 'nums' | 'vals' | 'bytes'> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new InvalidFieldError(row, 'not valid JSON');
  }
  if (!Array.isArray(doc) || doc.length !== 3) throw new InvalidFieldError(row, 'must be [keys, numbers, values]');
  const [keys, nums, vals] = doc as [unknown, unknown, unknown];
  if (!Array.isArray(keys) || !Array.isArray(nums) || !Array.isArray(vals)) throw new InvalidFieldError(row, 'keys, numbers and values must be arrays');
  const count = keys.length;
  if (count === 0 || count > PAGE_MAX_KEYS || nums.length !== count * STRIDE) {
    throw new InvalidFieldError(row, `must hold 1 to ${PAGE_MAX_KEYS} records, ${STRIDE} numbers each`);
  }
  let bytes = 0;
  let spilled = 0;
  for (let i = 0; i < count; i++) {
    const path = `${row}[${i}]`;
    const key = readKvKey(keys[i], `${path}.key`);
    if (i > 0 && !((keys[i - 1] as string) < key)) throw new InvalidFieldError(`${path}.key`, 'keys must be in order, each once');
    const n = i * STRIDE;
    readSafeInt(nums[n], `${path}.version`, 1);
    const createIndex = readSafeInt(nums[n + 1], `${path}.createIndex`, 1);
    const modIndex = readSafeInt(nums[n + 2], `${path}.modIndex`, createIndex);
    if (modIndex > applied) throw new InvalidFieldError(`${path}.modIndex`, `must be from ${createIndex} to the applied index ${applied}`);
    readSafeInt(nums[n + 3], `${path}.sizeBytes`, 1);
    const flags = nums[n + 4];
    if (flags !== 0 && flags !== SPILLED) throw new InvalidFieldError(`${path}.flags`, 'must be 0 or 1');
    if (flags & SPILLED) {
      spilled++;
      bytes += entryBytes(key, '');
    } else {
      if (i - spilled >= vals.length) throw new InvalidFieldError(`${path}.value`, 'missing');
      bytes += entryBytes(key, readKvValue(vals[i - spilled], `${path}.value`));
    }
  }
  if (vals.length !== count - spilled) throw new InvalidFieldError(row, 'one value per record kept in memory');
  return { keys: keys as string[], nums: nums as number[], vals: vals as string[], bytes };
}
