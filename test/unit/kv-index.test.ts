// Issue 12: the kv records in pages (protocol/cluster/kv-index.ts) — the same records as a
// sorted map whatever the order of writes, pages within their bounds, written and read back
// as rows (closed until used), and rows that do not hold refused.
import { describe, expect, it } from 'vitest';
import { CorruptPageError, KvIndex, PAGE_MAX_KEYS, PAGE_ROW_PREFIX, type KvEntry } from '../../protocol/cluster/kv-index.js';
import { seededRng, type Rng } from '../../protocol/rng.js';
import { sealRecord, sealText, unsealRecord } from '../../node/raft/storage-integrity.js';

const utf8 = new TextEncoder();

function entry(rng: Rng, key: string, index: number): KvEntry {
  const base = { key, version: 1 + rng.int(5), createIndex: index, modIndex: index, sizeBytes: 10 + rng.int(3000) };
  const kind = rng.int(10);
  // Mostly spilled (no value), some values in memory, a few large enough to split pages by bytes.
  if (kind < 6) return base;
  if (kind < 9) return { ...base, value: `v${index}`.repeat(1 + rng.int(4)) };
  return { ...base, value: 'L'.repeat(3000 + rng.int(9000)) };
}

/** Replays page rows into a "disk" map the way a store applies saveState batches. */
function applyRows(disk: Map<string, string>, rows: Map<string, string | null>): void {
  for (const [row, v] of rows) (v === null ? disk.delete(row) : disk.set(row, v));
}

function readBack(disk: Map<string, string>, readAt: number, asBytes = false, maxOpenPages?: number): KvIndex {
  const pages = [...disk].map(([row, text]) => KvIndex.readPage(row, asBytes ? utf8.encode(text) : text));
  return KvIndex.fromRead(pages, readAt, maxOpenPages);
}

const sorted = (m: Map<string, KvEntry>): KvEntry[] => [...m.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));

