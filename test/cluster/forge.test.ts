// Forge end to end on a 3-node loopback cluster with the real CLI: scripts/forge-base.sh makes
// the Node.js runtime base from this host's Node 24 (cached between runs under
// $OMNI_FORGE_BASE_CACHE or ~/.cache/omni/forge-base) and imports it with omni images
// import-rootfs; `omni build` of the node-api fixture through one node and again through
// another gives one digest (the second reuses the dependency layer from the registry); the
// image, pulled by Docker from a third node's /v2/, runs and answers HTTP. A failing build step
// exits 1 naming the step. `omni run DIR` deploys the build pinned by digest on 3 replicas (one per
// node) that answer HTTP; again it is unchanged; changed source rolls the app to a new digest.
// Builds run on a node as a job of the forge driver: the build's task, its log, the image read
// through another node; two identical builds at once are one build task; --cancel and Ctrl-C stop
// a build under way. Without a Docker engine, only the runs in containers are skipped.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir, homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { LocalCluster } from '../../node/local-cluster.js';
import { dockerForTests } from '../support/docker.js';
import { formCluster, waitFor, httpGet } from './helpers.js';

const run = promisify(execFile);

/** A port the OS says is free (from its ephemeral range, away from the apps' 20000+ host ports other clusters on this host use). */
async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}
const docker = await dockerForTests();
const noDocker = 'skip' in docker ? docker.skip : undefined;
if (noDocker) console.warn(`!!! SKIPPING the run of a Forge-built image in Docker: ${noDocker}`);

