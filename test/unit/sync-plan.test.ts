import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { planSync, missingChunks, SyncConflictError } from '../../protocol/sync/plan.js';
import { referencePlanSync } from '../support/sync-plan-reference.js';
import { checkManifest, checkPath, checkSymlink, decodeManifest, encodeManifest, fromMap, type FileEntry, type TreeManifest } from '../../protocol/sync/tree.js';

const digest = (s: string) => 'sha256:' + createHash('sha256').update(s).digest('hex');
const file = (path: string, content: string, mode = 0o644): FileEntry => ({ path, size: content.length, mtimeMs: 1, mode, sha256: digest(content), chunks: content.length ? [digest(content)] : [] });
const tree = (files: Record<string, string>): TreeManifest => fromMap(new Map(Object.entries(files).map(([p, c]) => [p, file(p, c)])));
const contents = (m: TreeManifest, src: Map<string, string>) => Object.fromEntries(m.files.map((f) => [f.path, src.get(f.sha256)]));

describe('sync paths', () => {
  it('accepts ordinary relative paths', () => {
    for (const p of ['a', 'a/b.txt', 'dir/sub/file.tar.gz', '.gitignore', 'ünïcode/名前']) expect(checkPath(p)).toBeUndefined();
  });
  it('refuses escaping, absolute and unportable paths', () => {
    for (const p of ['', '/etc/passwd', 'C:/x', '../x', 'a/../../x', 'a/./b', 'a//b', 'a\\b', 'a\u0000b', 'a\nb', 'x'.repeat(256), 'a/' + 'b/'.repeat(600), 'con', 'dir/NUL.txt', 'a:b', 'what?', '.omni/sync-state.json', '.omni'])
      expect(checkPath(p), p).toBeDefined();
  });
  it('refuses symlinks leaving the root', () => {
    expect(checkSymlink('a/link', '../b')).toBeUndefined();
    expect(checkSymlink('a/link', '../../b')).toMatch(/outside/);
    expect(checkSymlink('link', '/etc/passwd')).toMatch(/absolute/);
    expect(checkSymlink('a/b/link', 'c/../../../../x')).toMatch(/outside/);
  });
  it('validates manifests from the other side', () => {
    const good = tree({ a: '1', 'b/c': '2' });
    expect(decodeManifest(encodeManifest(good))).toEqual(good);
    expect(() => checkManifest({ version: 2, files: [file('../x', 'a')] })).toThrow(/'\.\.'/);
    expect(() => checkManifest({ version: 2, files: [file('b', 'a'), file('a', 'a')] })).toThrow(/sorted/);
    expect(() => checkManifest({ version: 2, files: [file('a', 'a'), file('a/b', 'a')] })).toThrow(/parent is a file/);
    expect(() => checkManifest({ version: 2, files: [{ ...file('a', 'abc'), chunks: [] }] })).toThrow(/chunk list/);
    expect(() => checkManifest({ version: 2, files: [{ ...file('a', 'abc'), mode: 0o4755 }] })).toThrow(/mode/);
    expect(() => decodeManifest(Buffer.from('{'))).toThrow(/not JSON/);
    // every pack digest is tested (one met again is not tested twice, an empty one is refused)
    const packed = (path: string, digest: string) => ({ ...file(path, 'abc'), pack: { digest, offset: 0, packSize: 10 } });
    const pd = digest('pack');
    expect(checkManifest({ version: 2, files: [packed('a', pd), packed('b', pd)] }).files.length).toBe(2);
    expect(() => checkManifest({ version: 2, files: [packed('a', '')] })).toThrow(/bad pack digest/);
    expect(() => checkManifest({ version: 2, files: [packed('a', pd), packed('b', 'sha256:nothex')] })).toThrow(/bad pack digest/);
    // a chunk equal to the file's digest passes untested; any other is tested
    expect(() => checkManifest({ version: 2, files: [{ ...file('a', 'abc'), chunks: ['sha256:nothex'] }] })).toThrow(/chunk list/);
  });
});

