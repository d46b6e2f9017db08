// The file sync engine (node/sync/engine.ts) against an in-memory registry and record store: what
// a node relies on when it writes into a task's directory (a symlink planted by the task never
// leads a write outside it), the disk size limit, and the compare-and-set on the record.
import { describe, expect, it } from 'vitest';
import { mkdtemp, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OmniError } from '../../node/errors.js';
import { syncDir, workspaceManifests, WORKSPACE_REVISIONS_KEPT, type SyncRecordStore, type SyncRegistry } from '../../node/sync/engine.js';
import { CHUNK_BYTES, MANIFEST_VERSION, type FileEntry, type TreeManifest } from '../../protocol/sync/tree.js';
import fc from 'fast-check';
import { decodeSyncCommit, encodeSyncCommit } from '../../protocol/sync/commit.js';

function memoryStore(): { records: SyncRecordStore; registry: SyncRegistry; writes: number; tags: () => string[] } {
  const kv = new Map<string, { value: string; version: number }>();
  const blobs = new Map<string, Buffer>();
  const manifests = new Map<string, Buffer>();
  const out = {
    writes: 0,
    records: {
      read: async (key: string) => kv.get(key),
      write: async (key: string, value: string, expectedVersion: number) => {
        const cur = kv.get(key)?.version ?? 0;
        if (cur !== expectedVersion) throw new OmniError('CONFLICT', `version ${cur}, expected ${expectedVersion}`);
        kv.set(key, { value, version: cur + 1 });
        out.writes++;
      },
    } satisfies SyncRecordStore,
    registry: {
      hasBlob: async (_repo: string, digest: string) => blobs.has(digest),
      uploadBlob: async (_repo: string, digest: string, path: string) => {
        const b = await readFile(path);
        if ('sha256:' + createHash('sha256').update(b).digest('hex') !== digest) throw new OmniError('DIGEST_INVALID', 'bad upload');
        blobs.set(digest, b);
      },
      downloadBlob: async (_repo: string, digest: string, dest: string) => {
        const b = blobs.get(digest);
        if (!b) throw new OmniError('NOT_FOUND', digest);
        await writeFile(dest, b);
      },
      manifest: async (_repo: string, ref: string) => ({ bytes: manifests.get(ref)!, mediaType: '' }),
      putManifest: async (_repo: string, ref: string, bytes: Buffer) => {
        manifests.set(ref, bytes);
        manifests.set('sha256:' + createHash('sha256').update(bytes).digest('hex'), bytes);
      },
      deleteTag: async (_repo: string, tag: string) => manifests.delete(tag),
    } satisfies SyncRegistry,
    /** The workspace revisions whose tags are there. */
    tags: () => [...manifests.keys()].filter((k) => k.startsWith('ws-')).sort((a, b) => Number(a.slice(3)) - Number(b.slice(3))),
  };
  return out;
}

