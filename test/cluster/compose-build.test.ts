// Compose stacks with build: (issue 17) on a 3-node loopback cluster: `omni compose build` builds
// the services through Forge several at a time (their images pinned by digest; build times of
// --parallel 2 and --parallel 1 are printed, not asserted: the host is shared), `config --pinned`
// writes the derived file (build blocks stripped, image: REPO@sha256:…), and — with a Docker
// engine — that file comes up on the cluster without building and the services answer HTTP.
// Without an engine, only that last part is skipped (loudly).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { tmpdir, homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { createServer, type AddressInfo } from 'node:net';
import type { LocalCluster } from '../../node/local-cluster.js';
import { dockerForTests } from '../support/docker.js';
import { formCluster, httpGet, waitFor } from './helpers.js';

const run = promisify(execFile);
const docker = await dockerForTests();
const noDocker = 'skip' in docker ? docker.skip : undefined;
if (noDocker) console.warn(`!!! SKIPPING the docker run of a built compose stack: ${noDocker}`);

const STACK = `
name: forged
services:
  api:
    build: ./api
    ports: ["\${API_PORT}:8080"]
    environment: {WHO: api}
    depends_on: [admin]
  admin:
    build:
      context: ./admin
      dockerfile: Dockerfile
    ports: ["\${ADMIN_PORT}:8080"]
`;