describe('sync plan', () => {
  it('first sync: uploads what only the client has and downloads what only the cluster has', () => {
    const p = planSync({ local: tree({ a: '1', b: '2' }), remote: tree({ c: '3' }), base: tree({}) });
    expect(p.upload.map((f) => f.path)).toEqual(['a', 'b']);
    expect(p.download.map((f) => f.path)).toEqual(['c']);
    expect(p.conflicts).toEqual([]);
    expect(p.remote).toEqual(p.local);
    expect(p.base.files.map((f) => f.path)).toEqual(['a', 'b', 'c']);
  });
  it('a synced tree is a no-op', () => {
    const t = tree({ a: '1', b: '2' });
    const p = planSync({ local: t, remote: t, base: t });
    expect(p.noop).toBe(true);
  });
  it('deletions travel both ways', () => {
    const base = tree({ a: '1', b: '2', c: '3' });
    const p = planSync({ local: tree({ b: '2', c: '3' }), remote: tree({ a: '1', b: '2' }), base });
    expect(p.deleteRemote).toEqual(['a']);
    expect(p.deleteLocal).toEqual(['c']);
    expect(p.remote.files.map((f) => f.path)).toEqual(['b']);
  });
  it('a conflict: the cluster wins by default, the client copy is kept as NAME.conflict', () => {
    const p = planSync({ local: tree({ a: 'mine', 'a.conflict': 'old' }), remote: tree({ a: 'theirs', 'a.conflict': 'old' }), base: tree({ a: 'orig', 'a.conflict': 'old' }) });
    expect(p.conflicts).toEqual([{ path: 'a', winner: 'cluster', keptAs: 'a.conflict-2' }]);
    const src = new Map(['mine', 'theirs', 'old'].map((c) => [digest(c), c]));
    expect(contents(p.local, src)).toEqual({ a: 'theirs', 'a.conflict': 'old', 'a.conflict-2': 'mine' });
    expect(p.upload.map((f) => f.path)).toEqual(['a.conflict-2']);
    // the loser's copy is written locally from the local file (same digest), not fetched
    expect(p.download.map((f) => f.path)).toEqual(['a', 'a.conflict-2']);
  });
  it('the client wins with --push; its copy replaces the cluster copy, which is kept', () => {
    const p = planSync({ local: tree({ a: 'mine' }), remote: tree({ a: 'theirs', z: 'only-remote' }), base: tree({ a: 'orig' }), direction: 'push' });
    const src = new Map(['mine', 'theirs', 'only-remote'].map((c) => [digest(c), c]));
    expect(contents(p.remote, src)).toEqual({ a: 'mine', 'a.conflict': 'theirs', z: 'only-remote' });
    expect(p.download).toEqual([]);
    expect(p.deleteLocal).toEqual([]);
    // z is not on the client: the base does not claim it is synced
    expect(p.base.files.map((f) => f.path)).toEqual(['a']);
  });
  it('--pull never changes the cluster', () => {
    const remote = tree({ a: 'theirs' });
    const p = planSync({ local: tree({ a: 'mine', b: 'new' }), remote, base: tree({ a: 'orig' }), direction: 'pull' });
    expect(p.upload).toEqual([]);
    expect(p.deleteRemote).toEqual([]);
    expect(p.remote).toEqual(remote);
    expect(p.local.files.map((f) => f.path)).toEqual(['a', 'a.conflict', 'b']);
  });
  it('a change wins over a deletion on the other side, whoever wins', () => {
    for (const winner of ['client', 'cluster'] as const) {
      const p = planSync({ local: tree({}), remote: tree({ a: 'changed' }), base: tree({ a: 'orig' }), winner });
      expect(p.local.files.map((f) => [f.path, f.sha256])).toEqual([['a', digest('changed')]]);
      expect(p.deleteRemote).toEqual([]);
      expect(p.conflicts).toEqual([{ path: 'a', winner: 'cluster' }]);
    }
  });
  it('refuses a file that is a directory on the other side', () => {
    expect(() => planSync({ local: tree({ a: '1' }), remote: tree({ 'a/b': '2' }), base: tree({}) })).toThrow(SyncConflictError);
  });
  it('the executable bit is part of identity', () => {
    const l = fromMap(new Map([['run.sh', file('run.sh', 'x', 0o755)]]));
    const p = planSync({ local: l, remote: tree({ 'run.sh': 'x' }), base: tree({ 'run.sh': 'x' }) });
    expect(p.upload.map((f) => f.mode)).toEqual([0o755]);
  });
  it("paths the client's .gitignore ignores: the cluster's copies stay untouched, nothing of them comes down or is deleted, the base forgets them", () => {
    const ignored = (p: string) => p.startsWith('data/') || p.endsWith('.log');
    const src = new Map(['1', '2', 'big', 'log', 'mine', 'theirs', 'orig', 'x'].map((c) => [digest(c), c]));
    for (const direction of ['both', 'push', 'pull'] as const) {
      const p = planSync({ local: tree({ a: '1', 'debug.log': 'log' }), remote: tree({ a: '1', 'data/big.bin': 'big', 'old.log': 'x' }), base: tree({ a: '1', 'data/big.bin': 'big', 'old.log': 'x' }), direction, ignored });
      expect(p.noop, direction).toBe(true);
      expect(contents(p.remote, src), direction).toEqual({ a: '1', 'data/big.bin': 'big', 'old.log': 'x' });
      expect(contents(p.local, src), direction).toEqual({ a: '1' });
      expect(p.base.files.map((f) => f.path), direction).toEqual(['a']);
    }
    // a conflict's copy never takes the name of an ignored file the cluster keeps
    const c = planSync({ local: tree({ b: 'mine' }), remote: tree({ b: 'theirs', 'b.conflict': 'x' }), base: tree({ b: 'orig' }), ignored: (p) => p === 'b.conflict' });
    expect(c.conflicts).toEqual([{ path: 'b', winner: 'cluster', keptAs: 'b.conflict-2' }]);
    expect(contents(c.remote, src)).toEqual({ b: 'theirs', 'b.conflict': 'x', 'b.conflict-2': 'mine' });
    expect(c.download.map((f) => f.path)).toEqual(['b', 'b.conflict-2']);
  });
  it('uploads each missing chunk once (resume bookkeeping: chunks already there are skipped)', () => {
    const a = { ...file('a', 'x'), chunks: [digest('1'), digest('2')] };
    const b = { ...file('b', 'y'), chunks: [digest('2'), digest('3')] };
    expect(missingChunks([a, b], (d) => d === digest('1'))).toEqual([digest('2'), digest('3')]);
  });
});

