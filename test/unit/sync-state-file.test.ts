// The sync state file's encoding (protocol/sync/state-file.ts): format 3 round-trips any base and
// scan cache, format 2 (trees as objects) is still read, malformed files are refused.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { decodeSyncState, encodeSyncState, SYNC_STATE_FORMAT, type SyncState } from '../../protocol/sync/state-file.js';
import { CHUNK_BYTES, MANIFEST_VERSION, type FileEntry } from '../../protocol/sync/tree.js';

const digest = (s: string) => 'sha256:' + createHash('sha256').update(s).digest('hex');

const entry = (path: string, size: number, content: string, mtimeMs: number, exec: boolean, pack?: number): FileEntry => {
  const sha256 = digest(content);
  const chunks = size === 0 ? [] : size <= CHUNK_BYTES ? [sha256] : Array.from({ length: Math.ceil(size / CHUNK_BYTES) }, (_, i) => digest(`${content}#${i}`));
  const f: FileEntry = { path, size, mtimeMs, mode: exec ? 0o755 : 0o644, sha256, chunks };
  if (pack !== undefined && size > 0 && size <= 1024 * 1024) f.pack = { digest: digest(`pack${pack}`), offset: 0, packSize: size + pack };
  return f;
};

const files = fc
  .dictionary(
    fc.constantFrom('a', 'b', 'c.txt', 'd/e', 'd/f', 'g/h/i', 'big.bin', 'empty'),
    fc.record({ content: fc.constantFrom('1', '2', '3'), mtime: fc.double({ min: 0, max: 2e12, noNaN: true }), exec: fc.boolean(), pack: fc.option(fc.integer({ min: 0, max: 2 }), { nil: undefined }) }),
    { maxKeys: 8 },
  )
  .map((d) =>
    Object.entries(d)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([path, v]) => entry(path, path === 'empty' ? 0 : path === 'big.bin' ? CHUNK_BYTES * 2 + 5 : 100 + v.content.length, v.content, v.mtime, v.exec, v.pack)),
  );

const withoutPacks = (fs: FileEntry[]) => fs.map(({ pack: _p, ...rest }) => rest);