describe('sync engine', () => {
  it(`keeps the tags of the last ${WORKSPACE_REVISIONS_KEPT} revisions: each sync removes the one that falls out`, async () => {
    const root = await mkdtemp(join(tmpdir(), 'omni-sync-tags-'));
    try {
      const m = memoryStore();
      for (let i = 1; i <= WORKSPACE_REVISIONS_KEPT + 3; i++) {
        await writeFile(join(root, 'f.txt'), `version ${i}\n`);
        const r = await syncDir({ ...m, app: 't', dir: root, direction: 'push' });
        expect(r.revision).toBe(i);
        await new Promise((res) => setImmediate(res)); // the removal is not waited for
      }
      expect(m.tags()).toEqual(Array.from({ length: WORKSPACE_REVISIONS_KEPT }, (_, k) => `ws-${k + 4}`));
      // committed in one request: the commit itself drops the tag (no registry request after it)
      const c = memoryStore();
      withCommit(c);
      let deletes = 0;
      const untagged: string[] = [];
      const del = c.registry.deleteTag!;
      c.registry.deleteTag = async (repo, tag) => (deletes++, untagged.push(tag), del(repo, tag));
      for (let i = 1; i <= WORKSPACE_REVISIONS_KEPT + 3; i++) {
        await writeFile(join(root, 'f.txt'), `again ${i}\n`);
        expect((await syncDir({ ...c, app: 't', dir: root, direction: 'push', stateFile: join(root, '.omni', 'other-state.json') })).revision).toBe(i);
      }
      expect(c.tags()).toEqual(Array.from({ length: WORKSPACE_REVISIONS_KEPT }, (_, k) => `ws-${k + 4}`));
      expect(untagged).toEqual(['ws-1', 'ws-2', 'ws-3']);
      expect(deletes).toBe(3); // the fake commit's, one per commit past the kept ones: none besides
      // a node of an earlier version ignores untag: the client removes the tag itself
      const o = memoryStore();
      withCommit(o, 'ok', true);
      for (let i = 1; i <= WORKSPACE_REVISIONS_KEPT + 2; i++) {
        await writeFile(join(root, 'f.txt'), `old node ${i}\n`);
        await syncDir({ ...o, app: 't', dir: root, direction: 'push', stateFile: join(root, '.omni', 'old-node-state.json') });
        await new Promise((res) => setImmediate(res)); // the removal is not waited for
      }
      expect(o.tags()).toEqual(Array.from({ length: WORKSPACE_REVISIONS_KEPT }, (_, k) => `ws-${k + 3}`));
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('a file written while it is synced: the sync scans again and sends what the files hold then; one that never settles fails after 3 tries with nothing committed', async () => {
    const root = await mkdtemp(join(tmpdir(), 'omni-sync-changing-'));
    try {
      const m = memoryStore();
      await writeFile(join(root, 'small.txt'), 'small v1\n');
      await writeFile(join(root, 'big.bin'), Buffer.alloc(2 * 1024 * 1024, 1));
      // the files are rewritten between the scan and the read of their bytes: when the sync asks
      // whether the cluster has big.bin's content (it then reads the file and sends it)
      const has = m.registry.hasBlob;
      let rewrites = 0;
      m.registry.hasBlob = async (repo, digest) => {
        if (rewrites === 0) {
          rewrites++;
          await writeFile(join(root, 'big.bin'), Buffer.alloc(2 * 1024 * 1024, 2));
          await writeFile(join(root, 'small.txt'), 'small v2\n');
        }
        return has(repo, digest);
      };
      const r = await syncDir({ ...m, app: 'chg', dir: root, direction: 'push' });
      expect(r.revision).toBe(1);
      expect(rewrites).toBe(1);
      // what the cluster holds is what the files hold now
      const copy = join(root, '..', `${root.split('/').pop()}-copy`);
      await mkdir(copy);
      try {
        await syncDir({ ...m, app: 'chg', dir: copy, direction: 'pull' });
        expect(await readFile(join(copy, 'small.txt'), 'utf8')).toBe('small v2\n');
        expect((await readFile(join(copy, 'big.bin')))[0]).toBe(2);
      } finally {
        await rm(copy, { recursive: true, force: true });
      }
      // a file rewritten before every read never settles: CONFLICT after 3 scans, the record untouched
      await writeFile(join(root, 'big.bin'), Buffer.alloc(2 * 1024 * 1024, 3));
      let n = 4;
      m.registry.hasBlob = async (repo, digest) => {
        await writeFile(join(root, 'big.bin'), Buffer.alloc(2 * 1024 * 1024, n++ % 250));
        return has(repo, digest);
      };
      const writes = m.writes;
      await expect(syncDir({ ...m, app: 'chg', dir: root, direction: 'push' })).rejects.toMatchObject({ code: 'CONFLICT', message: expect.stringContaining('big.bin changed during the sync') });
      expect(n).toBe(7); // three attempts
      expect(m.writes).toBe(writes);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('never writes through a symlink the other side planted, and a limit stops an oversized sync before anything is written', async () => {
    const root = await mkdtemp(join(tmpdir(), 'omni-sync-engine-'));
    try {
      const m = memoryStore();
      const client = join(root, 'client');
      const task = join(root, 'task');
      const outside = join(root, 'outside');
      for (const d of [client, task, outside]) await mkdir(d);
      await mkdir(join(client, 'sub'));
      await writeFile(join(client, 'sub', 'x.txt'), 'x\n');
      await writeFile(join(client, 'a.txt'), 'a\n');
      const up = await syncDir({ ...m, app: 'app', dir: client });
      expect(up.uploaded).toBe(2);
      // the task's directory holds a symlink named like a directory of the tree
      await symlink(outside, join(task, 'sub'));
      const st = { stateFile: join(root, 'task-state.json'), tmpDir: join(root, 'task-tmp') };
      await expect(syncDir({ ...m, app: 'app', dir: task, direction: 'pull', ...st })).rejects.toThrow(/'sub' is a symlink: not writing through it/);
      expect(await readdir(outside)).toEqual([]);
      // the limit: 4 bytes of files on the cluster already; a 10-byte limit refuses 8 more
      await writeFile(join(client, 'b.txt'), '12345678');
      const before = m.writes;
      await expect(syncDir({ ...m, app: 'app', dir: client, limitBytes: 10 })).rejects.toThrow(/the workspace would hold 12 bytes on the cluster, over the app's disk size of 10 bytes/);
      expect(m.writes).toBe(before);
      const ok = await syncDir({ ...m, app: 'app', dir: client, limitBytes: 1000 });
      expect(ok.uploaded).toBe(1);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('ensureRecord writes the record of an empty workspace once; the compare-and-set loser plans again', async () => {
    const root = await mkdtemp(join(tmpdir(), 'omni-sync-engine-'));
    try {
      const m = memoryStore();
      const a = join(root, 'a');
      const b = join(root, 'b');
      await mkdir(a);
      await mkdir(b);
      const first = await syncDir({ ...m, app: 'app', dir: a, ensureRecord: true });
      expect(first.revision).toBe(1);
      expect((await syncDir({ ...m, app: 'app', dir: a, ensureRecord: true })).revision).toBe(1);
      await writeFile(join(a, 'one'), '1');
      await writeFile(join(b, 'two'), '2');
      // b's sync loses the race to a's (a commits while b is between upload and commit)
      const r = await syncDir({ ...m, app: 'app', dir: b, beforeCommit: async () => void (await syncDir({ ...m, app: 'app', dir: a })) });
      expect(r.revision).toBe(3);
      expect(await readFile(join(b, 'one'), 'utf8')).toBe('1');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('the no-op fast path: one record read when the files stat as last synced and the record is unchanged; anything else takes the full path', async () => {
    const root = await mkdtemp(join(tmpdir(), 'omni-sync-quick-'));
    try {
      const m = memoryStore();
      const a = join(root, 'a');
      const b = join(root, 'b');
      await mkdir(a);
      await mkdir(b);
      for (let i = 0; i < 30; i++) await writeFile(join(a, `f${i}.txt`), `file ${i}\n`);
      await syncDir({ ...m, app: 'q', dir: a, direction: 'push' });
      // the state file is not read on the fast path: garbage in it does not matter
      const stateFile = join(a, '.omni', 'sync-state.json');
      const good = await readFile(stateFile, 'utf8');
      await writeFile(stateFile, 'garbage');
      const reads: string[] = [];
      const counted = { ...m.records, read: async (k: string) => (reads.push(k), m.records.read(k)) };
      const r = await syncDir({ records: counted, registry: m.registry, app: 'q', dir: a, quickNoop: true });
      expect(r.noop).toBe(true);
      expect(reads).toEqual(['sync/q']);
      // without the fast path the state is read (and refused)
      await expect(syncDir({ ...m, app: 'q', dir: a })).rejects.toThrow(/sync-state/);
      await writeFile(stateFile, good);
      // another client changes the workspace: the record moved, so the fast path is not taken and the change comes in
      await syncDir({ ...m, app: 'q', dir: b });
      await writeFile(join(b, 'new.txt'), 'new\n');
      await syncDir({ ...m, app: 'q', dir: b });
      const r2 = await syncDir({ ...m, app: 'q', dir: a, quickNoop: true });
      expect(r2.noop).toBe(false);
      expect(await readFile(join(a, 'new.txt'), 'utf8')).toBe('new\n');
      // a local change (same size, new mtime) is not a no-op either
      await new Promise((res) => setTimeout(res, 20));
      await writeFile(join(a, 'f3.txt'), 'FILE 3\n');
      const r3 = await syncDir({ ...m, app: 'q', dir: a, quickNoop: true });
      expect(r3.uploaded).toBe(1);
      expect((await syncDir({ ...m, app: 'q', dir: a, quickNoop: true })).noop).toBe(true);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

/**
 * memoryStore with the one-request commit (what POST /v1/sync/<app>/commit does, on the memory
 * maps: through the encoded body, digests checked, the record compare-and-set); `answer`
 * 'not-found' plays a node of an earlier version.
 */
/** `ignoresUntag`: a node of an earlier version (keeps the old tag, does not say it removed it). */
function withCommit(m: ReturnType<typeof memoryStore>, answer: 'ok' | 'not-found' = 'ok', ignoresUntag = false) {
  const counts = { commits: 0, uploads: 0 };
  const upload = m.registry.uploadBlob;
  m.registry.uploadBlob = async (repo, digest, path) => {
    counts.uploads++;
    return upload(repo, digest, path);
  };
  const sha = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');
  m.records.commit = async (app, header, blobs, manifests) => {
    counts.commits++;
    if (answer === 'not-found') throw new OmniError('NOT_FOUND', 'no route /v1/sync/x/commit');
    const d = decodeSyncCommit(encodeSyncCommit(header, blobs, manifests));
    d.blobs.forEach((b, i) => expect(sha(b)).toBe(d.header.blobs[i].digest));
    d.manifests.forEach((b, i) => expect(sha(b)).toBe(d.header.manifests[i].digest));
    const key = `sync/${app}`;
    const cur = (await m.records.read(key))?.version ?? 0;
    if (cur !== d.header.expectedVersion) throw new OmniError('CONFLICT', `version ${cur}, expected ${d.header.expectedVersion}`);
    for (const [i, b] of d.blobs.entries()) {
      const path = join(tmpdir(), `omni-commit-${process.pid}-${i}`);
      await writeFile(path, b);
      await upload(`omni-sync/${app}`, d.header.blobs[i].digest, path);
      await rm(path);
    }
    d.manifests.forEach((b, i) => m.registry.putManifest(`omni-sync/${app}`, i === d.manifests.length - 1 ? d.header.tag : d.header.manifests[i].digest, Buffer.from(b), d.header.manifests[i].mediaType));
    await m.records.write(key, d.header.record, cur);
    if (d.header.untag && !ignoresUntag) await m.registry.deleteTag!(`omni-sync/${app}`, d.header.untag); // in the same transaction on a node
    return d.header.untag && !ignoresUntag ? { untagged: true } : undefined;
  };
  return counts;
}

describe('sync engine: .gitignore', () => {
  it("leaves out what the tree's .gitignore files ignore, both ways; the cluster keeps its own copies of such paths; an oversized .gitignore is refused", async () => {
    const top = await mkdtemp(join(tmpdir(), 'omni-sync-ignore-'));
    const [a, b, d, e] = ['a', 'b', 'd', 'e'].map((n) => join(top, n));
    const put = async (root: string, files: Record<string, string>) => {
      for (const [p, c] of Object.entries(files)) {
        await mkdir(join(root, p, '..'), { recursive: true });
        await writeFile(join(root, p), c);
      }
    };
    const list = async (root: string): Promise<string[]> => ((await readdir(root, { recursive: true, withFileTypes: true })) as { name: string; parentPath: string; isFile(): boolean }[]).filter((x) => x.isFile()).map((x) => join(x.parentPath, x.name).slice(root.length + 1)).filter((p) => !p.startsWith('.omni')).sort();
    try {
      for (const x of [a, b, d, e]) await mkdir(x);
      const m = memoryStore();
      // the cluster already holds data/big.bin (pushed from a directory without a .gitignore)
      await put(d, { 'data/big.bin': 'big' });
      await syncDir({ ...m, app: 'ig', dir: d, direction: 'push' });
      await put(a, {
        '.gitignore': '# deps\nnode_modules/\n*.log\n!keep.log\n/build/out.bin\ndata/\n',
        'app.py': 'print(1)',
        'node_modules/x/index.js': 'x',
        'node_modules/.bin/x': 'x',
        'debug.log': 'noise',
        'keep.log': 'kept',
        'sub/.gitignore': 'secret.txt\n',
        'sub/secret.txt': 'pw',
        'sub/ok.txt': 'ok',
        'build/out.bin': 'bin',
        'build/other.txt': 'other',
      });
      for (const blocking of [true, false]) {
        const r = await syncDir({ ...m, app: 'ig', dir: a, blockingScan: blocking, stateFile: join(a, '.omni', `state-${blocking}.json`) });
        expect(r.ignored, `blocking ${blocking}`).toBe(4); // node_modules (a directory, once), debug.log, sub/secret.txt, build/out.bin
        if (blocking) expect(r.uploaded).toBe(6);
        // the cluster's data/big.bin is not brought here (ignored), nor deleted there
        expect(existsSync(join(a, 'data'))).toBe(false);
      }
      // another directory (no rules of its own yet) gets the project's files and the cluster's data/, nothing ignored
      await syncDir({ ...m, app: 'ig', dir: e, direction: 'pull' });
      expect(await list(e)).toEqual(['.gitignore', 'app.py', 'build/other.txt', 'data/big.bin', 'keep.log', 'sub/.gitignore', 'sub/ok.txt']);
      // a task's side (the node's non-blocking scan) with the project's .gitignore: its ignored output stays home
      await syncDir({ ...m, app: 'ig', dir: b, direction: 'pull' });
      await put(b, { 'run.log': 'task noise', 'node_modules/y/index.js': 'y', 'result.txt': 'done' });
      const t = await syncDir({ ...m, app: 'ig', dir: b });
      // result.txt; run.log, node_modules, and data/ (its first pull had no rules yet: the rules are the directory's own, read before each sync)
      expect([t.uploaded, t.ignored]).toEqual([1, 3]);
      const back = await syncDir({ ...m, app: 'ig', dir: a, stateFile: join(a, '.omni', 'state-true.json') });
      expect(back.downloaded).toBe(1);
      expect(existsSync(join(a, 'result.txt'))).toBe(true);
      // a .gitignore over 1 MiB: the sync fails naming it, before anything is sent
      await writeFile(join(a, 'sub', '.gitignore'), 'x\n'.repeat(600_000));
      const err = await syncDir({ ...m, app: 'ig', dir: a }).catch((x: unknown) => x);
      expect(err).toBeInstanceOf(OmniError);
      expect((err as OmniError).message).toMatch(/^sub\/\.gitignore is over 1048576 bytes/);
    } finally {
      await rm(top, { recursive: true, force: true });
    }
  });
});

describe('sync engine: a small change in one request', () => {
  it('small files go in one commit (no blob upload); a file over 1 MiB goes the separate way; another directory pulls both', async () => {
    const root = await mkdtemp(join(tmpdir(), 'omni-sync-commit-'));
    try {
      const m = memoryStore();
      const counts = withCommit(m);
      const a = join(root, 'a');
      const b = join(root, 'b');
      await mkdir(a);
      await mkdir(b);
      for (let i = 0; i < 20; i++) await writeFile(join(a, `f${i}.txt`), `file ${i}\n`.repeat(100));
      await writeFile(join(a, 'empty'), ''); // no content to send: still one request
      expect((await syncDir({ ...m, app: 'app', dir: a })).revision).toBe(1);
      expect(counts).toEqual({ commits: 1, uploads: 0 });
      await writeFile(join(a, 'f3.txt'), 'changed\n');
      expect((await syncDir({ ...m, app: 'app', dir: a })).revision).toBe(2);
      expect(counts).toEqual({ commits: 2, uploads: 0 });
      await writeFile(join(a, 'big.bin'), Buffer.alloc(2 * 1024 * 1024, 7));
      expect((await syncDir({ ...m, app: 'app', dir: a })).revision).toBe(3);
      expect(counts.commits).toBe(2);
      expect(counts.uploads).toBeGreaterThan(0);
      const r = await syncDir({ ...m, app: 'app', dir: b, direction: 'pull' });
      expect(r.downloaded).toBe(22);
      expect(await readFile(join(b, 'empty'), 'utf8')).toBe('');
      expect(await readFile(join(b, 'f3.txt'), 'utf8')).toBe('changed\n');
      expect(await readFile(join(b, 'f7.txt'), 'utf8')).toBe('file 7\n'.repeat(100));
      expect((await readFile(join(b, 'big.bin'))).equals(Buffer.alloc(2 * 1024 * 1024, 7))).toBe(true);
      // and the next change after the big one is small again
      await writeFile(join(b, 'f1.txt'), 'from b\n');
      expect((await syncDir({ ...m, app: 'app', dir: b })).revision).toBe(4);
      expect(counts.commits).toBe(3);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('a change committed in one request leaves the state and quick file a no-op reads: one record read, nothing sent', async () => {
    const root = await mkdtemp(join(tmpdir(), 'omni-sync-commit-quick-'));
    try {
      const m = memoryStore();
      const counts = withCommit(m);
      for (let i = 0; i < 30; i++) await writeFile(join(root, `f${i}.txt`), `file ${i}\n`);
      await syncDir({ ...m, app: 'q', dir: root });
      await writeFile(join(root, 'f7.txt'), 'changed\n');
      expect((await syncDir({ ...m, app: 'q', dir: root })).revision).toBe(2);
      expect(counts.commits).toBe(2);
      // the state written from the text made while the commit was under way
      const state = JSON.parse(await readFile(join(root, '.omni', 'sync-state.json'), 'utf8')) as { remoteIndex?: string; local: unknown[] };
      expect(state.remoteIndex).toBe((JSON.parse((await m.records.read('sync/q'))!.value) as { index: string }).index);
      expect(state.local.length).toBe(30);
      const reads: string[] = [];
      const counted = { ...m.records, read: async (k: string) => (reads.push(k), m.records.read(k)) };
      const r = await syncDir({ records: counted, registry: m.registry, app: 'q', dir: root, quickNoop: true });
      expect(r.noop).toBe(true);
      expect(reads).toEqual(['sync/q']);
      expect(counts.commits).toBe(2);
      // and a full sync agrees: nothing to do
      expect((await syncDir({ ...m, app: 'q', dir: root })).noop).toBe(true);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('a node without the request (NOT_FOUND): the separate requests, asked once per sync', async () => {
    const root = await mkdtemp(join(tmpdir(), 'omni-sync-commit-old-'));
    try {
      const m = memoryStore();
      const counts = withCommit(m, 'not-found');
      await writeFile(join(root, 'a.txt'), 'a');
      const r = await syncDir({ ...m, app: 'app', dir: root });
      expect(r.revision).toBe(1);
      expect(counts.commits).toBe(1);
      expect(counts.uploads).toBeGreaterThan(0);
      expect(m.writes).toBe(1);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('another sync commits first: CONFLICT, this one plans again and both changes stay', async () => {
    const root = await mkdtemp(join(tmpdir(), 'omni-sync-commit-race-'));
    try {
      const m = memoryStore();
      const counts = withCommit(m);
      const a = join(root, 'a');
      const b = join(root, 'b');
      await mkdir(a);
      await mkdir(b);
      await syncDir({ ...m, app: 'app', dir: a, ensureRecord: true });
      await writeFile(join(a, 'one'), '1');
      await writeFile(join(b, 'two'), '2');
      let raced = false;
      const r = await syncDir({ ...m, app: 'app', dir: b, beforeCommit: async () => void (raced || ((raced = true), await syncDir({ ...m, app: 'app', dir: a }))) });
      expect(raced).toBe(true);
      expect(r.revision).toBe(3);
      expect(await readFile(join(b, 'one'), 'utf8')).toBe('1');
      expect(counts.uploads).toBe(0);
      await syncDir({ ...m, app: 'app', dir: a });
      expect(await readFile(join(a, 'two'), 'utf8')).toBe('2');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('sync engine: uploads from reused buffers', () => {
  it('packs and chunks read into buffers used again (more uploads than run at once) arrive whole, blocking or not; another directory pulls them back', async () => {
    const root = await mkdtemp(join(tmpdir(), 'omni-sync-buffers-'));
    try {
      for (const blocking of [true, false]) {
        const m = memoryStore();
        const stored = new Map<string, Buffer>();
        let uploads = 0;
        // as a request does, the upload reads the buffer while it is under way: a buffer given back to
        // the engine too early would be overwritten by the next read into it, and its digest would fail
        let started = 0;
        let refused = 0;
        let bigUploads = 0;
        m.registry.uploadBytes = async (_repo: string, digest: string, bytes: Buffer) => {
          // some slow, some fast: a fast one's job ends, and the next job takes a buffer, while slow ones still read theirs
          await new Promise((r) => setTimeout(r, started++ % 2 ? 40 : 1));
          if ('sha256:' + createHash('sha256').update(bytes).digest('hex') !== digest) {
            refused++;
            throw new OmniError('DIGEST_INVALID', 'the bytes changed under the upload');
          }
          uploads++;
          if (bytes.length >= 1024 * 1024) bigUploads++;
          stored.set(digest, Buffer.from(bytes));
        };
        m.registry.hasBlob = async (_repo: string, digest: string) => stored.has(digest);
        m.registry.downloadBlob = async (_repo: string, digest: string, dest: string) => {
          const b = stored.get(digest);
          if (!b) throw new OmniError('NOT_FOUND', digest);
          await writeFile(dest, b);
        };
        const a = join(root, `a-${blocking}`);
        const b = join(root, `b-${blocking}`);
        await mkdir(a);
        await mkdir(b);
        // 7 files of 1.5 chunks (14 chunk uploads, more than the 8 at once) and ~20 MiB of small
        // files (3 packs), each with its own bytes
        const want = new Map<string, Buffer>();
        for (let i = 0; i < 7; i++) want.set(`big${i}.bin`, Buffer.alloc(CHUNK_BYTES + CHUNK_BYTES / 2, i + 1));
        for (let i = 0; i < 40; i++) want.set(`small${i}.bin`, Buffer.alloc(512 * 1024 + i, 100 + i));
        for (const [name, bytes] of want) await writeFile(join(a, name), bytes);
        // the first try fails at the record, after every upload; the second finds the blobs there
        // (hasBlob: those buffers go back without an upload) and sends no pack or chunk again (small
        // blobs go up without asking)
        const write = m.records.write;
        m.records.write = async () => {
          throw new OmniError('BAD_REQUEST', 'refused once');
        };
        await expect(syncDir({ ...m, app: 'app', dir: a, blockingScan: blocking })).rejects.toThrow('refused once');
        expect(uploads).toBeGreaterThanOrEqual(14 + 3);
        const sent = bigUploads;
        m.records.write = write;
        await syncDir({ ...m, app: 'app', dir: a, blockingScan: blocking });
        expect(bigUploads).toBe(sent);
        // (a refused upload would be sent again after a new scan: the result alone would not show it)
        expect(refused).toBe(0);
        const r = await syncDir({ ...m, app: 'app', dir: b, direction: 'pull' });
        expect(r.downloaded).toBe(want.size);
        for (const [name, bytes] of want) expect((await readFile(join(b, name))).equals(bytes), name).toBe(true);
      }
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('sync engine: work before the record', () => {
  it('reads the record only once recordAfter settles, fails with it, and takes the disk size as a promise', async () => {
    const root = await mkdtemp(join(tmpdir(), 'omni-sync-after-'));
    try {
      const m = memoryStore();
      await writeFile(join(root, 'a.txt'), 'a');
      const events: string[] = [];
      const read = m.records.read;
      m.records.read = async (key) => (events.push('record read'), read(key));
      let release!: () => void;
      const readBack = new Promise<void>((r) => (release = r)).then(() => void events.push('read back'));
      const done = syncDir({ ...m, app: 'app', dir: root, recordAfter: readBack, limitBytes: readBack.then(() => 1000) });
      await new Promise((r) => setTimeout(r, 50));
      expect(events).toEqual([]);
      release();
      expect((await done).revision).toBe(1);
      expect(events.slice(0, 2)).toEqual(['read back', 'record read']);
      // the disk size from the promise bounds the workspace
      await writeFile(join(root, 'b.txt'), 'b'.repeat(2000));
      expect(await syncDir({ ...m, app: 'app', dir: root, limitBytes: Promise.resolve(1000) }).catch((e: OmniError) => e.code)).toBe('TOO_LARGE');
      // a failed read-back fails the sync, with nothing written
      const writes = m.writes;
      const failed = Promise.reject(new OmniError('UNAVAILABLE', 'no node answered'));
      expect(await syncDir({ ...m, app: 'app', dir: root, recordAfter: failed, limitBytes: failed }).catch((e: OmniError) => e.code)).toBe('UNAVAILABLE');
      expect(m.writes).toBe(writes);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});


describe('sync engine: the state file', () => {
  it('carries a check of its JSON: an intact file is read as written, an edited one is checked in full, one without it (an earlier version) is read', async () => {
    const root = await mkdtemp(join(tmpdir(), 'omni-sync-statefile-'));
    try {
      const m = memoryStore();
      for (let i = 0; i < 5; i++) await writeFile(join(root, `f${i}.txt`), `file ${i}\n`);
      await syncDir({ ...m, app: 'app', dir: root });
      const path = join(root, '.omni', 'sync-state.json');
      const text = await readFile(path, 'utf8');
      const check = (JSON.parse(text) as { check: string }).check;
      const json = `{${text.slice(text.indexOf('",') + 2)}`;
      expect(text.startsWith(`{"check":"${createHash('sha256').update(json).digest('hex')}",`)).toBe(true);
      expect(check).toMatch(/^[0-9a-f]{64}$/);
      // intact: the next sync reads it (nothing to do)
      expect((await syncDir({ ...m, app: 'app', dir: root })).noop).toBe(true);
      // an entry edited to a path that escapes: the check no longer matches, the full check refuses it
      const edited = text.replace('"f1.txt"', '"../f1.txt"');
      expect(edited).not.toBe(text);
      await writeFile(path, edited);
      expect(await syncDir({ ...m, app: 'app', dir: root }).catch((e: OmniError) => `${e.code}: ${e.message}`)).toMatch(/^INVALID: .*invalid sync manifest.*'\.\.' component.*remove it to sync from scratch/);
      // a check that does not match an otherwise good state: read, checked in full
      await writeFile(path, text.replace(check, '0'.repeat(64)));
      expect((await syncDir({ ...m, app: 'app', dir: root })).noop).toBe(true);
      // the JSON alone (as an earlier version wrote it): checked and read
      await writeFile(path, json);
      expect((await syncDir({ ...m, app: 'app', dir: root })).noop).toBe(true);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('sync engine: page layout', () => {
  const sha = (x: string) => 'sha256:' + createHash('sha256').update(x).digest('hex');
  /** File i of a tree: packed small files (a few packs) and files of three chunks (pages of over 400 layers take two manifests). */
  const fileOf = (i: number, version = 0, mtimeMs = 1000 + i): FileEntry => {
    const path = `d${i % 7}/f${String(i).padStart(5, '0')}`;
    if (i % 5 < 2) return { path, size: 100 + i, mtimeMs, mode: 0o644, sha256: sha(`s${i}.${version}`), chunks: [sha(`s${i}.${version}`)], pack: { digest: sha(`pack${i % 3}.${version}`), offset: i, packSize: 1_000_000 } };
    const chunks = [0, 1, 2].map((k) => sha(`c${i}.${version}.${k}`));
    return { path, size: 2 * CHUNK_BYTES + 1, mtimeMs, mode: i % 11 === 0 ? 0o755 : 0o644, sha256: sha(`b${i}.${version}`), chunks };
  };
  const sorted = (files: FileEntry[]): TreeManifest => ({ version: MANIFEST_VERSION, files: files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)) });
  const change = fc.record({ at: fc.nat(1999), kind: fc.constantFrom('content', 'mtime', 'mode', 'pack', 'delete', 'add') });

  it('a page whose files are unchanged is listed as it was, and the index is the one every page encoded again gives', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1500 }), fc.array(change, { maxLength: 6 }), (n, changes) => {
        const before = sorted(Array.from({ length: n }, (_, i) => fileOf(i * 2)));
        const first = workspaceManifests(before, new Set());
        const byIndex = new Map(before.files.map((f) => [Number(f.path.slice(-5)), f]));
        for (const c of changes) {
          const f = byIndex.get(c.at);
          if (c.kind === 'add') byIndex.set(c.at | 1, fileOf(c.at | 1));
          else if (!f) continue;
          else if (c.kind === 'delete') byIndex.delete(c.at);
          else if (c.kind === 'content') byIndex.set(c.at, fileOf(c.at, 1, f.mtimeMs));
          else if (c.kind === 'mtime') byIndex.set(c.at, { ...f, mtimeMs: f.mtimeMs + 0.5 });
          else if (c.kind === 'mode') byIndex.set(c.at, { ...f, mode: f.mode === 0o644 ? 0o755 : 0o644 });
          else if (f.pack) byIndex.set(c.at, { ...f, pack: { ...f.pack, offset: f.pack.offset + 1 } });
        }
        // the new tree as a sync builds it: fresh objects for every entry
        const after = sorted([...byIndex.values()].map((f) => ({ ...f, ...(f.pack ? { pack: { ...f.pack } } : {}) })));
        const known = new Set(first.manifests.map((m) => m.digest));
        const full = workspaceManifests(after, known);
        const reused = workspaceManifests(after, known, { tree: before, layout: first.layout });
        expect(reused.indexDigest).toBe(full.indexDigest);
        expect(reused.manifests).toEqual(full.manifests);
        expect(reused.layout).toEqual(full.layout);
        expect(reused.todo.map((t) => t.digest)).toEqual(full.todo.map((t) => t.digest));
        expect(reused.pageBlobs).toEqual(full.pageBlobs);
        // a layout that does not fit the tree is not used (every page encoded)
        expect(workspaceManifests(after, known, { tree: before, layout: first.layout.slice(1) }).indexDigest).toBe(full.indexDigest);
      }),
      { numRuns: 40 },
    );
  });

  it('a one-file change in a tree of many pages: the state keeps the layout, the next sync lists the other pages as they were, and the cluster tree read afresh is the directory', async () => {
    const root = await mkdtemp(join(tmpdir(), 'omni-sync-layout-'));
    try {
      const m = memoryStore();
      const counts = withCommit(m);
      const a = join(root, 'a');
      for (let d = 0; d < 10; d++) await mkdir(join(a, `d${d}`), { recursive: true });
      for (let i = 0; i < 1200; i++) await writeFile(join(a, `d${i % 10}`, `f${i}.txt`), `file ${i}\n`);
      await syncDir({ ...m, app: 'app', dir: a });
      const state1 = JSON.parse(await readFile(join(a, '.omni', 'sync-state.json'), 'utf8')) as { remotePages: string[]; remoteLayout: [number, number[]][] };
      expect(state1.remoteLayout.length).toBeGreaterThan(2);
      expect(state1.remoteLayout.reduce((n, [files]) => n + files, 0)).toBe(1200);
      expect(state1.remoteLayout.flatMap(([, sizes]) => sizes).length).toBe(state1.remotePages.length);
      await writeFile(join(a, 'd3', 'f513.txt'), 'changed\n');
      await syncDir({ ...m, app: 'app', dir: a });
      expect(counts.commits).toBe(2);
      const state2 = JSON.parse(await readFile(join(a, '.omni', 'sync-state.json'), 'utf8')) as { remotePages: string[]; remoteLayout: [number, number[]][] };
      expect(state2.remotePages.filter((d) => !state1.remotePages.includes(d)).length).toBe(1);
      expect(state2.remoteLayout.reduce((n, [files]) => n + files, 0)).toBe(1200);
      // another directory pulls the workspace through the index (no state): the same files
      const b = join(root, 'b');
      await mkdir(b);
      expect((await syncDir({ ...m, app: 'app', dir: b, direction: 'pull' })).downloaded).toBe(1200);
      expect(await readFile(join(b, 'd3', 'f513.txt'), 'utf8')).toBe('changed\n');
      expect(await readFile(join(b, 'd4', 'f514.txt'), 'utf8')).toBe('file 514\n');
      // and its state, from a fresh read of the index, has the same layout
      const stateB = JSON.parse(await readFile(join(b, '.omni', 'sync-state.json'), 'utf8')) as { remotePages: string[]; remoteLayout?: [number, number[]][] };
      expect(stateB.remotePages).toEqual(state2.remotePages);
      expect(stateB.remoteLayout).toEqual(state2.remoteLayout);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