describe('KvIndex', () => {
  it.each([undefined, 1, 3])('holds the same records as a sorted map through random writes and deletes, on disk too (open pages at most %s)', (maxOpen) => {
    for (const seed of [1, 2, 3, 4]) {
      const rng = seededRng(seed);
      const index = new KvIndex(maxOpen);
      const ref = new Map<string, KvEntry>();
      const disk = new Map<string, string>();
      // Sequential keys (appends), random keys, and a small key space with many rewrites.
      const keyOf = (i: number): string => (seed === 1 ? `seq/${String(i).padStart(6, '0')}` : seed === 2 ? `k${rng.int(300)}` : `r/${rng.int(100_000)}/${'x'.repeat(rng.int(5))}`);
      for (let i = 1; i <= 3000; i++) {
        const key = keyOf(i);
        if (ref.size > 0 && rng.int(4) === 0) {
          const victim = rng.int(2) === 0 ? key : [...ref.keys()][rng.int(ref.size)];
          expect(index.delete(victim)).toBe(ref.delete(victim));
        } else {
          const e = entry(rng, key, i);
          index.set(e);
          ref.set(key, e);
        }
        if (i % 50 === 0 && maxOpen !== undefined) {
          // Between operations at most the bound is open (+1: the page this get opened).
          index.get(key);
          expect(index.pageCounts().open).toBeLessThanOrEqual(maxOpen + 1);
        }
        if (i % 250 === 0) {
          expect(index.size).toBe(ref.size);
          expect([...index.entries()]).toEqual(sorted(ref));
          applyRows(disk, index.takeDirty());
          for (const text of disk.values()) {
            const count = JSON.parse(text.slice(0, text.indexOf('\n')))[1] as number;
            expect(count).toBeGreaterThan(0);
            expect(count).toBeLessThanOrEqual(PAGE_MAX_KEYS);
          }
          const again = readBack(disk, i, i % 500 === 0, maxOpen);
          expect(again.size).toBe(ref.size);
          expect(again.sumSizeBytes()).toBe([...ref.values()].reduce((s, e) => s + e.sizeBytes, 0));
          expect(again.pageCounts().open).toBe(0);
          expect([...again.entries()]).toEqual(sorted(ref));
        }
      }
      // A prefix scan starts at the prefix and goes on in order.
      const from = sorted(ref)[Math.floor(ref.size / 2)].key;
      expect([...index.keys(from)]).toEqual(sorted(ref).map((e) => e.key).filter((k) => k >= from));
    }
  });

  it('a page read from disk stays closed until a record in it is used, and changes from there on', () => {
    const index = new KvIndex();
    for (let i = 0; i < 1000; i++) index.set({ key: `k/${String(i).padStart(4, '0')}`, version: 1, createIndex: i + 1, modIndex: i + 1, sizeBytes: 100 });
    const disk = new Map<string, string>();
    applyRows(disk, index.takeDirty());
    // Appends in key order fill their pages.
    expect(disk.size).toBe(Math.ceil(1000 / PAGE_MAX_KEYS));
    const again = readBack(disk, 1000, true);
    expect(again.pageCounts()).toEqual({ pages: disk.size, open: 0 });
    expect(again.get('k/0500')).toEqual({ key: 'k/0500', version: 1, createIndex: 501, modIndex: 501, sizeBytes: 100 });
    expect(again.pageCounts().open).toBe(1);
    again.set({ key: 'k/0500', version: 2, createIndex: 501, modIndex: 1001, sizeBytes: 7, value: 'small' });
    again.delete('k/0999');
    const changed = again.takeDirty();
    expect([...changed.keys()].every((r) => r.startsWith(PAGE_ROW_PREFIX))).toBe(true);
    expect(changed.size).toBe(2);
    applyRows(disk, changed);
    const third = readBack(disk, 1001);
    expect(third.get('k/0500')?.value).toBe('small');
    expect(third.has('k/0999')).toBe(false);
    expect(third.size).toBe(999);
  });

  it('pages beyond the bound are closed back to text, and reopen with the records written after the disk was read', () => {
    const index = new KvIndex();
    for (let i = 0; i < 640; i++) index.set({ key: `c/${String(i).padStart(4, '0')}`, version: 1, createIndex: i + 1, modIndex: i + 1, sizeBytes: 100 });
    const disk = new Map<string, string>();
    applyRows(disk, index.takeDirty());
    const again = readBack(disk, 640, false, 2);
    // Newer than the index the pages were read at (a closed page read from disk would refuse it).
    again.set({ key: 'c/0005', version: 2, createIndex: 6, modIndex: 700, sizeBytes: 9, value: 'fresh' });
    again.set({ key: 'c/0005x', version: 1, createIndex: 701, modIndex: 701, sizeBytes: 9 });
    for (const k of ['c/0100', 'c/0200', 'c/0300', 'c/0400']) expect(again.get(k)?.key).toBe(k);
    expect(again.pageCounts().open).toBeLessThanOrEqual(3);
    expect(again.get('c/0005')).toEqual({ key: 'c/0005', version: 2, createIndex: 6, modIndex: 700, sizeBytes: 9, value: 'fresh' });
    expect(again.has('c/0005x')).toBe(true);
    // The changed pages (the full first page split in two) were closed while dirty: their rows are still written, and read back the same.
    for (const k of ['c/0600', 'c/0500', 'c/0400']) again.get(k);
    expect(again.pageCounts().open).toBeLessThanOrEqual(3);
    const changed = again.takeDirty();
    expect(changed.size).toBe(2);
    applyRows(disk, changed);
    const third = readBack(disk, 701);
    expect([...third.entries()]).toEqual([...again.entries()]);
    expect(third.get('c/0005x')).toMatchObject({ modIndex: 701 });
  });

  it('pages that empty go, small neighbours merge: deletes shrink the page count', () => {
    const index = new KvIndex();
    for (let i = 0; i < 2000; i++) index.set({ key: `d/${String(i).padStart(4, '0')}`, version: 1, createIndex: i + 1, modIndex: i + 1, sizeBytes: 100 });
    const before = index.pageCounts().pages;
    for (let i = 0; i < 2000; i++) if (i % 10 !== 0) index.delete(`d/${String(i).padStart(4, '0')}`);
    expect(index.size).toBe(200);
    expect(index.pageCounts().pages).toBeLessThan(before / 3);
    const rows = index.takeDirty();
    expect([...rows.values()].filter((v) => v === null).length).toBeGreaterThan(before / 2);
  });

  it('pageRows writes records from scratch in half-full pages that read back the same', () => {
    const rng = seededRng(9);
    const ref = new Map<string, KvEntry>();
    for (let i = 1; i <= 500; i++) ref.set(`p/${i}`, entry(rng, `p/${i}`, i));
    const disk = new Map(KvIndex.pageRows(sorted(ref)));
    expect(disk.size).toBeGreaterThanOrEqual(Math.ceil(500 / (PAGE_MAX_KEYS / 2)));
    expect([...readBack(disk, 500).entries()]).toEqual(sorted(ref));
  });
});