// Property: from any three trees, syncing converges (both sides equal, the next sync a no-op), and
// no content changed on both sides since the base disappears from both sides.
describe('sync plan properties', () => {
  const names = fc.constantFrom('a', 'b', 'c', 'd/e', 'd/f', 'g.conflict');
  const treeArb = fc.dictionary(names, fc.constantFrom('1', '2', '3', '4'), { maxKeys: 6 }).map(tree);
  it('converges and keeps every content changed on both sides', () => {
    fc.assert(
      fc.property(treeArb, treeArb, treeArb, fc.constantFrom('client', 'cluster'), (local, remote, base, winner) => {
        const p = planSync({ local, remote, base, winner: winner as 'client' | 'cluster' });
        expect(p.local).toEqual(p.remote);
        expect(p.base).toEqual(p.local);
        const again = planSync({ local: p.local, remote: p.remote, base: p.base });
        expect(again.noop).toBe(true);
        const B = new Map(base.files.map((f) => [f.path, f.sha256]));
        const kept = new Set(p.local.files.map((f) => f.sha256));
        for (const side of [local, remote])
          for (const f of side.files) {
            const other = (side === local ? remote : local).files.find((x) => x.path === f.path);
            const changedHere = B.get(f.path) !== f.sha256;
            const changedThere = B.get(f.path) !== other?.sha256;
            if (changedHere && changedThere) expect(kept.has(f.sha256), `${f.path}`).toBe(true);
          }
        // a side's file is deleted only when it is unchanged since the base
        for (const path of p.deleteLocal) expect(B.get(path)).toBe(local.files.find((f) => f.path === path)!.sha256);
        for (const path of p.deleteRemote) expect(B.get(path)).toBe(remote.files.find((f) => f.path === path)!.sha256);
      }),
      { numRuns: 2000 },
    );
  });
  it('one-way syncs never touch the other side and keep changed content', () => {
    fc.assert(
      fc.property(treeArb, treeArb, treeArb, fc.constantFrom('push', 'pull'), (local, remote, base, direction) => {
        const p = planSync({ local, remote, base, direction: direction as 'push' | 'pull' });
        if (direction === 'push') expect(p.local).toEqual(local);
        else expect(p.remote).toEqual(remote);
        // a two-way sync afterwards converges
        const q = planSync({ local: p.local, remote: p.remote, base: p.base });
        expect(q.local).toEqual(q.remote);
      }),
      { numRuns: 1000 },
    );
  });
});

