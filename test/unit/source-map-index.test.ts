// cli/source-map-index.ts answers as node:module's SourceMap.findEntry does, for a real bundle's map
// (esbuild's, built here) and for small maps with the corners: positions before the first mapping,
// lines without mappings, negative deltas, malformed text. A mapping without a source is unmapped
// (node:module gives it the values of the mapping before it).
import { describe, expect, it } from 'vitest';
import { SourceMap } from 'node:module';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import fc from 'fast-check';
import { decodeIndexFile, encodeIndexFile, findMappings, indexFromFile, SourceMapIndex } from '../../cli/source-map-index.js';

interface MapJson {
  sources: string[];
  mappings: string;
}

/** node:module's answer in the index's shape (undefined: nothing maps there). */
function nodeAnswer(m: SourceMap, line: number, column: number): { source: string; line: number; column: number } | undefined {
  const e = m.findEntry(line, column) as { originalSource?: string; originalLine?: number; originalColumn?: number };
  if (e.originalSource === undefined) return undefined;
  return { source: e.originalSource, line: e.originalLine!, column: e.originalColumn! };
}

function mapOf(mappings: string, sources = ['a.ts', 'b.ts']): MapJson & { version: 3; names: string[] } {
  return { version: 3, sources, names: ['x', 'y'], mappings };
}