describe('sync state file', () => {
  it('round-trips any base and scan cache (the scan cache without pack references)', () => {
    fc.assert(
      fc.property(files, files, fc.boolean(), (base, local, remote) => {
        const s: SyncState = { app: 'x', base: { version: MANIFEST_VERSION, files: base }, local: { version: MANIFEST_VERSION, files: withoutPacks(local) }, ...(remote ? { remoteIndex: digest('i'), remotePages: [digest('p')] } : {}) };
        const text = encodeSyncState(s);
        expect(JSON.parse(text).format).toBe(SYNC_STATE_FORMAT);
        expect(decodeSyncState(text, 'x')).toEqual(s);
        // what encodeSyncState wrote decodes the same without the per-entry rules (a checksum matched)
        expect(decodeSyncState(text, 'x', { entriesChecked: true })).toEqual(s);
      }),
      { numRuns: 300 },
    );
  });

  it('stores a scan-cache file that matches its base row as a reference, and is several times smaller than format 2 for a large tree', () => {
    const base = Array.from({ length: 5000 }, (_, i) => entry(`d${i % 50}/f${String(i).padStart(5, '0')}.dat`, 4096 + i, `c${i}`, 1000 + i, false, i >> 8));
    base.sort((a, b) => (a.path < b.path ? -1 : 1));
    const local = withoutPacks(base).map((f, i) => ({ ...f, mtimeMs: f.mtimeMs + (i === 7 ? 5 : 0.25) }));
    local[3] = { ...local[3], sha256: digest('changed'), chunks: [digest('changed')] };
    const s: SyncState = { app: 'x', base: { version: MANIFEST_VERSION, files: base }, local: { version: MANIFEST_VERSION, files: local } };
    const text = encodeSyncState(s);
    const v = JSON.parse(text) as { local: unknown[]; packs: string[] };
    expect(v.local[0]).toEqual([0, local[0].mtimeMs]);
    expect((v.local[3] as unknown[])[0]).toBe(local[3].path); // changed content: a full row
    expect(v.packs.length).toBe(20);
    expect(decodeSyncState(text, 'x')).toEqual(s);
    // a scan cache out of path order (not one a sync writes) is still stored by reference and read back as it was
    const reversed: SyncState = { ...s, local: { version: MANIFEST_VERSION, files: [...local].reverse() } };
    const rtext = encodeSyncState(reversed);
    expect((JSON.parse(rtext) as { local: unknown[] }).local.at(-1)).toEqual([0, local[0].mtimeMs]);
    expect(decodeSyncState(rtext, 'x')).toEqual(reversed);
    const format2 = JSON.stringify({ app: 'x', base: s.base, local: s.local });
    expect(text.length * 3).toBeLessThan(format2.length);
  });

  it('reads format 2 (the trees as manifests), and a state of another app as empty', () => {
    const base = [entry('a', 5, 'a', 1, false, 0)];
    const format2 = JSON.stringify({ app: 'x', base: { version: 2, files: base }, local: { version: 2, files: withoutPacks(base) }, remoteIndex: digest('i') });
    expect(decodeSyncState(format2, 'x')).toEqual({ app: 'x', base: { version: 2, files: base }, local: { version: 2, files: withoutPacks(base) }, remoteIndex: digest('i') });
    expect(decodeSyncState(format2, 'y')).toEqual({ app: 'y', base: { version: 2, files: [] }, local: { version: 2, files: [] } });
  });

  it('keeps the page layout with the index when it lists exactly its manifests and covers the base; a layout that does not fit is dropped', () => {
    const base = Array.from({ length: 5 }, (_, i) => entry(`f${i}`, 10, `c${i}`, 1, false, 0));
    const pages = [digest('m1'), digest('m2'), digest('m3')];
    const remoteLayout = [
      { files: 2, manifests: [{ digest: pages[0], size: 300 }] },
      { files: 3, manifests: [{ digest: pages[1], size: 310 }, { digest: pages[2], size: 120 }] },
    ];
    const s: SyncState = { app: 'x', base: { version: MANIFEST_VERSION, files: base }, local: { version: MANIFEST_VERSION, files: withoutPacks(base) }, remoteIndex: digest('i'), remotePages: pages, remoteLayout };
    const text = encodeSyncState(s);
    expect(JSON.parse(text).remoteLayout).toEqual([[2, [300]], [3, [310, 120]]]);
    expect(decodeSyncState(text, 'x')).toEqual(s);
    // written only when it lists the manifests of remotePages, in order
    expect(JSON.parse(encodeSyncState({ ...s, remotePages: [pages[0], pages[2], pages[1]] })).remoteLayout).toBeUndefined();
    expect(JSON.parse(encodeSyncState({ ...s, remotePages: pages.slice(0, 2) })).remoteLayout).toBeUndefined();
    // read only when it covers the base's files and remotePages exactly, with positive whole numbers
    const { remoteLayout: _l, ...without } = s;
    const read = (layout: unknown) => decodeSyncState(JSON.stringify({ ...JSON.parse(text), remoteLayout: layout }), 'x');
    for (const wrong of [[[2, [300]], [2, [310, 120]]], [[2, [300]], [3, [310]]], [[2, [300]], [3, [310, 120, 5]]], [[2, [300]], [3, [0, 120]]], [[2, []], [3, [300, 310, 120]]], [[-1, [300]], [6, [310, 120]]], 'x', [[2.5, [300]], [2.5, [310, 120]]]]) expect(read(wrong)).toEqual(without);
    expect(read([[2, [300]], [3, [310, 120]]])).toEqual(s);
  });

  it('refuses malformed files with the reason', () => {
    const good = JSON.parse(encodeSyncState({ app: 'x', base: { version: 2, files: [entry('a', 5, 'a', 1, false, 0)] }, local: { version: 2, files: [] } }));
    const bad = (patch: object) => () => decodeSyncState(JSON.stringify({ ...good, ...patch }), 'x');
    expect(() => decodeSyncState('nope', 'x')).toThrow();
    expect(bad({ format: 9 })).toThrow(/format 9/);
    expect(bad({ packs: [1] })).toThrow(/pack list/);
    expect(bad({ base: [['a', 5, 1, 0o644, digest('a'), 0, [7, 0, 5]]] })).toThrow(/pack reference/);
    expect(bad({ base: [['../a', 5, 1, 0o644, digest('a'), 0]] })).toThrow(/invalid sync manifest/);
    expect(bad({ base: [['a', 5, 1, 0o644, 'sha256:nothex', 0]] })).toThrow(/digest/);
    expect(bad({ base: [['a', CHUNK_BYTES + 1, 1, 0o644, digest('a'), 0]] })).toThrow(/chunk list is needed/);
    expect(bad({ local: [[3, 1]] })).toThrow(/no base row 3/);
    expect(bad({ local: [['a', 5, 1]] })).toThrow(/not a file row/);
  });
});
