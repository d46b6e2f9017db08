// The registry with the real clients on a 3-node loopback cluster: `docker push` to one node and
// `docker pull` from another (the blobs move between the nodes over libp2p), `skopeo copy` both
// ways, a read-only pull token, a holder stalled then killed during a pull, a holder whose copy
// is corrupt. Images are built locally (no outside registry is reachable).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createHash, randomBytes } from 'node:crypto';
import type { LocalCluster } from '../../node/local-cluster.js';
import { dockerForTests } from '../support/docker.js';
import { formCluster, status, waitFor } from './helpers.js';

const run = promisify(execFile);
const docker = await dockerForTests();
const skip = 'skip' in docker ? docker.skip : undefined;
if (skip) console.warn(`!!! SKIPPING registry tests with docker and skopeo: ${skip}`);
const skopeoMissing = !['/usr/bin/skopeo', '/usr/local/bin/skopeo'].some((p) => existsSync(p));
if (skopeoMissing && !skip) {
  if (process.env.OMNI_REQUIRE_DOCKER === '1') throw new Error('OMNI_REQUIRE_DOCKER=1 but skopeo is not installed (apt-get install -y skopeo)');
  console.warn('!!! SKIPPING the skopeo test: skopeo is not installed (apt-get install -y skopeo)');
}

interface RegistryView {
  address: string;
  blobs: { count: number; bytes: number };
  transfers: { digest: string; sizeBytes: number; servedBy: Record<string, number>; dropped: Record<string, string>; ok: boolean }[];
}