async function omniCli(env: NodeJS.ProcessEnv, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run('bin/omni', args, { env, timeout: 300_000, maxBuffer: 16 * 1024 * 1024 }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

interface Built {
  repository: string;
  digest: string;
  sourceDigest: string;
  tags: string[];
  depsReused: boolean;
  type: string;
}

describe('forge on a cluster', () => {
  let c: LocalCluster;
  let dir: string;
  const names = ['b1', 'b2', 'b3'];
  const omniEnv = (node: string) => ({ ...process.env, OMNI_ADDR: c.nodes.get(node)!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' });
  const omni = async (node: string, ...args: string[]) => {
    const r = await omniCli(omniEnv(node), args);
    if (r.code !== 0) throw new Error(`omni ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout.slice(-3000)}`);
    return r.stdout;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-forge-cluster-'));
    c = await formCluster(names);
  }, 120_000);
  afterAll(async () => {
    await c?.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  let built: Built;

  it('forge-base.sh imports the node base; omni build through two nodes gives one digest, the second reuses the dependencies', async () => {
    const env = { ...omniEnv('b1'), NODE: resolve('node_modules/node/bin/node'), OMNI_FORGE_BASE_CACHE: process.env.OMNI_FORGE_BASE_CACHE ?? join(homedir(), '.cache/omni/forge-base') };
    const base = await run('scripts/forge-base.sh', ['node', '--import'], { env, timeout: 300_000, maxBuffer: 16 * 1024 * 1024 });
    expect(base.stdout).toMatch(/^omni\/node:24 sha256:[0-9a-f]{64} \(one layer/m);

    const src = join(dir, 'node-api');
    await cp('examples/node-api', src, { recursive: true });
    built = JSON.parse(await omni('b1', 'build', src, '--repo', 'team/node-api', '--tag', 'v1', '--json')) as Built;
    expect(built).toMatchObject({ repository: 'team/node-api', type: 'node', depsReused: false });
    expect(built.tags).toEqual([`sha-${built.sourceDigest.slice(7)}`, 'v1']);
    // the build record in the replicated KV, readable from any node
    const rec = JSON.parse(await omni('b3', 'kv', 'get', `forge/builds/team/node-api/${built.tags[0]}`, '--json')) as { value: string };
    expect(JSON.parse(rec.value)).toMatchObject({ repository: 'team/node-api', digest: built.digest, sourceDigest: built.sourceDigest, type: 'node', runtime: 'omni/node:24' });
    // through another node, built again (--rebuild): the dependency layer comes from the registry
    const again = JSON.parse(await omni('b2', 'build', src, '--repo', 'team/node-api', '--rebuild', '--json')) as Built & { reused: boolean };
    expect(again.digest).toBe(built.digest);
    expect(again).toMatchObject({ reused: false, depsReused: true });
    const ls = JSON.parse(await omni('b3', 'images', 'ls', '--json')) as { images: { repository: string; tag: string; digest: string }[] };
    expect(ls.images.filter((i) => i.repository === 'team/node-api').map((i) => i.tag).sort()).toEqual([built.tags[0], 'v1'].sort());
    // the text output, and a progress-free run without a terminal
    const text = await omni('b3', 'build', src, '--repo', 'team/node-api');
    expect(text).toContain(`reused team/node-api@${built.digest} (this source was built before`);
  }, 600_000);

  type JobApp = { job: { phase: string; outcome: string; run: number; attempts: number }; tasks: { id: string; node: string; state: string }[] };
  const inspectApp = async (node: string, name: string): Promise<JobApp> => {
    const client = c.client(node);
    try {
      return await client.get<JobApp>(`/v1/apps/${name}`);
    } finally {
      client.close();
    }
  };

  it('the build is a job task on a node: placed, logged, pullable through another node; two identical builds at once are one build', async () => {
    // the first test's build ran as a job of the forge driver on a node of the cluster
    const b = (built as Built & { build?: string }).build!;
    expect(b).toMatch(/^build-[0-9a-f]{34}$/);
    const app = await inspectApp('b3', b);
    expect(app.job).toMatchObject({ phase: 'STOPPED', outcome: 'succeeded', run: 1, attempts: 1 });
    expect(app.tasks).toHaveLength(1);
    expect(names).toContain(app.tasks[0].node);
    const logs = await omni('b2', 'logs', b);
    expect(logs).toContain('--- fetch source');
    expect(logs).toContain(`built team/node-api@${built.digest}`);
    // the image is in the registry of a node other than the one that built it (and the one the CLI used)
    const other = names.find((n) => n !== app.tasks[0].node && n !== 'b1')!;
    const ls = JSON.parse(await omni(other, 'images', 'ls', '--json')) as { images: { repository: string; tag: string; digest: string }[] };
    expect(ls.images.find((i) => i.repository === 'team/node-api' && i.tag === 'v1')?.digest).toBe(built.digest);
    const client = c.client(other);
    try {
      const reg = (await client.get<{ url: string }>('/v1/registry')).url;
      const res = await fetch(new URL(`/v2/team/node-api/manifests/${built.digest}`, reg), { headers: { authorization: `Bearer ${c.adminToken}`, accept: 'application/vnd.oci.image.manifest.v1+json' } });
      expect(res.status).toBe(200);
    } finally {
      client.close();
    }

    // two identical builds at once, through two nodes: one build task, one result for both
    const src = join(dir, 'node-api-twice');
    await cp('examples/node-api', src, { recursive: true });
    await writeFile(join(src, 'extra.txt'), 'a change, so that nothing is reused\n');
    const [x, y] = await Promise.all([omniCli(omniEnv('b2'), ['build', src, '--repo', 'team/twice', '--json']), omniCli(omniEnv('b3'), ['build', src, '--repo', 'team/twice', '--json'])]);
    expect(x.code, x.stderr).toBe(0);
    expect(y.code, y.stderr).toBe(0);
    const rx = JSON.parse(x.stdout) as Built & { build: string; reused: boolean };
    const ry = JSON.parse(y.stdout) as Built & { build: string; reused: boolean };
    expect(rx.build).toBe(ry.build);
    expect(rx.digest).toBe(ry.digest);
    expect(rx.reused).toBe(false);
    const twice = await inspectApp('b1', rx.build);
    expect(twice.job).toMatchObject({ phase: 'STOPPED', outcome: 'succeeded', run: 1, attempts: 1 });
    expect(twice.tasks).toHaveLength(1);
    // the second submit found the first's app (under way, or already built when it came late)
    expect(`${x.stderr}\n${y.stderr}`).toMatch(/attached to the build under way|already built/);
  }, 600_000);

  it('a second build with the same lockfile lands on the node that holds its dependency layer (soft placement), not where the scheduler would put it otherwise', async () => {
    const env = { ...omniEnv('b1'), NODE: resolve('node_modules/node/bin/node'), OMNI_FORGE_BASE_CACHE: process.env.OMNI_FORGE_BASE_CACHE ?? join(homedir(), '.cache/omni/forge-base') };
    await run('scripts/forge-base.sh', ['node', '--import'], { env, timeout: 300_000, maxBuffer: 16 * 1024 * 1024 });
    // One copy of each blob: the dependency layer stays on the node that built it.
    await omni('b1', 'images', 'replicas', 'forge-cache/deps', '1');
    await omni('b1', 'images', 'replicas', 'team/warm', '1');
    // The fixture has no dependencies (npm ci gives the same empty layer whatever the lockfile): an
    // install step of its own makes each lockfile's dependency layer a blob of its own.
    const variant = async (name: string, pkgName: string, extra: string) => {
      const src = join(dir, name);
      await cp('examples/node-api', src, { recursive: true });
      for (const f of ['package.json', 'package-lock.json']) {
        const j = JSON.parse(await readFile(join(src, f), 'utf8')) as { name?: string; packages?: Record<string, { name?: string }> };
        j.name = pkgName;
        if (j.packages?.['']) j.packages[''].name = pkgName;
        await writeFile(join(src, f), JSON.stringify(j, null, 2));
      }
      await mkdir(join(src, '.omni'), { recursive: true });
      await writeFile(join(src, '.omni/build.yaml'), `install: mkdir -p node_modules/marker && echo ${pkgName} > node_modules/marker/name\n`);
      await writeFile(join(src, 'extra.txt'), extra);
      return src;
    };
    const buildOn = async (src: string) => {
      const r = JSON.parse(await omni('b1', 'build', src, '--repo', 'team/warm', '--json', '-q')) as Built & { build: string };
      const app = await inspectApp('b1', r.build);
      expect(app.tasks).toHaveLength(1);
      return { ...r, node: app.tasks[0].node };
    };
    // Where the scheduler puts a build of another lockfile when every node is eligible.
    const probe = await buildOn(await variant('warm-probe', 'warm-probe', 'probe\n'));
    // The first build of lockfile A, elsewhere (that node may not take new tasks meanwhile).
    await omni('b1', 'nodes', 'ineligible', probe.node);
    let first: Awaited<ReturnType<typeof buildOn>>;
    try {
      first = await buildOn(await variant('warm-a1', 'warm-a', 'one\n'));
    } finally {
      await omni('b1', 'nodes', 'eligible', probe.node);
    }
    expect(first.node).not.toBe(probe.node);
    expect(first.depsReused).toBe(false);
    // Source-only changes with lockfile A: each lands on the node holding A's layer, and reuses it.
    for (const extra of ['two\n', 'three\n']) {
      const next = await buildOn(await variant(`warm-a-${extra.trim()}`, 'warm-a', extra));
      expect(next.node).toBe(first.node);
      expect(next.depsReused).toBe(true);
    }
  }, 600_000);

  it('a build is cancelled by omni build --cancel and by Ctrl-C in omni build; its task stops', async () => {
    const src = join(dir, 'slow');
    await cp('test/fixtures/forge/static-site', src, { recursive: true });
    await mkdir(join(src, '.omni'), { recursive: true });
    await writeFile(join(src, '.omni/build.yaml'), 'runtime: omni/node:24\nsteps:\n  - name: slow\n    run: echo started; sleep 120; echo never\n');
    const d = await omniCli(omniEnv('b1'), ['build', src, '--repo', 'team/slow', '-d']);
    expect(d.code, d.stderr).toBe(0);
    const name = d.stdout.trim();
    expect(name).toMatch(/^build-[0-9a-f]{34}$/);
    await waitFor('the slow step runs', async () => (await omni('b2', 'logs', name)).includes('[slow] started'), 120_000, 500);
    expect((await omniCli(omniEnv('b3'), ['build', '--cancel', name])).code).toBe(0);
    await waitFor('the build stopped', async () => (await inspectApp('b1', name)).job.phase === 'STOPPED', 60_000, 300);
    expect((await inspectApp('b1', name)).job.outcome).toBe('stopped');
    await waitFor('its log says so', async () => (await omni('b2', 'logs', name)).includes('build cancelled'), 30_000, 500);
    expect(await omni('b2', 'logs', name)).not.toContain('[slow] never');

    // Ctrl-C: the same build again (a new run of the stopped job), interrupted while it runs
    const { spawn } = await import('node:child_process');
    const p = spawn('bin/omni', ['build', src, '--repo', 'team/slow'], { env: omniEnv('b2'), stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    p.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const exit = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
    await waitFor('omni build streams the slow step', async () => err.includes('[slow] started'), 120_000, 300);
    // the same build again: the stopped app runs again (the same run resumed, a new task)
    expect(err).toContain(`build ${name}: `);
    expect((await inspectApp('b1', name)).job).toMatchObject({ phase: 'RUNNING' });
    p.kill('SIGINT');
    expect(await exit).not.toBe(0);
    expect(err).toContain('build cancelled (Ctrl-C)');
    await waitFor('the build stopped again', async () => (await inspectApp('b1', name)).job.phase === 'STOPPED', 60_000, 300);
    expect((await inspectApp('b1', name)).job.outcome).toBe('stopped');
  }, 600_000);

  it.skipIf(noDocker !== undefined)('omni run DIR: built (or reused) and deployed pinned by digest; again unchanged; changed source rolls the app', async () => {
    type RunOut = { name: string; version: number; action: string; changed: boolean; healthy?: boolean; image: string; build: { repository: string; digest: string; reused: boolean; sourceDigest: string } };
    const endpoints = async () => {
      const client = c.client('b3');
      try {
        return (await client.get<{ endpoints: { ports: Record<string, number>; node: string }[] }>('/v1/apps/node-api')).endpoints;
      } finally {
        client.close();
      }
    };
    const answers = async () => Promise.all((await endpoints()).map(async (e) => JSON.parse((await httpGet(e.ports.http, '/hello')).body) as Record<string, unknown>));
    // 3 replicas, one per node, from the fixture itself (the app is named after the directory)
    const first = JSON.parse(await omni('b1', 'run', 'examples/node-api', '--replicas', '3', '--spread', '--json', '-q')) as RunOut;
    expect(first).toMatchObject({ name: 'node-api', version: 1, action: 'created', healthy: true, build: { repository: 'node-api', reused: false } });
    expect(first.image).toBe(`node-api@${first.build.digest}`);
    const eps = await endpoints();
    expect(new Set(eps.map((e) => e.node))).toEqual(new Set(names));
    expect(await answers()).toEqual([0, 1, 2].map(() => ({ ok: true, path: '/hello' })));
    // the spec runs the image pinned by digest
    const spec = JSON.parse(await omni('b2', 'inspect', 'node-api', '--json')) as { spec: { image: string; ports: { name: string; port: number }[]; healthCheck: { type: string } } };
    expect(spec.spec).toMatchObject({ image: first.image, ports: [{ name: 'http', port: 8080 }], healthCheck: { type: 'tcp' } });

    // again, through another node, the same source: the build is reused and the app left as it is
    const again = JSON.parse(await omni('b2', 'run', 'examples/node-api', '--replicas', '3', '--spread', '--json', '-q')) as RunOut;
    expect(again).toMatchObject({ name: 'node-api', version: 1, action: 'unchanged', changed: false, build: { digest: first.build.digest, reused: true } });
    const text = await omniCli(omniEnv('b3'), ['run', 'examples/node-api', '--replicas', '3', '--spread', '-q']);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain(`image node-api@${first.build.digest}`);
    expect(text.stderr).toContain(`node-api: reused node-api@${first.build.digest}`);
    expect(text.stderr).toContain('node-api: unchanged (version 1)');

    // changed source (a copy with another server.js): a new digest, the app rolled to it
    const changed = join(dir, 'changed', 'node-api');
    await cp('examples/node-api', changed, { recursive: true });
    await writeFile(join(changed, 'server.js'), (await readFile(join(changed, 'server.js'), 'utf8')).replace('ok: true,', 'ok: true, v: 2,'));
    const rolled = JSON.parse(await omni('b3', 'run', changed, '--replicas', '3', '--spread', '--json', '-q')) as RunOut;
    expect(rolled).toMatchObject({ name: 'node-api', version: 2, action: 'rolling update', healthy: true, build: { reused: false } });
    expect(rolled.build.digest).not.toBe(first.build.digest);
    expect(rolled.image).toBe(`node-api@${rolled.build.digest}`);
    expect(await answers()).toEqual([0, 1, 2].map(() => ({ ok: true, v: 2, path: '/hello' })));

    // an app of another image is not replaced by omni run DIR without --replace
    const other = await omniCli(omniEnv('b1'), ['run', changed, '--name', 'node-api', '--repo', 'team/node-api', '-q']);
    expect(other.code).not.toBe(0);
    expect(other.stderr).toContain('use --replace');

    const client = c.client('b1');
    try {
      expect((await client.raw('DELETE', '/v1/apps/node-api')).status).toBe(200);
    } finally {
      client.close();
    }
    const { default: Docker } = await import('dockerode');
    const engine = new Docker({ socketPath: (docker as { socketPath: string }).socketPath });
    await waitFor('containers removed', async () => (await engine.listContainers({ all: true, filters: { label: ['omni.app=node-api'] } })).length === 0, 60_000, 500);
  }, 600_000);

  it('a failing step: exit 1, the step named, its last log lines', async () => {
    const src = join(dir, 'broken');
    await mkdir(join(src, '.omni'), { recursive: true });
    await cp('examples/node-api', src, { recursive: true });
    await writeFile(join(src, '.omni/build.yaml'), 'steps:\n  - name: compile\n    run: |\n      echo compiling\n      echo "error: broken" >&2\n      exit 7\n');
    const r = await omniCli(omniEnv('b1'), ['build', src, '--repo', 'team/broken', '-q']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("step 'compile' failed (exit status 7)");
    expect(r.stderr).toContain('| error: broken');
    const unknown = await omniCli(omniEnv('b1'), ['build', 'test/fixtures/forge/empty']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('cannot tell how to build this directory');
  }, 300_000);

  it.skipIf(noDocker !== undefined)('Docker pulls the built images (Node.js, Python) from another node and they answer HTTP; --runner docker', async () => {
    const env = { ...process.env, DOCKER_HOST: `unix://${(docker as { socketPath: string }).socketPath}`, DOCKER_CONFIG: dir };
    const reg = await (async () => {
      const client = c.client('b3');
      try {
        return (await client.get<{ address: string }>('/v1/registry')).address;
      } finally {
        client.close();
      }
    })();
    await new Promise<void>((res, rej) => {
      const p = execFile('docker', ['login', '-u', 'omni', '--password-stdin', reg], { env, timeout: 60_000 }, (err) => (err ? rej(err) : res()));
      p.stdin!.end(c.adminToken);
    });
    const ref = `${reg}/team/node-api@${built.digest}`;
    await run('docker', ['pull', ref], { env, timeout: 300_000 });
    const port = await freePort();
    const id = (await run('docker', ['run', '-d', '-p', `127.0.0.1:${port}:8080`, ref], { env })).stdout.trim();
    try {
      const res = await waitFor('the Forge-built app answers', async () => (await httpGet(port, '/hello').catch(() => undefined)) ?? undefined, 30_000);
      expect(res.status).toBe(200);
      expect(JSON.parse(res.body)).toEqual({ ok: true, path: '/hello' });
    } finally {
      await run('docker', ['rm', '-f', id], { env }).catch(() => undefined);
      await run('docker', ['rmi', '-f', ref], { env }).catch(() => undefined);
    }

    // Python: the python base (this host's python3), requirements.txt + main.py, run by Docker
    const penv = { ...omniEnv('b1'), OMNI_FORGE_BASE_CACHE: process.env.OMNI_FORGE_BASE_CACHE ?? join(homedir(), '.cache/omni/forge-base') };
    await run('scripts/forge-base.sh', ['python', '--import'], { env: penv, timeout: 300_000, maxBuffer: 16 * 1024 * 1024 });
    const py = JSON.parse(await omni('b1', 'build', 'examples/python-api', '--repo', 'team/python-api', '--json')) as Built;
    expect(py.type).toBe('python');
    const pyRef = `${reg}/team/python-api@${py.digest}`;
    await run('docker', ['pull', pyRef], { env, timeout: 300_000 });
    const pyPort = await freePort();
    const pyId = (await run('docker', ['run', '-d', '-p', `127.0.0.1:${pyPort}:8080`, pyRef], { env })).stdout.trim();
    try {
      const res = await waitFor('the Forge-built Python app answers', async () => (await httpGet(pyPort, '/py').catch(() => undefined)) ?? undefined, 30_000);
      expect(res.status).toBe(200);
      expect(JSON.parse(res.body)).toEqual({ ok: true, path: '/py' });
    } finally {
      const logs = await run('docker', ['logs', pyId], { env }).catch(() => undefined);
      if (logs?.stderr) console.log(logs.stderr.slice(-2000));
      await run('docker', ['rm', '-f', pyId], { env }).catch(() => undefined);
      await run('docker', ['rmi', '-f', pyRef], { env }).catch(() => undefined);
    }

    // --runner docker: the install and the steps run in a container from the runtime base (its /bin/sh is busybox; the host's is not)
    const src2 = join(dir, 'node-api-in-base');
    await cp('examples/node-api', src2, { recursive: true });
    await mkdir(join(src2, '.omni'));
    await writeFile(join(src2, '.omni/build.yaml'), 'steps:\n  - name: in-base\n    run: test "$(readlink /bin/sh)" = busybox && node --version && echo running-in-the-base\n');
    const inBase = await omniCli({ ...omniEnv('b2'), DOCKER_HOST: env.DOCKER_HOST, DOCKER_CONFIG: dir }, ['build', src2, '--repo', 'team/in-base', '--runner', 'docker', '--json']);
    expect(inBase.code, inBase.stderr).toBe(0);
    expect(inBase.stderr).toContain('[in-base] running-in-the-base');
    expect(inBase.stderr).toContain('[in-base] v24.');
    expect(JSON.parse(inBase.stdout)).toMatchObject({ repository: 'team/in-base', type: 'node', reused: false });
    const onHost = await omniCli(omniEnv('b2'), ['build', src2, '--repo', 'team/in-base', '--rebuild', '-q']);
    expect(onHost.code).toBe(1);
    expect(onHost.stderr).toContain("step 'in-base' failed");
  }, 600_000);

  it.skipIf(noDocker !== undefined)('omni run examples/python-api: built, 3 replicas on 3 nodes answer HTTP', async () => {
    const penv = { ...omniEnv('b1'), OMNI_FORGE_BASE_CACHE: process.env.OMNI_FORGE_BASE_CACHE ?? join(homedir(), '.cache/omni/forge-base') };
    await run('scripts/forge-base.sh', ['python', '--import'], { env: penv, timeout: 300_000, maxBuffer: 16 * 1024 * 1024 });
    const out = JSON.parse(await omni('b2', 'run', 'examples/python-api', '--replicas', '3', '--spread', '--json', '-q')) as { name: string; action: string; healthy: boolean; image: string; build: { digest: string } };
    expect(out).toMatchObject({ name: 'python-api', action: 'created', healthy: true });
    expect(out.image).toBe(`python-api@${out.build.digest}`);
    const client = c.client('b1');
    try {
      const eps = (await client.get<{ endpoints: { ports: Record<string, number>; node: string }[] }>('/v1/apps/python-api')).endpoints;
      expect(new Set(eps.map((e) => e.node))).toEqual(new Set(names));
      for (const e of eps) expect(JSON.parse((await httpGet(e.ports.http, '/py')).body)).toEqual({ ok: true, path: '/py' });
      expect((await client.raw('DELETE', '/v1/apps/python-api')).status).toBe(200);
    } finally {
      client.close();
    }
  }, 600_000);

  it.skipIf(noDocker !== undefined)('a devcontainer is the build environment: its containerEnv, remoteUser and postCreateCommand reach the steps; build.dockerfile through the engine; features refused', async () => {
    const dockerEnv = { DOCKER_HOST: `unix://${(docker as { socketPath: string }).socketPath}`, DOCKER_CONFIG: dir };
    const src = join(dir, 'dev-api');
    await cp('examples/node-api', src, { recursive: true });
    await mkdir(join(src, '.omni'));
    await mkdir(join(src, '.devcontainer'));
    await writeFile(join(src, '.omni/build.yaml'), 'steps:\n  - name: show\n    run: echo "greeting=$GREETING" && cat /tmp/omni-postcreate && cat made-by-postcreate\n');
    await writeFile(join(src, '.devcontainer/devcontainer.json'), '// the cluster registry\'s node base and an env\n{\n  "image": "omni/node:24",\n  "containerEnv": { "GREETING": "hello from the devcontainer", },\n  /* run first */ "postCreateCommand": "echo post-created > /tmp/omni-postcreate && echo tree > made-by-postcreate",\n}\n');
    // no --runner: a devcontainer means the docker runner
    const r = await omniCli({ ...omniEnv('b1'), ...dockerEnv }, ['build', src, '--repo', 'team/dev-api', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('[show] greeting=hello from the devcontainer');
    expect(r.stderr).toContain('[show] post-created');
    expect(r.stderr).toContain('[show] tree');
    expect(JSON.parse(r.stdout)).toMatchObject({ repository: 'team/dev-api', type: 'node', reused: false });
    // --runner host leaves it out, with a warning: the step runs on this host, without GREETING or the postCreateCommand's file
    const host = await omniCli(omniEnv('b1'), ['build', src, '--repo', 'team/dev-api', '--rebuild', '--runner', 'host']);
    expect(host.code).toBe(1);
    expect(host.stderr).toContain('[devcontainer] warning: .devcontainer/devcontainer.json is not used with --runner host');
    expect(host.stderr).toContain("step 'show' failed");
    expect(host.stderr).not.toContain('greeting=hello from the devcontainer');

    // build.dockerfile: FROM the registry's base (pulled and tagged for the engine), an ENV the step
    // sees; remoteUser: the steps (and npm ci) run as that user and can write the workspace
    await writeFile(join(src, '.devcontainer/Dockerfile'), 'FROM omni/node:24\nENV FROM_DOCKERFILE=yes\n');
    await writeFile(join(src, '.devcontainer/devcontainer.json'), '{ "build": { "dockerfile": "Dockerfile" }, "containerEnv": { "GREETING": "again" }, "remoteUser": "65534" }\n');
    await writeFile(join(src, '.omni/build.yaml'), 'steps:\n  - name: show\n    run: echo "greeting=$GREETING from-dockerfile=$FROM_DOCKERFILE user=$(id -u)" > out.txt && cat out.txt\n');
    const b = await omniCli({ ...omniEnv('b2'), ...dockerEnv }, ['build', src, '--repo', 'team/dev-api', '--json']);
    expect(b.code, b.stderr).toBe(0);
    expect(b.stderr).toContain('[show] greeting=again from-dockerfile=yes user=65534');

    // features: refused before anything runs
    await writeFile(join(src, '.devcontainer/devcontainer.json'), '{ "image": "omni/node:24", "features": { "ghcr.io/devcontainers/features/git:1": {} } }\n');
    const f = await omniCli({ ...omniEnv('b2'), ...dockerEnv }, ['build', src, '--repo', 'team/dev-api']);
    expect(f.code).not.toBe(0);
    expect(f.stderr).toContain('features (ghcr.io/devcontainers/features/git:1) are not supported: they are downloaded from the internet');
  }, 600_000);

  it.skipIf(noDocker !== undefined)("a Dockerfile project is built by a node's engine, pushed, pulled from another node and served; FROM an image of the cluster's registry; a failing instruction is named", async () => {
    const dockerEnv = { DOCKER_HOST: `unix://${(docker as { socketPath: string }).socketPath}` };
    const env = { ...process.env, ...dockerEnv, DOCKER_CONFIG: dir };
    // The CLI has no engine: the node's builds it.
    const noEngine = { DOCKER_HOST: `unix://${join(dir, 'no-engine.sock')}` };
    const src = join(dir, 'dockerfile');
    await cp('test/fixtures/forge/dockerfile', src, { recursive: true });
    // each instruction's container is held to the build's reservation (.omni/build.yaml resources:)
    await writeFile(join(src, 'Dockerfile'), `FROM ${(docker as { image: string }).image}\nCOPY . /www\nRUN echo "limits: $(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes) $(cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)"\nCMD ["httpd","-f","-p","8080","-h","/www"]\n`);
    await mkdir(join(src, '.omni'), { recursive: true });
    await writeFile(join(src, '.omni', 'build.yaml'), 'resources: { cpu: 0.5, memory: 256M }\n');
    const r = await omniCli({ ...omniEnv('b1'), ...noEngine }, ['build', src, '--repo', 'team/web', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('[docker build] Step 2/4 : COPY . /www');
    expect(r.stderr).toMatch(/limits: 268435456 (50000 100000|50000)\b/);
    const b = JSON.parse(r.stdout) as Built & { build?: string };
    expect(b.type).toBe('dockerfile');
    expect(b.tags[0]).toBe(`sha-${b.sourceDigest.slice(7)}`);
    // it ran as a build job on a node, which the scheduler picked among those whose engine answers
    expect(b.build).toMatch(/^build-[0-9a-f]{34}$/);
    const job = await inspectApp('b2', b.build!);
    expect(job.job).toMatchObject({ phase: 'STOPPED', outcome: 'succeeded' });
    expect(names).toContain(job.tasks[0].node);
    const { nodes } = JSON.parse(await omni('b3', 'nodes', '--json')) as { nodes: { resources: { drivers?: string[] } }[] };
    expect(nodes).toHaveLength(3);
    for (const n of nodes) expect(n.resources.drivers).toEqual(expect.arrayContaining(['docker', 'forge', 'process']));
    const reg = await (async () => {
      const client = c.client('b2');
      try {
        return (await client.get<{ address: string }>('/v1/registry')).address;
      } finally {
        client.close();
      }
    })();
    await new Promise<void>((res, rej) => {
      const p = execFile('docker', ['login', '-u', 'omni', '--password-stdin', reg], { env, timeout: 60_000 }, (err) => (err ? rej(err) : res()));
      p.stdin!.end(c.adminToken);
    });
    const ref = `${reg}/team/web@${b.digest}`;
    await run('docker', ['pull', ref], { env, timeout: 300_000 });
    const port = await freePort();
    const id = (await run('docker', ['run', '-d', '-p', `127.0.0.1:${port}:8080`, ref], { env })).stdout.trim();
    try {
      const res = await waitFor('the Dockerfile app answers', async () => (await httpGet(port, '/package.json').catch(() => undefined)) ?? undefined, 30_000);
      expect(res.status).toBe(200);
      expect(JSON.parse(res.body)).toEqual({ name: 'x' });
    } finally {
      await run('docker', ['rm', '-f', id], { env }).catch(() => undefined);
      await run('docker', ['rmi', '-f', ref], { env }).catch(() => undefined);
    }
    // FROM an image the engine lacks but the cluster's registry has (made by forge-base.sh above): pulled from the node's /v2/
    const fromRegistry = join(dir, 'dockerfile-from-registry');
    await mkdir(fromRegistry);
    await writeFile(join(fromRegistry, 'Dockerfile'), 'FROM omni/node:24 AS run\nRUN node -e "require(\'fs\').writeFileSync(\'/built-by\', process.version)"\nFROM run\nCMD ["cat", "/built-by"]\n');
    await run('docker', ['rmi', '-f', 'omni/node:24'], { env }).catch(() => undefined);
    const fr = await omniCli({ ...omniEnv('b3'), ...noEngine }, ['build', fromRegistry, '--repo', 'team/from-registry', '--json']);
    expect(fr.code, fr.stderr).toBe(0);
    expect(JSON.parse(fr.stdout)).toMatchObject({ repository: 'team/from-registry', type: 'dockerfile', reused: false });
    // FROM an image of another registry: refused before the engine is asked (nothing comes from the internet)
    await writeFile(join(fromRegistry, 'Dockerfile'), 'FROM docker.io/library/alpine:3\n');
    const remote = await omniCli({ ...omniEnv('b3'), ...noEngine }, ['build', fromRegistry, '--repo', 'team/from-registry', '-q']);
    expect(remote.code).toBe(1);
    expect(remote.stderr).toContain('FROM docker.io/library/alpine:3 is in another registry and Forge cannot pull from the internet');

    await writeFile(join(src, 'Dockerfile'), `FROM ${(docker as { image: string }).image}\nRUN echo about to fail && exit 3\n`);
    const bad = await omniCli({ ...omniEnv('b1'), ...noEngine }, ['build', src, '--repo', 'team/web', '-q']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/step 'Dockerfile step 2\/2 \(RUN echo about to fail && exit 3\)' failed/);
    expect(bad.stderr).toContain('| about to fail');
    // --local: this host's engine builds it (here the same engine)
    await writeFile(join(src, 'Dockerfile'), `FROM ${(docker as { image: string }).image}\nCOPY . /www\n`);
    const local = await omniCli({ ...omniEnv('b1'), ...dockerEnv }, ['build', src, '--repo', 'team/web', '--local', '--json']);
    expect(local.code, local.stderr).toBe(0);
    expect(JSON.parse(local.stdout)).toMatchObject({ type: 'dockerfile', reused: false });
    expect(JSON.parse(local.stdout).build).toBeUndefined();
  }, 600_000);
});
