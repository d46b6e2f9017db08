// The air-gap bundle with a real engine: an app whose image was pushed to cluster A is exported
// (`omni bundle export`), cluster A is destroyed and the image removed from the engine, then the
// bundle is imported into a fresh 3-node cluster B (`omni bundle import`) and the app runs there
// on every node: its layers can only have come from the bundle.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { LocalCluster } from '../../node/local-cluster.js';
import { dockerForTests } from '../support/docker.js';
import { formCluster, httpGet, TEST_FLAGS, waitFor } from './helpers.js';

const run = promisify(execFile);
const docker = await dockerForTests();
const skip = 'skip' in docker ? docker.skip : undefined;
if (skip) console.warn(`!!! SKIPPING the bundle test with docker: ${skip}`);

describe.skipIf(skip !== undefined)('air-gap bundle', () => {
  let a: LocalCluster | undefined;
  let b: LocalCluster | undefined;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  const dk = async (...args: string[]) => (await run('docker', args, { env, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 })).stdout.trim();
  const omni = async (c: LocalCluster, node: string, ...args: string[]) => {
    const e = { ...process.env, OMNI_ADDR: c.nodes.get(node)!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' };
    return (await run('bin/omni', args, { env: e, timeout: 120_000 })).stdout;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-bundle-test-'));
    env = { ...process.env, DOCKER_HOST: `unix://${(docker as { socketPath: string }).socketPath}`, DOCKER_CONFIG: dir };
  });
  afterAll(async () => {
    await a?.destroy();
    await b?.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  it('an app exported from one cluster runs on a fresh cluster from the bundle alone', async () => {
    // cluster A: one node; an image pushed to its registry, an app of it
    a = await LocalCluster.create({ flags: TEST_FLAGS });
    await a.init('a1');
    const client = a.client('a1');
    const regA = (await client.get<{ address: string }>('/v1/registry')).address;
    await new Promise<void>((resolve, reject) => {
      const p = execFile('docker', ['login', '-u', 'omni', '--password-stdin', regA], { env, timeout: 60_000 }, (err) => (err ? reject(err) : resolve()));
      p.stdin!.end(a!.adminToken);
    });
    const marker = `bundle-${randomBytes(4).toString('hex')}`;
    const local = `omni-bundle-test/${marker}:1`;
    const dockerfile = `FROM ${(docker as { image: string }).image}\nRUN mkdir -p /www && echo ${marker} > /www/index.html && dd if=/dev/urandom of=/www/blob bs=1M count=3 2>/dev/null\n`;
    await new Promise<void>((resolve, reject) => {
      const p = execFile('docker', ['build', '-q', '-t', local, '-'], { env: { ...env, DOCKER_BUILDKIT: '0' }, timeout: 120_000 }, (err) => (err ? reject(err) : resolve()));
      p.stdin!.end(dockerfile);
    });
    await dk('tag', local, `${regA}/bundle/web:1`);
    await dk('push', `${regA}/bundle/web:1`);
    const imageId = await dk('image', 'inspect', '--format', '{{.Id}}', local);
    const spec = {
      name: 'bweb',
      image: 'bundle/web:1',
      args: ['httpd', '-f', '-p', '8080', '-h', '/www'],
      ports: [{ name: 'http', port: 8080 }],
      replicas: 3,
      antiAffinity: true,
      resources: { cpu: 0.1, memory: '32M' },
      healthCheck: { type: 'http', port: 'http', path: '/', intervalMs: 300, timeoutMs: 1000, retries: 3 },
    };
    // on A (one node) the app is created with no replicas running: only its spec matters here
    expect((await client.raw('POST', '/v1/apps', { ...spec, replicas: 0 })).status).toBe(201);
    const digest = (await client.get<{ digest: string }>('/v1/images/inspect?ref=bundle/web:1')).digest;
    client.close();
    const file = join(dir, 'web.omnibundle');
    const exported = JSON.parse(await omni(a, 'a1', 'bundle', 'export', 'bweb', '-o', file, '--json')) as { apps: string[]; images: { repository: string; digest: string; tags: string[] }[]; blobs: number; sizeBytes: number };
    expect(exported.apps).toEqual(['bweb']);
    expect(exported.images).toEqual([{ repository: 'bundle/web', digest, tags: ['1'] }]);
    expect(exported.blobs).toBeGreaterThanOrEqual(4); // manifest, config, base layer, our layer
    expect(exported.sizeBytes).toBeGreaterThan(3 * 1024 * 1024);
    // the bundle is an OCI layout too: its index names the image
    const listing = (await run('tar', ['-tf', file])).stdout.split('\n');
    expect(listing).toEqual(expect.arrayContaining(['oci-layout', 'index.json', 'omni-bundle.json', `blobs/sha256/${digest.slice(7)}`]));

    // A is gone, and the engine has no copy of the image any more
    await a.destroy();
    a = undefined;
    await dk('rmi', '-f', imageId);
    const gone = await dk('image', 'inspect', imageId).then(() => 'still there', () => 'gone');
    expect(gone).toBe('gone');

    // cluster B: fresh, 3 nodes; the bundle is its only source
    b = await formCluster(['b1', 'b2', 'b3']);
    const imported = JSON.parse(await omni(b, 'b2', 'bundle', 'import', file, '--json')) as { images: { digest: string }[]; blobsUploaded: number; apps: { name: string; action: string }[] };
    expect(imported.images.map((i) => i.digest)).toEqual([digest]);
    expect(imported.blobsUploaded).toBeGreaterThanOrEqual(3);
    expect(imported.apps).toEqual([expect.objectContaining({ name: 'bweb', action: 'created' })]);
    const bc = b.client('b1');
    try {
      // the spec carried over (replicas 0 on A); scale it to every node of B
      expect((await bc.post('/v1/apps/bweb/scale', { replicas: 3 })) as unknown).toBeTruthy();
      const app = await waitFor('3 healthy replicas on B', async () => {
        const x = await bc.get<{ healthy: number; spec: { image: string }; endpoints: { node: string; ports: Record<string, number> }[] }>('/v1/apps/bweb');
        return x.healthy === 3 ? x : undefined;
      }, 120_000, 500);
      expect(app.spec.image).toBe(`bundle/web@${digest}`);
      expect(new Set(app.endpoints.map((e) => e.node))).toEqual(new Set(['b1', 'b2', 'b3']));
      for (const e of app.endpoints) expect((await httpGet(e.ports.http)).body.trim()).toBe(marker);
      // the tag came along
      const ls = JSON.parse(await omni(b, 'b3', 'images', 'ls', '--json')) as { images: { repository: string; tag: string; digest: string }[] };
      expect(ls.images).toContainEqual(expect.objectContaining({ repository: 'bundle/web', tag: '1', digest }));
      // importing again changes nothing and uploads nothing
      const again = JSON.parse(await omni(b, 'b1', 'bundle', 'import', file, '--json')) as { blobsUploaded: number; apps: { action: string }[] };
      expect(again.blobsUploaded).toBe(0);
      expect(again.apps[0].action).not.toBe('created');
      expect((await bc.raw('DELETE', '/v1/apps/bweb')).status).toBe(200);
    } finally {
      bc.close();
    }
  });
});