describe('compose stacks with build: (Forge)', () => {
  let c: LocalCluster;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let ports: Record<string, string>;
  const omni = async (args: string[]) => {
    const r = await run(resolve('bin/omni'), args, { env, cwd: dir, timeout: 600_000, maxBuffer: 16 * 1024 * 1024 }).catch((e: { code: number; stdout: string; stderr: string }) => e);
    if ('code' in r && r.code) throw new Error(`omni ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
    return r as { stdout: string; stderr: string };
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-compose-build-'));
    for (const s of ['api', 'admin']) {
      await cp('examples/node-api', join(dir, s), { recursive: true });
      // distinct sources: each service is its own build
      const server = join(dir, s, 'server.js');
      await writeFile(server, (await readFile(server, 'utf8')).replace('ok: true', `ok: true, service: '${s}'`));
    }
    await writeFile(join(dir, 'compose.yaml'), STACK);
    c = await formCluster(['c1', 'c2', 'c3']);
    // published ports picked free now (an auto-assigned host port may be one another process on
    // this shared host listens on 127.0.0.1, which then answers instead of the container)
    const free = async () => {
      const srv = createServer();
      await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
      const port = (srv.address() as AddressInfo).port;
      await new Promise((r) => srv.close(r));
      return String(port);
    };
    ports = { api: await free(), admin: await free() };
    env = { ...process.env, API_PORT: ports.api, ADMIN_PORT: ports.admin, OMNI_ADDR: c.nodes.get('c1')!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' };
    const baseEnv = { ...env, NODE: resolve('node_modules/node/bin/node'), OMNI_FORGE_BASE_CACHE: process.env.OMNI_FORGE_BASE_CACHE ?? join(homedir(), '.cache/omni/forge-base') };
    await run('scripts/forge-base.sh', ['node', '--import'], { env: baseEnv, timeout: 300_000, maxBuffer: 16 * 1024 * 1024 });
  }, 600_000);
  afterAll(async () => {
    await c?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  let images: Record<string, { image: string; reused: boolean }>;

  it('build: both services through Forge, pinned by digest; again: reused', async () => {
    let t0 = Date.now();
    const r = await omni(['compose', 'build', '--json', '--parallel', '2']);
    const parallelS = (Date.now() - t0) / 1000;
    images = (JSON.parse(r.stdout) as { images: typeof images }).images;
    expect(Object.keys(images).sort()).toEqual(['admin', 'api']);
    expect(images.api.image).toMatch(/^forged-api@sha256:[0-9a-f]{64}$/);
    expect(images.admin.image).toMatch(/^forged-admin@sha256:[0-9a-f]{64}$/);
    expect(images.api.reused).toBe(false);
    const again = JSON.parse((await omni(['compose', 'build', '--json'])).stdout) as { images: typeof images };
    expect(again.images.api).toEqual({ ...images.api, reused: true, sourceDigest: expect.any(String) });
    // the same builds, --rebuild: two at a time, then one at a time (figures only: a shared host)
    t0 = Date.now();
    await omni(['compose', 'build', '--rebuild', '--parallel', '2']);
    const rebuildParallelS = (Date.now() - t0) / 1000;
    t0 = Date.now();
    await omni(['compose', 'build', '--rebuild', '--parallel', '1']);
    const rebuildSerialS = (Date.now() - t0) / 1000;
    console.log(`compose build: first ${parallelS.toFixed(1)} s (parallel 2); rebuild parallel 2 ${rebuildParallelS.toFixed(1)} s, serial ${rebuildSerialS.toFixed(1)} s`);
  }, 900_000);

  it('config --pinned: build blocks stripped, images pinned; the file parses with no builds', async () => {
    const r = await omni(['compose', 'config', '--pinned']);
    expect(r.stdout).not.toMatch(/build:/);
    const doc = parseYaml(r.stdout) as { name: string; services: Record<string, { image: string; build?: unknown }> };
    expect(doc.name).toBe('forged');
    expect(doc.services.api.image).toMatch(/^forged-api@sha256:[0-9a-f]{64}$/);
    expect(doc.services.admin.image).toMatch(/^forged-admin@sha256:[0-9a-f]{64}$/);
    await writeFile(join(dir, 'pinned.yaml'), r.stdout);
    const cfg = JSON.parse((await omni(['compose', '-f', 'pinned.yaml', 'config', '--json'])).stdout) as { services: { service: string; build?: unknown; spec: { image: string } }[] };
    expect(cfg.services.every((s) => s.build === undefined)).toBe(true);
    expect(cfg.services.find((s) => s.service === 'api')!.spec.image).toBe(doc.services.api.image);
  }, 300_000);

  it.skipIf(noDocker !== undefined)('the pinned file comes up with the docker driver, without building, and answers HTTP', async () => {
    const r = await omni(['compose', '-f', 'pinned.yaml', 'up', '--timeout', '240', '--no-build']);
    expect(r.stdout).toMatch(/forged is healthy/);
    expect(r.stderr).not.toMatch(/building/);
    const client = c.client('c2');
    try {
      for (const s of ['api', 'admin']) {
        const eps = (await client.get<{ endpoints: { ports: Record<string, number> }[] }>(`/v1/apps/forged-${s}/endpoints`)).endpoints;
        expect(eps.length, JSON.stringify(eps)).toBe(1);
        expect(eps[0].ports.p8080, JSON.stringify(eps)).toBeGreaterThan(0);
        // no health check in the file: running counts as up, the server may still be starting
        const body = await waitFor(`${s} to answer`, async () => JSON.parse((await httpGet(eps[0].ports.p8080, '/x')).body) as { service: string }, 60_000, 300);
        expect(body.service).toBe(s);
        // "PUBLISHED:8080" is published through the routing mesh (the nodes share this host, so the
        // first node to bind the port answers and routes to the replica)
        const mesh = await waitFor(`${s} on its published port`, async () => JSON.parse((await httpGet(Number(ports[s]), '/x')).body) as { service: string }, 60_000, 300);
        expect(mesh.service).toBe(s);
      }
    } finally {
      client.close();
    }
    await omni(['compose', '-f', 'pinned.yaml', 'down']);
  }, 600_000);

  it.skipIf(noDocker !== undefined)('the pinned file deploys on a fresh cluster that never built anything (images copied by digest)', async () => {
    const doc = parseYaml(await readFile(join(dir, 'pinned.yaml'), 'utf8')) as { services: Record<string, { image: string }> };
    const fresh = await formCluster(['f1', 'f2', 'f3']);
    try {
      const freshEnv = { ...env, OMNI_ADDR: fresh.nodes.get('f1')!.apiUrl, OMNI_TOKEN: fresh.adminToken };
      const omniAt = async (e: NodeJS.ProcessEnv, args: string[]) => run(resolve('bin/omni'), args, { env: e, cwd: dir, timeout: 600_000, maxBuffer: 16 * 1024 * 1024 });
      // the images move as files (an OCI layout keeps the manifest's bytes: the same digest)
      for (const [s, { image }] of Object.entries(doc.services)) {
        await omniAt(env, ['images', 'pull', image, '-o', join(dir, `${s}.oci`)]);
        await omniAt(freshEnv, ['images', 'push', image, join(dir, `${s}.oci`)]);
      }
      const r = await omniAt(freshEnv, ['compose', '-f', 'pinned.yaml', 'up', '--timeout', '240']);
      expect(r.stdout).toMatch(/forged is healthy/);
      expect(r.stderr).not.toMatch(/build/i);
      const client = fresh.client('f1');
      try {
        // nothing was built there: the only apps are the stack's, running the pinned digests
        const apps = (await client.get<{ apps: { name: string }[] }>('/v1/apps')).apps.map((a) => a.name).sort();
        expect(apps).toEqual(['forged-admin', 'forged-api']);
        for (const s of ['api', 'admin']) {
          const a = await client.get<{ spec: { image: string; driver: string } }>(`/v1/apps/forged-${s}`);
          expect(a.spec.image).toBe(doc.services[s].image);
          const eps = (await client.get<{ endpoints: { ports: Record<string, number> }[] }>(`/v1/apps/forged-${s}/endpoints`)).endpoints;
          const body = await waitFor(`${s} answers on the fresh cluster`, async () => JSON.parse((await httpGet(eps[0].ports.p8080, '/x')).body) as { service: string }, 60_000, 300);
          expect(body.service).toBe(s);
        }
      } finally {
        client.close();
      }
    } finally {
      await fresh.destroy();
    }
  }, 600_000);

  it.skipIf(noDocker !== undefined)('build.dockerfile, args and target: a Docker build of exactly that, tagged by all three', async () => {
    const tool = join(dir, 'tool');
    await mkdir(tool);
    // 'other' would fail if it were built: only the target's stages are
    await writeFile(join(tool, 'Dockerfile.tool'), 'FROM omni-test/busybox:1 AS base\nARG GREETING=unset\nRUN echo "$GREETING" > /greeting\nFROM base AS final\nCMD ["cat", "/greeting"]\nFROM base AS other\nRUN false\n');
    const file = (greeting: string) => `name: forged\nservices:\n  tool:\n    build:\n      context: ./tool\n      dockerfile: Dockerfile.tool\n      args: {GREETING: ${greeting}}\n      target: final\n`;
    const dockerEnv = { DOCKER_HOST: `unix://${(docker as { socketPath: string }).socketPath}` };
    const build = async (greeting: string) => {
      await writeFile(join(dir, 'tool.yaml'), file(greeting));
      const r = await run(resolve('bin/omni'), ['compose', '-f', 'tool.yaml', 'build', '--json'], { env: { ...env, ...dockerEnv }, cwd: dir, timeout: 600_000, maxBuffer: 16 * 1024 * 1024 });
      return (JSON.parse(r.stdout) as { images: Record<string, { image: string; reused: boolean; sourceDigest: string }> }).images.tool;
    };
    const hello = await build('hello');
    expect(hello.image).toMatch(/^forged-tool@sha256:[0-9a-f]{64}$/);
    expect(hello.reused).toBe(false);
    const out = async (sourceDigest: string) => (await run('docker', ['run', '--rm', `omni-forge/forged-tool:sha-${sourceDigest.slice(7)}`], { env: { ...process.env, ...dockerEnv }, timeout: 120_000 })).stdout.trim();
    expect(await out(hello.sourceDigest)).toBe('hello');
    expect((await build('hello')).reused).toBe(true); // same source, same arguments
    const bye = await build('bye'); // same source, another argument: another image
    expect(bye.reused).toBe(false);
    expect(bye.image).not.toBe(hello.image);
    expect(bye.sourceDigest).toBe(hello.sourceDigest);
  }, 600_000);
});