describe('KvIndex refuses rows that do not hold', () => {
  const good = (): [string, string][] => {
    const index = new KvIndex();
    index.set({ key: 'a', version: 1, createIndex: 1, modIndex: 2, sizeBytes: 9 });
    index.set({ key: 'b', version: 1, createIndex: 1, modIndex: 1, sizeBytes: 5, value: 'x' });
    return [...index.takeDirty()].map(([r, v]) => [r, v!]);
  };
  const [[row, text]] = good();
  const [header, body] = text.split('\n');

  it('at start: the row key, the header line, and pages that overlap or share an id', () => {
    expect(() => KvIndex.readPage('i/', text)).toThrow(/not a page row/);
    expect(() => KvIndex.readPage('i/01', text)).toThrow(/not a page row/);
    expect(() => KvIndex.readPage(row, body)).toThrow(/must start with a line/);
    expect(() => KvIndex.readPage(row, `[1,65,100,"a","b"]\n${body}`)).toThrow(/at most 64/);
    expect(() => KvIndex.readPage(row, `[1,2,14,"b","a"]\n${body}`)).toThrow(/follow the first key/);
    expect(() => KvIndex.readPage(row, `[1,2,14,"a\\u0001","b"]\n${body}`)).toThrow(/control/);
    expect(() => KvIndex.readPage(row, utf8.encode(`${header}\n`).subarray(0, 3))).toThrow(/must start with a line/);
    const p1 = KvIndex.readPage(row, text);
    const p2 = KvIndex.readPage('i/2', text);
    expect(() => KvIndex.fromRead([p1, p2], 5)).toThrow(/overlap/);
    const p3 = KvIndex.readPage(row, `[1,1,3,"c","c"]\n[["c"],[1,1,1,3,0],["v"]]`);
    expect(() => KvIndex.fromRead([KvIndex.readPage(row, text), p3], 5)).toThrow(/used twice/);
  });

  it('when opened: columns that do not match the header or do not hold (CorruptPageError)', () => {
    const open = (b: string, readAt = 5) => KvIndex.fromRead([KvIndex.readPage(row, `${header}\n${b}`)], readAt).get('a');
    expect(open(body)).toEqual({ key: 'a', version: 1, createIndex: 1, modIndex: 2, sizeBytes: 9 });
    expect(() => open(body, 1)).toThrow(CorruptPageError);
    expect(() => open(body, 1)).toThrow(/applied index 1/);
    expect(() => open('not json')).toThrow(/not valid JSON/);
    expect(() => open(body.replace('"b"', '"c"'))).toThrow(/do not match its header/);
    expect(() => open(body.replace('["a","b"]', '["b","a"]'))).toThrow(/in order|header/);
    expect(() => open(body.replace('[1,1,2,9,1', '[1,1,2,9,0'))).toThrow(/one value per record|missing/);
    expect(() => open(body.replace('["x"]', '[]'))).toThrow(/missing|one value/);
    expect(() => open(body.replace('[1,1,2,9,1', '[1,1,2,9,3'))).toThrow(/flags/);
    expect(() => open(body.replace('[1,1,2,9,1', '[0,1,2,9,1'))).toThrow(/version/);
    expect(() => KvIndex.fromRead([KvIndex.readPage(row, utf8.encode(text).map((b, i) => (i === utf8.encode(text).length - 3 ? 0xff : b)))], 5).get('a')).toThrow(CorruptPageError);
  });
});

describe('sealText (a state row sealed as it is encoded)', () => {
  it('is sealRecord of the text\'s UTF-8, and unseals to it', () => {
    // (Not '': node:zlib's crc32 of TextEncoder's empty output ignores the initial value; sealText's empty payload is right.)
    for (const text of ['plain', '\uFEFFbom', 'été 😀 ✓', 'x'.repeat(70_000)]) {
      const sealed = sealText('s/v/k', text);
      expect(sealed).toEqual(sealRecord('s/v/k', utf8.encode(text)));
      expect(new TextDecoder('utf-8', { ignoreBOM: true }).decode(unsealRecord('s/v/k', sealed))).toBe(text);
      expect(unsealRecord('s/v/other', sealed)).toBeUndefined();
    }
    expect(unsealRecord('s/v/k', sealText('s/v/k', ''))).toEqual(new Uint8Array(0));
  });
});