describe('source map index', () => {
  it("gives node:module's answers for a bundle's map (minified: few lines, many mappings each)", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-srcmap-'));
    try {
      // the options of scripts/build.mjs (minified: the whole bundle on a few lines)
      const { esbuildOptions } = (await import('../../scripts/build.mjs' as string)) as { esbuildOptions: (entries: Record<string, string>, outdir: string) => Parameters<typeof build>[0] };
      await build(esbuildOptions({ fixture: 'cli/omnid.ts' }, dir));
      const json = JSON.parse(await readFile(join(dir, 'fixture.cjs.map'), 'utf8')) as MapJson;
      const code = await readFile(join(dir, 'fixture.cjs'), 'utf8');
      const lines = code.split('\n');
      const node = new SourceMap(json as never);
      const index = new SourceMapIndex(json.mappings, json.sources);
      expect(json.mappings.split(',').length).toBeGreaterThan(10_000);
      let mapped = 0;
      fc.assert(
        fc.property(fc.nat({ max: lines.length }), fc.nat({ max: 1_000_000 }), (line, col) => {
          const column = lines[line] ? col % (lines[line].length + 2) : col % 50;
          const want = nodeAnswer(node, line, column);
          if (want) mapped++;
          expect(index.lookup(line, column)).toEqual(want);
        }),
        { numRuns: 3000 },
      );
      expect(mapped).toBeGreaterThan(1000);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('corners: before the first mapping, empty lines, negative deltas, and a mapping without a source (unmapped, as the spec has it)', () => {
    // line 0: col 4 -> a.ts 0:0, col 10 -> b.ts 3:2 (with a name), col 12: no source;
    // line 1: none; line 2: col 0 -> b.ts 1:0 (deltas back), col 7 -> a.ts 5:5
    const mappings = `${vlq(4)}AAA,${vlq(6)}${vlq(1)}${vlq(3)}${vlq(2)}A,${vlq(2)};;A${vlq(0)}${vlq(-2)}${vlq(-2)},${vlq(7)}${vlq(-1)}${vlq(4)}${vlq(5)}`;
    const index = new SourceMapIndex(mappings, ['a.ts', 'b.ts']);
    expect(index.lookup(0, 3)).toBeUndefined();
    expect(index.lookup(0, 4)).toEqual({ source: 'a.ts', line: 0, column: 0 });
    expect(index.lookup(0, 9)).toEqual({ source: 'a.ts', line: 0, column: 0 });
    expect(index.lookup(0, 11)).toEqual({ source: 'b.ts', line: 3, column: 2 });
    expect(index.lookup(0, 12)).toBeUndefined(); // node:module maps it to the values before it
    expect(index.lookup(1, 5)).toBeUndefined();
    expect(index.lookup(2, 0)).toEqual({ source: 'b.ts', line: 1, column: 0 });
    expect(index.lookup(2, 9)).toEqual({ source: 'a.ts', line: 5, column: 5 });
    expect(index.lookup(7, 0)).toEqual({ source: 'a.ts', line: 5, column: 5 });
    // with every mapping carrying a source, node:module agrees everywhere
    const full = mappings.replace(`,${vlq(2)};`, ';');
    const node = new SourceMap(mapOf(full) as never);
    const again = new SourceMapIndex(full, ['a.ts', 'b.ts']);
    for (let line = 0; line < 4; line++) for (let column = 0; column < 20; column++) expect(again.lookup(line, column), `${line}:${column}`).toEqual(nodeAnswer(node, line, column));
  });

  it('more mappings than a checkpoint spans, on one line and over many: every position as node:module says', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ newLine: fc.boolean(), col: fc.integer({ min: 0, max: 40 }), src: fc.integer({ min: -1, max: 1 }), line: fc.integer({ min: -5, max: 5 }), c: fc.integer({ min: -3, max: 3 }) }), { minLength: 1, maxLength: 400 }),
        (segs) => {
          // absolute values kept non-negative, then written as relative VLQs
          let text = '';
          let first = true;
          let srcAbs = 0;
          let lineAbs = 0;
          let colAbs = 0;
          for (const s of segs) {
            if (!first) text += s.newLine ? ';' : ',';
            first = false;
            const src = Math.min(1, Math.max(0, srcAbs + s.src));
            const line = Math.max(0, lineAbs + s.line);
            const c = Math.max(0, colAbs + s.c);
            text += vlq(s.newLine ? s.col : s.col + 1) + vlq(src - srcAbs) + vlq(line - lineAbs) + vlq(c - colAbs);
            srcAbs = src;
            lineAbs = line;
            colAbs = c;
          }
          const json = mapOf(text);
          const node = new SourceMap(json as never);
          const index = new SourceMapIndex(text, json.sources);
          const lines = text.split(';').length;
          for (let line = 0; line <= lines; line++) for (let column = 0; column < 60; column += 3) expect(index.lookup(line, column)).toEqual(nodeAnswer(node, line, column));
        },
      ),
      { numRuns: 60 },
    );
  });

  it("an index file made as the build makes it answers as the map does; one that does not fit the map, or is damaged, is not used", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-srcmap-idx-'));
    try {
      const { esbuildOptions, writeSourceMapIndex } = (await import('../../scripts/build.mjs' as string)) as {
        esbuildOptions: (entries: Record<string, string>, outdir: string) => Parameters<typeof build>[0];
        writeSourceMapIndex: (mapPath: string) => Promise<string>;
      };
      await build(esbuildOptions({ fixture: 'cli/omnid.ts' }, dir));
      const mapPath = join(dir, 'fixture.cjs.map');
      expect(await writeSourceMapIndex(mapPath)).toBe('fixture.cjs.map.idx');
      const raw = await readFile(mapPath);
      const file = await readFile(`${mapPath}.idx`);
      const json = JSON.parse(raw.toString('utf8')) as MapJson;
      const fresh = new SourceMapIndex(json.mappings, json.sources);
      const fromFile = indexFromFile(raw, file)!;
      expect(fromFile).toBeDefined();
      expect(decodeIndexFile(file)!.checkpoints).toEqual(fresh.checkpointTable());
      const lines = (await readFile(join(dir, 'fixture.cjs'), 'utf8')).split('\n');
      fc.assert(
        fc.property(fc.nat({ max: lines.length }), fc.nat({ max: 1_000_000 }), (line, col) => {
          const column = lines[line] ? col % (lines[line].length + 2) : col % 50;
          expect(fromFile.lookup(line, column)).toEqual(fresh.lookup(line, column));
        }),
        { numRuns: 2000 },
      );
      // another map (one byte longer), a truncated or damaged file, another version: not used
      expect(indexFromFile(Buffer.concat([raw, Buffer.from(' ')]), file)).toBeUndefined();
      expect(indexFromFile(raw, file.subarray(0, file.length - 4))).toBeUndefined();
      expect(indexFromFile(raw, file.subarray(0, 10))).toBeUndefined();
      const otherVersion = Buffer.from(file);
      otherVersion.write('2', 7, 'latin1');
      expect(indexFromFile(raw, otherVersion)).toBeUndefined();
      const badHeader = Buffer.from(file);
      badHeader.write('!', 12, 'latin1');
      expect(indexFromFile(raw, badHeader)).toBeUndefined();
      expect(indexFromFile(raw, Buffer.alloc(0))).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('index files: the mappings found with any JSON white space around the colon; a checkpoint table that does not fit still never throws', () => {
    for (const sep of [':', ' : ', ':\n  ', '\t:\r\n']) {
      const text = `{"version":3,"sources":["a.ts"],"mappings"${sep}"AAAA;AACA","names":[]}`;
      const where = findMappings(Buffer.from(text))!;
      expect(text.slice(where.offset, where.offset + where.length)).toBe('AAAA;AACA');
    }
    expect(findMappings(Buffer.from('{"version":3,"mappings":3}'))).toBeUndefined();
    expect(findMappings(Buffer.from('{"version":3}'))).toBeUndefined();
    const mappings = `AAAA,${vlq(4)}AAC;AACA`;
    const map = Buffer.from(`{"version":3,"sources":["a.ts"],"mappings":"${mappings}"}`);
    const where = findMappings(map)!;
    const good = encodeIndexFile({ mapBytes: map.length, mappingsOffset: where.offset, mappingsLength: where.length, sources: ['a.ts'], checkpoints: new SourceMapIndex(mappings, ['a.ts']).checkpointTable() });
    expect(indexFromFile(map, good)!.lookup(0, 5)).toEqual({ source: 'a.ts', line: 0, column: 1 });
    // checkpoints from nowhere (positions past the end, negative, lines out of order)
    fc.assert(
      fc.property(fc.array(fc.integer({ min: -100, max: 100 }), { minLength: 7, maxLength: 70 }), (ints) => {
        const checkpoints = Int32Array.from(ints.slice(0, ints.length - (ints.length % 7)));
        const f = encodeIndexFile({ mapBytes: map.length, mappingsOffset: where.offset, mappingsLength: where.length, sources: ['a.ts'], checkpoints });
        const index = indexFromFile(map, f)!;
        for (let line = 0; line < 3; line++) for (let column = 0; column < 8; column++) index.lookup(line, column);
      }),
      { numRuns: 200 },
    );
  });

  it('malformed mappings: no exception, at worst no position', () => {
    for (const text of ['', ';;;', '!!!', 'A', 'AAAA,', ',,,;', 'gggggggggggggggggA', 'AA\u00ffA', `AAAA,${vlq(3)}${vlq(5)}AA`]) {
      const index = new SourceMapIndex(text, ['a.ts']);
      for (let line = 0; line < 4; line++)
        for (let column = 0; column < 12; column++) {
          const e = index.lookup(line, column);
          // a source the map does not list (index 5 of 1) maps nothing
          if (e) expect(e.source).toBe('a.ts');
        }
    }
  });
});

/** One base64 VLQ value, as source maps write it. */
function vlq(n: number): string {
  const chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  let v = n < 0 ? (-n << 1) | 1 : n << 1;
  let out = '';
  do {
    let digit = v & 31;
    v >>>= 5;
    if (v > 0) digit |= 32;
    out += chars[digit];
  } while (v > 0);
  return out;
}