// The planner walks the sorted trees in one pass (no Map per tree): it must decide exactly as the
// Map-based planner it replaced (test/support/sync-plan-reference.ts) — the same plan, the same
// order of uploads and downloads, the same conflicts and conflict names, the same refusals.
describe('sync plan, single pass', () => {
  // nested paths, names that sort between a directory and its files ('d-x' < 'd/…' < 'd0'),
  // a file named like a directory, and taken conflict names
  const names = fc.constantFrom('a', 'b', 'd', 'd-x', 'd/e', 'd/f', 'd/e/g', 'd0', 'g', 'g.conflict', 'g.conflict-2', 'z/y/x');
  const content = fc.constantFrom('1', '2', '3');
  const treeArb = fc
    .dictionary(names, fc.tuple(content, fc.constantFrom(0o644, 0o755), fc.integer({ min: 1, max: 3 })), { maxKeys: 8 })
    .map((d) => fromMap(new Map(Object.entries(d).map(([p, [c, mode, mtime]]) => [p, { ...file(p, c, mode), mtimeMs: mtime }]))));
  const outcome = (f: () => unknown) => {
    try {
      return { plan: f() };
    } catch (err) {
      return { error: `${(err as Error).constructor.name}: ${(err as Error).message}` };
    }
  };
  it('decides as the Map-based planner did, for every direction and winner', () => {
    fc.assert(
      fc.property(treeArb, treeArb, treeArb, fc.constantFrom('both', 'push', 'pull'), fc.constantFrom('client', 'cluster'), (local, remote, base, direction, winner) => {
        const o = { local, remote, base, direction: direction as 'both', winner: winner as 'client' };
        expect(outcome(() => planSync(o))).toEqual(outcome(() => referencePlanSync(o)));
      }),
      { numRuns: 5000 },
    );
  });
  it('decides as the Map-based planner did when the cluster tree is the base itself (the shortcut after a converged sync)', () => {
    fc.assert(
      fc.property(treeArb, treeArb, fc.constantFrom('both', 'push', 'pull'), fc.constantFrom('client', 'cluster'), (local, base, direction, winner) => {
        const o = { local, remote: base, base, direction: direction as 'both', winner: winner as 'client' };
        expect(outcome(() => planSync(o))).toEqual(outcome(() => referencePlanSync({ ...o, remote: { ...base, files: base.files.map((f) => ({ ...f })) } })));
      }),
      { numRuns: 3000 },
    );
  });
  it('takes unsorted trees (sorted first) as the Map-based planner did', () => {
    fc.assert(
      fc.property(treeArb, treeArb, treeArb, (local, remote, base) => {
        const rev = (t: TreeManifest): TreeManifest => ({ ...t, files: [...t.files].reverse() });
        expect(outcome(() => planSync({ local: rev(local), remote: rev(remote), base: rev(base) }))).toEqual(outcome(() => referencePlanSync({ local, remote, base })));
      }),
      { numRuns: 1000 },
    );
  });
});
