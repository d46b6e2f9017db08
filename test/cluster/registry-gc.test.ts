// Registry garbage collection and re-replication on a 3-node loopback cluster (no Docker: images
// are pushed with plain /v2/ requests and the app runs on the mock driver, which is all GC needs:
// the app's spec pins the image's digest). GC never deletes a blob of a running app, even with
// no tag left, and deletes an unreferenced one from every node; --dry-run lists without deleting;
// --keep-last keeps the newest tags; a blob whose holder is killed gets a new copy.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { LocalCluster } from '../../node/local-cluster.js';
import { formCluster, status, waitFor } from './helpers.js';

const run = promisify(execFile);
const sha = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';

interface Pushed {
  manifest: string;
  config: string;
  layers: string[];
}

interface GcView {
  dryRun: boolean;
  removed: { tags: { repository: string; tag: string }[]; manifests: string[]; blobs: { digest: string }[] };
  keptYoung: { manifests: number; blobs: number };
  nodes: { node: string; deleted: { digest: string }[]; deletedCount: number; error?: string }[];
}

describe('registry garbage collection and re-replication', () => {
  let c: LocalCluster;
  const names = ['g1', 'g2', 'g3'];
  const reg: Record<string, string> = {};
  // a base layer shared by every image
  const base = randomBytes(200 * 1024);

  const omni = async (...args: string[]) => {
    const env = { ...process.env, OMNI_ADDR: c.nodes.get('g2')!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' };
    return (await run('bin/omni', args, { env, timeout: 60_000 })).stdout;
  };
  const gc = async (...args: string[]) => JSON.parse(await omni('images', 'gc', '--json', ...args)) as GcView;

  async function v2(node: string, method: string, path: string, body?: Uint8Array | string, headers: Record<string, string> = {}) {
    const res = await fetch(`http://${reg[node]}/v2/${path}`, { method, body, headers: { authorization: `Bearer ${c.adminToken}`, ...headers } });
    return { status: res.status, bytes: Buffer.from(await res.arrayBuffer()) };
  }

  async function pushBlob(node: string, repo: string, bytes: Uint8Array): Promise<string> {
    const d = sha(bytes);
    const r = await v2(node, 'POST', `${repo}/blobs/uploads/?digest=${d}`, bytes, { 'content-type': 'application/octet-stream' });
    expect(r.status, r.bytes.toString()).toBe(201);
    return d;
  }

  /** An image (config, the shared base, one layer of its own) pushed to `node` as repo:tag. */
  async function pushImage(node: string, repo: string, tag: string, layerBytes = 300 * 1024): Promise<Pushed> {
    const configBytes = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers' }, id: randomBytes(8).toString('hex') }));
    const config = await pushBlob(node, repo, configBytes);
    const baseDigest = await pushBlob(node, repo, base);
    const own = randomBytes(layerBytes);
    const layer = await pushBlob(node, repo, own);
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: DOCKER_MANIFEST,
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: config, size: configBytes.length },
      layers: [
        { mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: baseDigest, size: base.length },
        { mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: layer, size: own.length },
      ],
    });
    const r = await v2(node, 'PUT', `${repo}/manifests/${tag}`, manifest, { 'content-type': DOCKER_MANIFEST });
    expect(r.status, r.bytes.toString()).toBe(201);
    return { manifest: sha(Buffer.from(manifest)), config, layers: [baseDigest, layer] };
  }

  /** The nodes whose blob store holds a blob (read from their data dirs). */
  function onDisk(digest: string): string[] {
    return names.filter((n) => c.nodes.get(n)!.running && existsSync(join(c.dataDir(n), 'registry', 'blobs', 'sha256', digest.slice('sha256:'.length))));
  }

  beforeAll(async () => {
    c = await formCluster(names);
    for (const n of names) {
      const client = c.client(n);
      reg[n] = (await client.get<{ address: string }>('/v1/registry')).address;
      client.close();
    }
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('never deletes the blobs of a running app (no tag left, only its pinned digest), deletes an unreferenced image from every node; --dry-run only lists', async () => {
    const app = await pushImage('g1', 'gc/app', '1');
    const old = await pushImage('g3', 'gc/old', '1');
    const client = c.client('g2');
    try {
      const r = await client.raw('POST', '/v1/apps', { name: 'gcapp', image: 'gc/app:1', driver: 'mock', replicas: 2, resources: { cpu: 0.1, memory: '16M' } });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      await waitFor('the app runs', async () => (await client.get<{ running: number }>('/v1/apps/gcapp')).running === 2, 60_000, 300);
      expect((await client.get<{ spec: { image: string } }>('/v1/apps/gcapp')).spec.image).toBe(`gc/app@${app.manifest}`);
      // no tag left on either image: only the app's pinned digest keeps gc/app
      expect(await omni('images', 'rm', 'gc/app:1')).toContain('removed gc/app:1');
      expect(await omni('images', 'rm', 'gc/old:1')).toContain('removed gc/old:1');
    } finally {
      client.close();
    }
    const appBlobs = [app.config, ...app.layers];
    const oldOwn = [old.config, old.layers[1]];
    const before = new Map([...appBlobs, ...oldOwn].map((d) => [d, onDisk(d)]));
    for (const d of [...appBlobs, ...oldOwn]) expect(before.get(d)!.length, d).toBeGreaterThanOrEqual(2); // durability: pushed to 2 nodes

    // the default grace period (1 h) keeps everything just pushed
    const young = await gc();
    expect(young.removed.manifests).toEqual([]);
    expect(young.removed.blobs).toEqual([]);
    expect(young.keptYoung.manifests).toBeGreaterThanOrEqual(1);
    expect(young.nodes.map((n) => n.node)).toEqual(names);
    expect(young.nodes.every((n) => n.deletedCount === 0 && !n.error)).toBe(true);

    // a dry run lists the unreferenced image, on the catalog and on each node that holds it, and deletes nothing
    const dry = await gc('--dry-run', '--grace', '0');
    expect(dry.dryRun).toBe(true);
    expect(dry.removed.manifests).toEqual([old.manifest]);
    expect(dry.removed.blobs.map((b) => b.digest).sort()).toEqual([...oldOwn].sort());
    for (const n of dry.nodes) {
      expect(n.error).toBeUndefined();
      const listed = n.deleted.map((x) => x.digest).sort();
      expect(listed).toEqual(oldOwn.filter((d) => before.get(d)!.includes(n.node)).sort());
    }
    for (const [d, holders] of before) expect(onDisk(d), d).toEqual(holders);
    const text = await omni('images', 'gc', '--dry-run', '--grace', '0');
    expect(text).toContain(`would remove manifest  ${old.manifest}`);
    expect(text).toMatch(/NODE\s+WOULD DELETE/);

    // the real run
    const done = await gc('--grace', '0');
    expect(done.dryRun).toBe(false);
    expect(done.removed.manifests).toEqual([old.manifest]);
    expect(done.removed.blobs.map((b) => b.digest).sort()).toEqual([...oldOwn].sort());
    expect(done.nodes.reduce((a, n) => a + n.deletedCount, 0)).toBe(oldOwn.reduce((a, d) => a + before.get(d)!.length, 0));
    for (const d of oldOwn) expect(onDisk(d), d).toEqual([]);
    for (const d of appBlobs) expect(onDisk(d), d).toEqual(before.get(d)); // the app's blobs (and the shared base) stay
    // the app's image is whole: a node that holds none of its layer fetches it from its peers
    const layer = app.layers[1];
    const bystander = names.find((n) => !before.get(layer)!.includes(n))!;
    const got = await v2(bystander, 'GET', `gc/app/blobs/${layer}`);
    expect(got.status).toBe(200);
    expect(sha(got.bytes)).toBe(layer);
    expect((await v2(bystander, 'GET', `gc/app/manifests/${app.manifest}`, undefined, { accept: DOCKER_MANIFEST })).status).toBe(200);
    // the collected image is gone from the registry
    expect((await v2('g1', 'GET', `gc/old/blobs/${old.layers[1]}`)).status).toBe(404);
    // a second run finds nothing more
    const again = await gc('--grace', '0');
    expect(again.removed.manifests).toEqual([]);
    expect(again.removed.blobs).toEqual([]);
    expect(again.nodes.every((n) => n.deletedCount === 0)).toBe(true);
  });

  it('--keep-last N keeps the newest N tags of each repository and collects the rest', async () => {
    const pushed: Pushed[] = [];
    for (const tag of ['v1', 'v2', 'v3']) pushed.push(await pushImage('g2', 'gc/ret', tag, 50 * 1024));
    const dry = await gc('--keep-last', '1', '--grace', '0', '--dry-run');
    expect(dry.removed.tags.map((t) => `${t.repository}:${t.tag}`)).toEqual(['gc/ret:v1', 'gc/ret:v2']);
    expect(dry.removed.manifests.sort()).toEqual([pushed[0].manifest, pushed[1].manifest].sort());
    const done = await gc('--keep-last', '1', '--grace', '0');
    expect(done.removed.tags).toHaveLength(2);
    const ls = JSON.parse(await omni('images', 'ls', '--json')) as { images: { repository: string; tag: string }[] };
    expect(ls.images.filter((i) => i.repository === 'gc/ret').map((i) => i.tag)).toEqual(['v3']);
    for (const p of pushed.slice(0, 2)) expect(onDisk(p.layers[1])).toEqual([]);
    expect(onDisk(pushed[2].layers[1]).length).toBeGreaterThanOrEqual(2);
    expect(onDisk(pushed[0].layers[0]).length).toBeGreaterThanOrEqual(2); // the shared base is still used
  });

  it('a holder that is killed: the leader has a live node fetch a copy until the blob is on 2 nodes again', async () => {
    // push to a follower; its replica may be the leader or the other follower
    const s = await status(c, 'g1');
    const followers = names.filter((n) => n !== s.leader);
    const x = followers[0];
    const p = await pushImage(x, 'gc/rep', '1', 100 * 1024);
    const layer = p.layers[1];
    const holders = onDisk(layer);
    expect(holders).toHaveLength(2);
    const victim = holders.find((n) => n !== s.leader)!;
    const third = names.find((n) => !holders.includes(n))!;
    await c.kill(victim, 'SIGKILL');
    await waitFor(`${third} gets a copy`, async () => onDisk(layer).includes(third), 90_000, 500);
    expect(onDisk(layer).filter((n) => n !== victim)).toHaveLength(2);
    // the leader made the copy (and says so); other nodes report no re-replication duty
    const view = async (n: string) => {
      const client = c.client(n);
      try {
        return await client.get<{ replication: { copied: number; replicas: number } | null }>('/v1/registry');
      } finally {
        client.close();
      }
    };
    // The leader now (a leader change while the victim was down moves the duty, and the count
    // starts again on the new leader): exactly one live node has the duty; the one from before
    // the kill, when it still leads, counts the copy it made.
    const live = names.filter((n) => n !== victim);
    const views = await Promise.all(live.map(async (n) => ({ n, r: (await view(n)).replication })));
    const leading = views.filter((v) => v.r !== null);
    expect(leading).toHaveLength(1);
    expect(leading[0].r!.replicas).toBe(2);
    if (leading[0].n === s.leader) expect(leading[0].r!.copied).toBeGreaterThanOrEqual(1);
  });
});
