// omni sync against a 3-node loopback cluster: push, pull, a conflict (the loser kept as
// NAME.conflict), resume after an interrupted upload, a symlink leaving the directory refused,
// and the workspace surviving the loss of the node that took the upload.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { encodeSyncCommit } from '../../protocol/sync/commit.js';
import { LocalCluster } from '../../node/local-cluster.js';
import { RegistryClient, type Registry } from '../../cli/omni/registry-client.js';
import { syncProject } from '../../cli/omni/sync.js';
import { formCluster } from './helpers.js';

describe('omni sync', () => {
  let c: LocalCluster;
  let dir: string;
  const regOf = async (name: string) => new RegistryClient((await c.client(name).get<{ url: string }>('/v1/registry')).url, c.adminToken, undefined);
  const newDir = async (n: string) => {
    const d = join(dir, n);
    await mkdir(d, { recursive: true });
    return d;
  };
  const big = randomBytes(9 * 1024 * 1024 + 123); // three chunks

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-sync-'));
    c = await formCluster(['s1', 's2', 's3']);
  }, 240_000);
  afterAll(async () => {
    await c?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('pushes a tree, pulls it into another directory, and a second sync is a no-op', async () => {
    const a = await newDir('a');
    await mkdir(join(a, 'src/lib'), { recursive: true });
    await writeFile(join(a, 'README'), 'hello\n');
    await writeFile(join(a, 'src/lib/x.ts'), 'export const x = 1;\n');
    await writeFile(join(a, 'run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
    await writeFile(join(a, 'big.bin'), big);
    await writeFile(join(a, 'empty'), '');
    await symlink('../../etc/passwd', join(a, 'escape'));
    const client = c.client('s1');
    const r = await syncProject({ client, app: 'proj', dir: a, registry: await regOf('s1') });
    expect(r.uploaded).toBe(5);
    expect(r.revision).toBe(1);
    expect(r.skipped).toEqual([{ path: 'escape', why: 'symlink pointing outside the directory' }]);
    expect(r.plan.remote.files.map((f) => f.path)).not.toContain('escape');
    const again = await syncProject({ client, app: 'proj', dir: a, registry: await regOf('s1') });
    expect(again.noop).toBe(true);
    expect(again.bytesUploaded).toBe(0);

    const b = await newDir('b');
    const p = await syncProject({ client: c.client('s2'), app: 'proj', dir: b, registry: await regOf('s2'), direction: 'pull' });
    expect(p.downloaded).toBe(5);
    expect(await readFile(join(b, 'src/lib/x.ts'), 'utf8')).toBe('export const x = 1;\n');
    expect((await readFile(join(b, 'big.bin'))).equals(big)).toBe(true);
    expect((await stat(join(b, 'run.sh'))).mode & 0o111).not.toBe(0);
    expect((await stat(join(b, 'empty'))).size).toBe(0);
  });

  it('a file changed on both sides: the cluster copy wins, the client copy is kept as NAME.conflict; deletions travel', async () => {
    const a = join(dir, 'a');
    const b = join(dir, 'b');
    await writeFile(join(a, 'README'), 'from a\n');
    await writeFile(join(b, 'README'), 'from b\n');
    await rm(join(b, 'empty'));
    await syncProject({ client: c.client('s2'), app: 'proj', dir: b, registry: await regOf('s2') });
    const r = await syncProject({ client: c.client('s1'), app: 'proj', dir: a, registry: await regOf('s1') });
    expect(r.conflicts).toEqual([{ path: 'README', winner: 'cluster', keptAs: 'README.conflict' }]);
    expect(await readFile(join(a, 'README'), 'utf8')).toBe('from b\n');
    expect(await readFile(join(a, 'README.conflict'), 'utf8')).toBe('from a\n');
    await expect(stat(join(a, 'empty'))).rejects.toThrow();
    // b gets the conflict copy on its next sync: both sides converge
    await syncProject({ client: c.client('s2'), app: 'proj', dir: b, registry: await regOf('s2') });
    expect(await readFile(join(b, 'README.conflict'), 'utf8')).toBe('from a\n');
  });

  it('an interrupted upload resumes: the chunks already sent are not sent again', async () => {
    const a = join(dir, 'a');
    // 2 MiB each: over the packing limit, so each file is one chunk blob (packs resume the same way: one blob each)
    for (let i = 0; i < 20; i++) await writeFile(join(a, `gen-${i}.bin`), randomBytes(2 * 1024 * 1024));
    const real = await regOf('s1');
    let uploads = 0;
    const flaky: Registry = {
      manifest: (r, d) => real.manifest(r, d),
      downloadBlob: (r, d, p, on) => real.downloadBlob(r, d, p, on),
      resolveTag: (r, t) => real.resolveTag(r, t),
      hasBlob: (r, d) => real.hasBlob(r, d),
      mountBlob: (r, d) => real.mountBlob(r, d),
      putManifest: (r, ref, b, m) => real.putManifest(r, ref, b, m),
      uploadBlob: async (r, d, p, on) => {
        // counts the contents (the 2 MiB chunks), not the workspace's description that goes up alongside
        if ((await stat(p)).size >= 1024 * 1024 && ++uploads > 8) throw new Error('connection cut (test)');
        return real.uploadBlob(r, d, p, on);
      },
    };
    await expect(syncProject({ client: c.client('s1'), app: 'proj', dir: a, registry: flaky })).rejects.toThrow(/connection cut/);
    const r = await syncProject({ client: c.client('s1'), app: 'proj', dir: a, registry: real });
    expect(r.uploaded).toBe(20);
    expect(r.chunksSkipped).toBeGreaterThanOrEqual(8);
    expect(r.bytesUploaded).toBeLessThanOrEqual(12 * 2 * 1024 * 1024);
  });

  it('two concurrent syncs: the record is compare-and-set, the loser plans again and both changes stay', async () => {
    const x = await newDir('x');
    const y = await newDir('y');
    await writeFile(join(x, 'shared'), 'v0');
    const reg = await regOf('s1');
    await syncProject({ client: c.client('s1'), app: 'race', dir: x, registry: reg });
    await syncProject({ client: c.client('s2'), app: 'race', dir: y, registry: await regOf('s2') });
    await writeFile(join(x, 'x.txt'), 'from x');
    await writeFile(join(y, 'y.txt'), 'from y');
    let raced = false;
    const r = await syncProject({
      client: c.client('s1'),
      app: 'race',
      dir: x,
      registry: reg,
      beforeCommit: async () => {
        if (raced) return;
        raced = true;
        await syncProject({ client: c.client('s2'), app: 'race', dir: y, registry: await regOf('s2') });
      },
    });
    expect(raced).toBe(true);
    expect(r.revision).toBe(3);
    expect(await readFile(join(x, 'y.txt'), 'utf8')).toBe('from y');
    const z = await newDir('z');
    await syncProject({ client: c.client('s2'), app: 'race', dir: z, registry: await regOf('s2'), direction: 'pull' });
    expect((await readFile(join(z, 'x.txt'), 'utf8')) + (await readFile(join(z, 'y.txt'), 'utf8'))).toBe('from xfrom y');
  });

  it('a commit in one request with a malformed body, or bytes that are not their digest, is refused and changes nothing', async () => {
    const client = c.client('s1');
    const before = await client.get<{ version: number }>(`/v1/kv/${encodeURIComponent('sync/proj')}`);
    await expect(client.post('/v1/sync/proj/commit', Buffer.from('garbage'))).rejects.toMatchObject({ code: 'BAD_REQUEST', detail: { status: 400 } });
    const blob = Buffer.from('these bytes');
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] }));
    const sha = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');
    const header = { expectedVersion: before.version, record: JSON.stringify({ index: sha(index), revision: 99 }), blobs: [{ digest: sha(Buffer.from('other bytes')), size: blob.length }], manifests: [{ digest: sha(index), mediaType: 'application/vnd.oci.image.index.v1+json', size: index.length }], tag: 'ws-99' };
    await expect(client.post('/v1/sync/proj/commit', encodeSyncCommit(header, [blob], [index]))).rejects.toMatchObject({ code: 'DIGEST_INVALID', detail: { status: 400 } });
    // a record that names another index than the one tagged
    await expect(client.post('/v1/sync/proj/commit', encodeSyncCommit({ ...header, blobs: [{ digest: sha(blob), size: blob.length }], record: JSON.stringify({ index: sha(blob), revision: 99 }) }, [blob], [index]))).rejects.toMatchObject({ code: 'BAD_REQUEST', detail: { status: 400 } });
    await expect(client.post('/v1/sync/proj/commit', encodeSyncCommit({ ...header, blobs: [{ digest: sha(blob), size: blob.length }], expectedVersion: before.version + 7 }, [blob], [index]))).rejects.toMatchObject({ code: 'CONFLICT', detail: { status: 409 } });
    await expect(client.post('/v1/sync/NOT_AN_APP/commit', encodeSyncCommit(header, [blob], [index]))).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    expect((await client.get<{ version: number }>(`/v1/kv/${encodeURIComponent('sync/proj')}`)).version).toBe(before.version);
  });

  it('the workspace survives the loss of the node that took the upload', async () => {
    const d = await newDir('c');
    const payload = randomBytes(5 * 1024 * 1024);
    await writeFile(join(d, 'data.bin'), payload);
    await syncProject({ client: c.client('s3'), app: 'lost', dir: d, registry: await regOf('s3') });
    // a small change then goes in one request (POST /v1/sync/<app>/commit) to the same node: its
    // blobs are copied to another node before the record names them
    const commits = { n: 0 };
    const client = c.client('s3');
    const post = client.post.bind(client);
    client.post = (async (path: string, body: unknown) => (path.endsWith('/commit') && commits.n++, post(path, body))) as typeof client.post;
    await writeFile(join(d, 'note.txt'), 'small, committed in one request\n');
    expect((await syncProject({ client, app: 'lost', dir: d, registry: await regOf('s3') })).revision).toBe(2);
    expect(commits.n).toBe(1);
    await c.kill('s3');
    const e = await newDir('e');
    const deadline = Date.now() + 60_000;
    for (;;) {
      try {
        await syncProject({ client: c.client('s1'), app: 'lost', dir: e, registry: await regOf('s1'), direction: 'pull' });
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    expect((await readFile(join(e, 'data.bin'))).equals(payload)).toBe(true);
    expect(await readFile(join(e, 'note.txt'), 'utf8')).toBe('small, committed in one request\n');
  });
});