describe.skipIf(skip !== undefined)('registry with docker and skopeo', () => {
  let c: LocalCluster;
  let cfgDir: string;
  const names = ['r1', 'r2', 'r3'];
  const reg: Record<string, string> = {};
  const ids: Record<string, string> = {};
  let env: NodeJS.ProcessEnv;
  const dk = async (...args: string[]) => (await run('docker', args, { env, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 })).stdout.trim();

  async function registryView(n: string): Promise<RegistryView> {
    const client = c.client(n);
    try {
      return await client.get<RegistryView>('/v1/registry');
    } finally {
      client.close();
    }
  }

  /** A fresh image: the base plus a 20 MiB random layer (21 pieces of 1 MiB), tagged `name`. */
  async function buildImage(name: string): Promise<void> {
    const dockerfile = `FROM ${(docker as { image: string }).image}\nRUN dd if=/dev/urandom of=/data bs=1M count=20 2>/dev/null && echo ${name} > /hello\n`;
    await new Promise<void>((resolve, reject) => {
      const p = execFile('docker', ['build', '-q', '-t', name, '-'], { env: { ...env, DOCKER_BUILDKIT: '0' }, timeout: 120_000 }, (err) => (err ? reject(err) : resolve()));
      p.stdin!.end(dockerfile);
    });
  }

  /** Removes every local tag of an image, so the next pull must download its layers. */
  async function forget(...refs: string[]): Promise<void> {
    await dk('rmi', '-f', ...refs).catch(() => undefined);
  }

  /** The digest of the image's largest layer (the random one) as the registry knows it. */
  async function bigLayer(node: string, ref: string): Promise<{ digest: string; sizeBytes: number }> {
    const client = c.client(node);
    try {
      const r = await client.get<{ blobs: { digest: string; sizeBytes: number }[] }>(`/v1/images/inspect?ref=${encodeURIComponent(ref)}`);
      return r.blobs.reduce((a, b) => (b.sizeBytes > a.sizeBytes ? b : a));
    } finally {
      client.close();
    }
  }

  /** The nodes whose blob store holds a blob (read from their data dirs). */
  function holdersOnDisk(digest: string): string[] {
    return names.filter((n) => c.nodes.get(n)!.running && existsSync(join(c.dataDir(n), 'registry', 'blobs', 'sha256', digest.slice('sha256:'.length))));
  }

  async function followers(): Promise<string[]> {
    const s = await status(c, names[0]);
    return names.filter((n) => n !== s.leader);
  }

  beforeAll(async () => {
    c = await formCluster(names);
    cfgDir = await mkdtemp(join(tmpdir(), 'omni-docker-cfg-'));
    env = { ...process.env, DOCKER_HOST: `unix://${(docker as { socketPath: string }).socketPath}`, DOCKER_CONFIG: cfgDir };
    for (const n of names) {
      reg[n] = (await registryView(n)).address;
      ids[n] = ((await status(c, n)) as unknown as { nodeId: string }).nodeId;
      await new Promise<void>((resolve, reject) => {
        const p = execFile('docker', ['login', '-u', 'omni', '--password-stdin', reg[n]], { env, timeout: 60_000 }, (err) => (err ? reject(err) : resolve()));
        p.stdin!.end(c.adminToken);
      });
    }
  });
  afterAll(async () => {
    await c?.destroy();
    if (cfgDir) await rm(cfgDir, { recursive: true, force: true });
  });

  it('docker push to one node completes with each blob on 2 nodes; docker pull from the third brings the layers over libp2p; a pull token reads but cannot push', async () => {
    const [a, b] = names;
    const local = `omni-reg-test/one-${randomBytes(3).toString('hex')}:1`;
    await buildImage(local);
    await dk('tag', local, `${reg[a]}/team/one:1`);
    await dk('push', `${reg[a]}/team/one:1`);
    await forget(local, `${reg[a]}/team/one:1`);
    // durability: when docker push returns, each blob is on the pushing node and one more
    const layer = await bigLayer(a, 'team/one:1');
    const holders = holdersOnDisk(layer.digest);
    expect(holders).toHaveLength(2);
    expect(holders).toContain(a);
    // the third node has none of it, and serves the pull
    const cc = names.find((n) => !holders.includes(n))!;
    expect((await registryView(cc)).transfers.find((t) => t.digest === layer.digest)).toBeUndefined();
    await dk('pull', `${reg[cc]}/team/one:1`);
    expect(await dk('run', '--rm', `${reg[cc]}/team/one:1`, 'cat', '/hello')).toBe(local);
    const t = (await registryView(cc)).transfers.find((x) => x.digest === layer.digest)!;
    expect(t.ok).toBe(true);
    expect(Object.values(t.servedBy).reduce((x, y) => x + y, 0)).toBe(Math.ceil(layer.sizeBytes / (1024 * 1024))); // every 1 MiB piece, once
    for (const peer of Object.keys(t.servedBy)) expect(holders.map((h) => ids[h])).toContain(peer);
    // the catalog is the same on every node
    for (const n of names) {
      const client = c.client(n);
      const images = (await client.get<{ images: { repository: string; tag: string }[] }>('/v1/images')).images;
      client.close();
      expect(images).toContainEqual(expect.objectContaining({ repository: 'team/one', tag: '1' }));
    }
    // a read-only pull token: docker login and pull work, a push is denied
    const admin = c.client(b);
    const pull = (await admin.post<{ token: string }>('/v1/tokens', { role: 'pull', name: 'ci pull' })).token;
    admin.close();
    const pullCfg = await mkdtemp(join(tmpdir(), 'omni-docker-pull-'));
    try {
      const penv = { ...env, DOCKER_CONFIG: pullCfg };
      await new Promise<void>((resolve, reject) => {
        const p = execFile('docker', ['login', '-u', 'puller', '--password-stdin', reg[b]], { env: penv, timeout: 60_000 }, (err) => (err ? reject(err) : resolve()));
        p.stdin!.end(pull);
      });
      await forget(`${reg[cc]}/team/one:1`);
      await run('docker', ['pull', `${reg[b]}/team/one:1`], { env: penv, timeout: 120_000 });
      await run('docker', ['tag', `${reg[b]}/team/one:1`, `${reg[b]}/team/denied:1`], { env: penv });
      const denied = await run('docker', ['push', `${reg[b]}/team/denied:1`], { env: penv, timeout: 120_000 }).then(
        () => 'pushed',
        (e: Error & { stderr?: string }) => e.stderr ?? e.message,
      );
      expect(denied).toMatch(/denied/i);
      await forget(`${reg[b]}/team/one:1`, `${reg[b]}/team/denied:1`);
    } finally {
      await rm(pullCfg, { recursive: true, force: true });
    }
  });

  it('omni images ls, inspect, rm and registry (text and --json)', async () => {
    const env = { ...process.env, OMNI_ADDR: c.nodes.get('r2')!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' };
    const omni = (...args: string[]) => run('bin/omni', args, { env, timeout: 60_000 });
    const ls = JSON.parse((await omni('images', 'ls', '--json')).stdout) as { images: { repository: string; tag: string; digest: string; sizeBytes: number }[] };
    const one = ls.images.find((i) => i.repository === 'team/one' && i.tag === '1')!;
    expect(one.sizeBytes).toBeGreaterThan(20 * 1024 * 1024);
    expect((await omni('images')).stdout).toMatch(new RegExp(`team/one\\s+1\\s+${one.digest.slice(0, 19)}`));
    const inspect = JSON.parse((await omni('images', 'inspect', 'team/one:1', '--json')).stdout) as { digest: string; tags: string[]; blobs: { sizeBytes: number; pieces: number; nodes: string[] }[] };
    expect(inspect.digest).toBe(one.digest);
    expect(inspect.tags).toEqual(['1']);
    const big = inspect.blobs.reduce((a, b) => (b.sizeBytes > a.sizeBytes ? b : a));
    expect(big.pieces).toBe(Math.ceil(big.sizeBytes / (1024 * 1024))); // 1 MiB pieces
    // pushed to r1, fetched by r3 and (with the pull token) by r2
    await waitFor('the holders are gossiped', async () => {
      const x = JSON.parse((await omni('images', 'inspect', 'team/one:1', '--json')).stdout) as typeof inspect;
      return [...x.blobs.reduce((a, b) => (b.sizeBytes > a.sizeBytes ? b : a)).nodes].sort().join() === 'r1,r2,r3';
    }, 30_000, 300);
    expect((await omni('images', 'inspect', `team/one@${one.digest}`)).stdout).toMatch(/PIECES/);
    expect((await omni('images', 'registry')).stdout).toContain(`registry ${reg.r2}`);
    expect((await omni('images', 'rm', 'team/one:1')).stdout.trim()).toBe('removed team/one:1');
    expect(JSON.parse((await omni('images', 'ls', '--json')).stdout).images.find((i: { repository: string }) => i.repository === 'team/one')).toBeUndefined();
    const again = await omni('images', 'rm', 'team/one:1').then(() => 'removed twice', (e: { stderr: string; code: number }) => `${e.code} ${e.stderr}`);
    expect(again).toMatch(/^1 .*NOT_FOUND/);
    const pull = await dk('pull', `${reg.r3}/team/one:1`).then(() => 'pulled', (e: { stderr: string }) => e.stderr);
    expect(pull).toMatch(/manifest unknown|not found/i);
  });

  it('an app of an image pushed to one node runs on all three, pinned to its digest; a retag does not change it', async () => {
    const [a, b] = names;
    const local = `omni-reg-test/web-${randomBytes(3).toString('hex')}:1`;
    await buildImage(local);
    await dk('tag', local, `${reg[a]}/apps/web:1`);
    await dk('push', `${reg[a]}/apps/web:1`);
    await forget(local, `${reg[a]}/apps/web:1`);
    const client = c.client(b);
    try {
      const digest = (await client.get<{ digest: string }>('/v1/images/inspect?ref=apps/web:1')).digest;
      const r = await client.raw('POST', '/v1/apps', {
        name: 'regweb',
        image: 'apps/web:1',
        args: ['sh', '-c', 'mkdir -p /www && cp /hello /www/index.html && exec httpd -f -p 8080 -h /www'],
        ports: [{ name: 'http', port: 8080 }],
        replicas: 3,
        antiAffinity: true,
        resources: { cpu: 0.1, memory: '32M' },
        healthCheck: { type: 'http', port: 'http', path: '/', intervalMs: 300, timeoutMs: 1000, retries: 3 },
      });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      const app = await waitFor('3 healthy replicas', async () => {
        const x = await client.get<{ healthy: number; spec: { image: string }; endpoints: { node: string; ports: Record<string, number> }[] }>('/v1/apps/regweb');
        return x.healthy === 3 ? x : undefined;
      }, 90_000, 500);
      expect(app.spec.image).toBe(`apps/web@${digest}`);
      expect(new Set(app.endpoints.map((e) => e.node))).toEqual(new Set(names));
      // The node the push did not copy the image to fetched its blobs from its peers before its
      // engine asked for them (a prefetch), every one it lacked, without error.
      const prefetched: { node: string; image: string; digest: string; blobs: number; missing: number; fetched: number; error?: string }[] = [];
      for (const n of names) {
        const nc = c.client(n);
        try {
          for (const p of (await nc.get<{ prefetches: Omit<(typeof prefetched)[number], 'node'>[] }>('/v1/registry')).prefetches) prefetched.push({ node: n, ...p });
        } finally {
          nc.close();
        }
      }
      const fetching = prefetched.filter((p) => p.image === `apps/web@${digest}` && p.fetched > 0);
      expect(fetching.length, JSON.stringify(prefetched)).toBeGreaterThanOrEqual(1);
      for (const p of fetching) {
        expect(p.error).toBeUndefined();
        expect(p.digest).toBe(digest);
        expect(p.fetched).toBe(p.missing);
        expect(p.blobs).toBeGreaterThanOrEqual(p.missing);
      }
      for (const e of app.endpoints) expect((await fetch(`http://127.0.0.1:${e.ports.http}/`)).status).toBe(200);
      // apps/web:1 now names another image: the running app keeps its digest
      const other = `omni-reg-test/web2-${randomBytes(3).toString('hex')}:1`;
      await buildImage(other);
      await dk('tag', other, `${reg[a]}/apps/web:1`);
      await dk('push', `${reg[a]}/apps/web:1`);
      await forget(other, `${reg[a]}/apps/web:1`);
      expect((await client.get<{ digest: string }>('/v1/images/inspect?ref=apps/web:1')).digest).not.toBe(digest);
      expect((await client.get<{ spec: { image: string } }>('/v1/apps/regweb')).spec.image).toBe(`apps/web@${digest}`);
      // garbage collection with no grace period keeps every blob of the running app (its image has
      // no tag left: apps/web:1 moved on), on every node that held one, and every node still serves them
      const layer = await bigLayer(b, `apps/web@${digest}`);
      const held = holdersOnDisk(layer.digest);
      const gc = (await client.post<{ removed: { manifests: string[]; blobs: { digest: string }[] }; nodes: { error?: string }[] }>('/v1/images/gc', { graceMs: 0 }));
      expect(gc.removed.manifests).not.toContain(digest);
      expect(gc.removed.blobs.map((x) => x.digest)).not.toContain(layer.digest);
      expect(gc.nodes.filter((n) => n.error)).toEqual([]);
      expect(holdersOnDisk(layer.digest)).toEqual(held);
      for (const n of names) {
        const res = await fetch(`http://${reg[n]}/v2/apps/web/blobs/${layer.digest}`, { headers: { authorization: `Bearer ${c.adminToken}` } });
        expect(res.status).toBe(200);
        expect('sha256:' + createHash('sha256').update(Buffer.from(await res.arrayBuffer())).digest('hex')).toBe(layer.digest);
      }
      expect((await client.raw('DELETE', '/v1/apps/regweb')).status).toBe(200);
      const { default: Docker } = await import('dockerode');
      const engine = new Docker({ socketPath: (docker as { socketPath: string }).socketPath });
      await waitFor('containers removed', async () => (await engine.listContainers({ all: true, filters: { label: ['omni.app=regweb'] } })).length === 0, 60_000, 500);
    } finally {
      client.close();
    }
  });

  it.skipIf(skopeoMissing)('skopeo copy both ways between the registry and an OCI layout', async () => {
    const [a, b, cc] = names;
    const local = `omni-reg-test/sk-${randomBytes(3).toString('hex')}:1`;
    await buildImage(local);
    await dk('tag', local, `${reg[a]}/sk/src:1`);
    await dk('push', `${reg[a]}/sk/src:1`);
    await forget(local, `${reg[a]}/sk/src:1`);
    const dir = await mkdtemp(join(tmpdir(), 'omni-skopeo-'));
    try {
      const creds = `omni:${c.adminToken}`;
      // out of the registry through node c (which fetches the blobs from a), into an OCI layout
      await run('skopeo', ['copy', '--src-creds', creds, '--src-tls-verify=false', `docker://${reg[cc]}/sk/src:1`, `oci:${dir}/layout:1`], { timeout: 120_000 });
      // and back in, through node b, under another name
      await run('skopeo', ['copy', '--dest-creds', creds, '--dest-tls-verify=false', `oci:${dir}/layout:1`, `docker://${reg[b]}/sk/copy:v2`], { timeout: 120_000 });
      const tags = JSON.parse((await run('skopeo', ['list-tags', '--creds', creds, '--tls-verify=false', `docker://${reg[a]}/sk/copy`])).stdout) as { Tags: string[] };
      expect(tags.Tags).toEqual(['v2']);
      await dk('pull', `${reg[a]}/sk/copy:v2`);
      expect(await dk('run', '--rm', `${reg[a]}/sk/copy:v2`, 'cat', '/hello')).toBe(local);
      await forget(`${reg[a]}/sk/copy:v2`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a holder that stalls and is then killed during a pull: the pull completes from the other holder', async () => {
    const [x] = await followers();
    const local = `omni-reg-test/kill-${randomBytes(3).toString('hex')}:1`;
    await buildImage(local);
    await dk('tag', local, `${reg[x]}/team/kill:1`);
    await dk('push', `${reg[x]}/team/kill:1`);
    await forget(local, `${reg[x]}/team/kill:1`);
    // x and its replica y hold it; z pulls
    const layer = await bigLayer(x, 'team/kill:1');
    const y = holdersOnDisk(layer.digest).find((n) => n !== x)!;
    const z = names.find((n) => n !== x && n !== y)!;
    await waitFor('z hears that x and y hold the layer', async () => {
      const client = c.client(z);
      const r = await client.get<{ blobs: { digest: string; nodes: string[] }[] }>(`/v1/images/inspect?ref=team/kill:1`);
      client.close();
      const nodes = r.blobs.find((bl) => bl.digest === layer.digest)!.nodes;
      return nodes.includes(x) && nodes.includes(y);
    }, 30_000, 200);
    // x stops answering (SIGSTOP), z starts pulling, then x is killed
    const victim = c.nodes.get(x)!.proc;
    victim.kill('SIGSTOP');
    const pulling = dk('pull', `${reg[z]}/team/kill:1`);
    await new Promise((r) => setTimeout(r, 1500));
    await c.kill(x, 'SIGKILL');
    await pulling;
    expect(await dk('run', '--rm', `${reg[z]}/team/kill:1`, 'cat', '/hello')).toBe(local);
    const t = (await registryView(z)).transfers.find((tr) => tr.digest === layer.digest)!;
    expect(t.ok).toBe(true);
    expect(Object.keys(t.dropped)).toEqual([ids[x]]);
    expect(t.servedBy[ids[y]]).toBeGreaterThan(0);
    await forget(`${reg[z]}/team/kill:1`);
    await c.restart(x);
    reg[x] = (await registryView(x)).address;
    await new Promise<void>((resolve, reject) => {
      const p = execFile('docker', ['login', '-u', 'omni', '--password-stdin', reg[x]], { env, timeout: 60_000 }, (err) => (err ? reject(err) : resolve()));
      p.stdin!.end(c.adminToken);
    });
  });

  it('a holder whose copy is corrupt refuses to serve it and drops it; the pull gets good pieces elsewhere', async () => {
    const [a] = names;
    const local = `omni-reg-test/bad-${randomBytes(3).toString('hex')}:1`;
    await buildImage(local);
    await dk('tag', local, `${reg[a]}/team/bad:1`);
    await dk('push', `${reg[a]}/team/bad:1`);
    await forget(local, `${reg[a]}/team/bad:1`);
    const layer = await bigLayer(a, 'team/bad:1');
    const b = holdersOnDisk(layer.digest).find((n) => n !== a)!; // a's replica
    const cc = names.find((n) => n !== a && n !== b)!;
    // damage b's copy: two bytes in every 1 MiB piece (whichever piece b is asked for, it is bad)
    const file = join(c.dataDir(b), 'registry', 'blobs', 'sha256', layer.digest.slice('sha256:'.length));
    const fh = await open(file, 'r+');
    for (let off = 1000; off < layer.sizeBytes; off += 1024 * 1024) await fh.write(Buffer.from([0x5a, 0xa5]), 0, 2, off);
    await fh.close();
    await waitFor('c hears that a and b hold the layer', async () => {
      const client = c.client(cc);
      const r = await client.get<{ blobs: { digest: string; nodes: string[] }[] }>(`/v1/images/inspect?ref=team/bad:1`);
      client.close();
      const nodes = r.blobs.find((bl) => bl.digest === layer.digest)!.nodes;
      return nodes.includes(a) && nodes.includes(b);
    }, 30_000, 200);
    await dk('pull', `${reg[cc]}/team/bad:1`);
    expect(await dk('run', '--rm', `${reg[cc]}/team/bad:1`, 'cat', '/hello')).toBe(local);
    const t = (await registryView(cc)).transfers.find((tr) => tr.digest === layer.digest)!;
    expect(t.ok).toBe(true);
    expect(t.servedBy[ids[a]]).toBeGreaterThan(0);
    // b was asked for pieces, found its copy damaged, refused, and removed it
    expect(t.dropped[ids[b]]).toMatch(/damaged|not on this node/);
    expect(existsSync(file)).toBe(false);
    await forget(`${reg[cc]}/team/bad:1`);
  });
});
