import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { checkManifest, checkPath, checkScanCache, encodeManifest, joinPages, PACK_BYTES, PACK_FILE_MAX, pageTree, planPacks, type FileEntry } from '../../protocol/sync/tree.js';

const digest = (s: string) => 'sha256:' + createHash('sha256').update(s).digest('hex');
const f = (path: string, size: number, content = path): FileEntry => ({ path, size, mtimeMs: 1, mode: 0o644, sha256: digest(content), chunks: size ? [digest(content)] : [] });

describe('sync packs (pure)', () => {
  it('groups small files into packs of at most PACK_BYTES, in order, each content once; empty and large files are not packed', () => {
    const M = 1024 * 1024;
    const files = [f('a', M), f('b', M), f('c', M), f('d', 0), f('e', PACK_FILE_MAX + 1), f('f', 10, 'a')];
    const packs = planPacks(files, 2 * M);
    expect(packs.map((p) => p.map((x) => x.path))).toEqual([['a', 'b'], ['c']]);
    for (const p of packs) expect(p.reduce((n, x) => n + x.size, 0)).toBeLessThanOrEqual(2 * M);
  });

  it('is deterministic (a rerun builds the same packs) and 5,000 small files make tens of packs', () => {
    const files = Array.from({ length: 5000 }, (_, i) => f(`d/${String(i).padStart(5, '0')}`, 4096 + (i % 10) * 4096));
    const a = planPacks(files);
    expect(planPacks(files)).toEqual(a);
    expect(a.length).toBeGreaterThan(5);
    expect(a.length).toBeLessThan(50);
    expect(a.flat().length).toBe(5000);
    for (const p of a) expect(p.reduce((n, x) => n + x.size, 0)).toBeLessThanOrEqual(PACK_BYTES);
  });

  it('validates pack references and refuses version 1 manifests with a clear error', () => {
    const p = { ...f('a', 100), pack: { digest: digest('pack'), offset: 0, packSize: 100 } };
    expect(checkManifest({ version: 2, files: [p] }).files[0].pack).toEqual(p.pack);
    expect(() => checkManifest({ version: 2, files: [{ ...p, pack: { ...p.pack, offset: 1 } }] })).toThrow(/pack range/);
    expect(() => checkManifest({ version: 2, files: [{ ...p, pack: { ...p.pack, digest: 'x' } }] })).toThrow(/pack digest/);
    expect(() => checkManifest({ version: 2, files: [{ ...f('big', PACK_FILE_MAX + 1), chunks: [digest('big')], pack: p.pack }] })).toThrow(/packed but/);
    expect(() => checkManifest({ version: 1, files: [] })).toThrow(/version 1 .*packed/);
  });

  const tree = (n: number, changed = -1, extra?: string) => {
    const files = Array.from({ length: n }, (_, i) => f(`src/d${i % 37}/file-${String(i).padStart(5, '0')}.ts`, 100, i === changed ? 'changed' : `c${i}`));
    if (extra) files.push(f(extra, 5));
    return { version: 2, files: files.sort((a, b) => (a.path < b.path ? -1 : 1)) };
  };
  const digests = (t: ReturnType<typeof tree>) => pageTree(t).map((p) => createHash('sha256').update(encodeManifest(p)).digest('hex'));

  it('pages the tree stably: one changed file changes one page; an added file at most two', () => {
    const a = digests(tree(5000));
    expect(a.length).toBeGreaterThan(5);
    expect(a.length).toBeLessThan(100);
    const b = digests(tree(5000, 1234));
    expect(b.length).toBe(a.length);
    expect(b.filter((d, i) => d !== a[i]).length).toBe(1);
    const c = new Set(digests(tree(5000, -1, 'src/d7/new-file.ts')));
    expect(a.filter((d) => !c.has(d)).length).toBeLessThanOrEqual(2);
  });

  it('joinPages puts the pages back together and checks order across pages', () => {
    const t = tree(3000);
    const pages = pageTree(t);
    expect(joinPages(pages)).toEqual(t);
    expect(() => joinPages([...pages].reverse())).toThrow(/sorted/);
    expect(pageTree({ version: 2, files: [] })).toEqual([{ version: 2, files: [] }]);
  });

  it('checkPath: plain ASCII paths (the fast path) keep every component rule', () => {
    for (const ok of ['a', 'src/lib/x.ts', 'x/.omni', 'a b/c-d_e.f+g@h', 'console.log', 'a'.repeat(255)]) expect(checkPath(ok)).toBeUndefined();
    expect(checkPath('a/./b')).toMatch(/'\.' component/);
    expect(checkPath('a/../b')).toMatch(/'\.\.' component/);
    expect(checkPath('..')).toMatch(/component/);
    expect(checkPath('src/CON.txt')).toMatch(/reserved/);
    expect(checkPath('lpt1')).toMatch(/reserved/);
    expect(checkPath('Aux')).toMatch(/reserved/);
    expect(checkPath('.omni/sync-state.json')).toMatch(/sync state/);
    expect(checkPath('.omni')).toMatch(/sync state/);
    expect(checkPath('a/' + 'b'.repeat(256))).toMatch(/name over/);
    expect(checkPath('x/'.repeat(600))).toBeDefined();
    expect(checkPath('a//b')).toMatch(/empty/);
    expect(checkPath('/abs')).toMatch(/absolute/);
    expect(checkPath('a:b')).toMatch(/absolute|Windows/);
  });

  it('checkScanCache checks shapes and digests (not path rules) and refuses other versions', () => {
    expect(checkScanCache({ version: 2, files: [f('b', 1), f('a', 1)] }).files.length).toBe(2);
    expect(() => checkScanCache({ version: 2, files: [{ ...f('a', 1), sha256: 'x' }] })).toThrow(/digests/);
    expect(() => checkScanCache({ version: 2, files: [{ ...f('a', 1), mode: 0o777 }] })).toThrow(/mode/);
    expect(() => checkScanCache({ version: 1, files: [] })).toThrow(/version/);
  });
});
