// npm run bench:forge — Forge against `docker build` of an equivalent hand-written multi-stage
// Dockerfile, in the same run, for a small Node.js API and a small Python API
// (examples/node-api, python-api). For each (suffix _node, _python):
//   cold_build_s      omni build of a copy whose dependency key is new (no cached layer)
//   rebuild_s         omni build after one source file changed (the dependency layer reused)
//   image_mib         the image's uncompressed size as the engine reports it (docker pull of
//                     Forge's image, docker image inspect .Size), MiB
//   docker_cold_build_s, docker_rebuild_s, docker_image_mib: the same with `docker build`
//                     (classic builder, --no-cache for the cold one) FROM the same base imported
//                     into the engine (docker import of scripts/forge-base.sh's tree)
// plus reproducible_node/_python (two builds through two nodes' APIs with --rebuild, separate
// work directories: one digest) and docker_reproducible (two --no-cache docker builds: one ID).
// A 3-node loopback cluster (omnid processes), the real CLI (bin/omni), steps on this host.
// Uses DOCKER_HOST, or starts a private dockerd (scripts/dockerd-private.sh) and stops it after.
// Last line: JSON. Noisy on a shared host: run it on a quiet one for figures worth comparing.
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir, homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { LocalCluster } from '../../node/local-cluster.js';
import { forgeFixture } from '../support/forge-fixtures.js';

const run = promisify(execFile);
const log = (s: string) => process.stderr.write(`bench:forge: ${s}\n`);
const round = (n: number, d = 2) => Math.round(n * 10 ** d) / 10 ** d;

function dockerEngine(): { host: string; stop: () => void } {
  if (process.env.DOCKER_HOST) return { host: process.env.DOCKER_HOST, stop: () => undefined };
  const dir = mkdtempSync('/tmp/omni-bench-forge-dockerd-');
  const out = execFileSync('bash', ['scripts/dockerd-private.sh', 'start', dir], { encoding: 'utf8', timeout: 120_000 });
  const host = out.split('\n').find((l) => l.startsWith('DOCKER_HOST='))!.slice('DOCKER_HOST='.length).trim();
  return {
    host,
    stop: () => {
      execFileSync('bash', ['scripts/dockerd-private.sh', 'stop', dir], { timeout: 60_000 });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const engine = dockerEngine();
const denv = { ...process.env, DOCKER_HOST: engine.host, DOCKER_BUILDKIT: '0' };
const dk = async (...args: string[]) => (await run('docker', args, { env: denv, timeout: 600_000, maxBuffer: 64 * 1024 * 1024 })).stdout.trim();
const timed = async <T>(f: () => Promise<T>): Promise<[T, number]> => {
  const t = performance.now();
  const v = await f();
  return [v, (performance.now() - t) / 1000];
};

const work = await mkdtemp(join(tmpdir(), 'omni-bench-forge-'));
const c = await LocalCluster.create({ flags: ['--down-after-ms', '2000', '--heartbeat-ms', '250'] });
const results: Record<string, number | boolean | null> = {};
try {
  await c.init('f1');
  await c.join('f2');
  await c.join('f3');
  await c.waitForVoters('f3', 3, 120_000);
  const omniEnv = (n: string) => ({ ...process.env, OMNI_ADDR: c.nodes.get(n)!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' });
  const omni = async (n: string, ...args: string[]) => (await run('bin/omni', args, { env: omniEnv(n), timeout: 600_000, maxBuffer: 16 * 1024 * 1024 })).stdout;
  const cache = process.env.OMNI_FORGE_BASE_CACHE ?? join(homedir(), '.cache/omni/forge-base');
  log('runtime bases (scripts/forge-base.sh, cached trees)');
  const bases = await run('scripts/forge-base.sh', ['node', 'python', '--import'], { env: { ...omniEnv('f1'), NODE: resolve('node_modules/node/bin/node'), OMNI_FORGE_BASE_CACHE: cache }, timeout: 900_000, maxBuffer: 16 * 1024 * 1024 });
  log(bases.stdout.trim());
  const reg = await (async () => {
    const cl = c.client('f1');
    try {
      return (await cl.get<{ address: string }>('/v1/registry')).address;
    } finally {
      cl.close();
    }
  })();
  await new Promise<void>((res, rej) => {
    const p = execFile('docker', ['login', '-u', 'omni', '--password-stdin', reg], { env: { ...denv, DOCKER_CONFIG: work } }, (err) => (err ? rej(err) : res()));
    p.stdin!.end(c.adminToken);
  });
  const dkAuth = async (...args: string[]) => (await run('docker', args, { env: { ...denv, DOCKER_CONFIG: work }, timeout: 600_000, maxBuffer: 64 * 1024 * 1024 })).stdout.trim();
  const mib = (bytes: string) => round(Number(bytes) / 1024 / 1024, 1);

  const apps = [
    {
      suffix: 'node',
      fixture: 'node-api',
      base: 'omni/node:24',
      source: 'server.js',
      depsFile: 'package.json',
      bump: (t: string, m: string) => JSON.stringify({ ...(JSON.parse(t) as object), description: m }, null, 2),
      dockerfile: (from: string) =>
        `FROM ${from} AS deps\nWORKDIR /app\nCOPY package.json package-lock.json ./\nRUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && mkdir -p node_modules\nFROM ${from}\nWORKDIR /app\nCOPY --from=deps /app/node_modules ./node_modules\nCOPY . .\nENV PORT=8080\nCMD ["node","server.js"]\n`,
    },
    {
      suffix: 'python',
      fixture: 'python-api',
      base: 'omni/python:3',
      source: 'main.py',
      depsFile: 'requirements.txt',
      bump: (t: string, m: string) => `${t}# ${m}\n`,
      dockerfile: (from: string) =>
        `FROM ${from} AS deps\nWORKDIR /app\nCOPY requirements.txt ./\nRUN python3 -m pip install --no-cache-dir --disable-pip-version-check --target .deps -r requirements.txt && mkdir -p .deps\nFROM ${from}\nWORKDIR /app\nCOPY --from=deps /app/.deps ./.deps\nCOPY . .\nENV PORT=8080 PYTHONPATH=/app/.deps\nCMD ["python3","main.py"]\n`,
    },
  ];
  for (const a of apps) {
    const marker = `bench-${Date.now()}`;
    // Forge
    const src = join(work, `forge-${a.suffix}`);
    await cp(forgeFixture(a.fixture), src, { recursive: true });
    await writeFile(join(src, a.depsFile), a.bump(await readFile(join(src, a.depsFile), 'utf8'), marker));
    const repo = `bench/${a.suffix}`;
    const [cold, coldS] = await timed(async () => JSON.parse(await omni('f1', 'build', src, '--repo', repo, '--json', '-q')) as { digest: string; depsReused: boolean });
    if (cold.depsReused) throw new Error('cold build reused its dependency layer');
    await appendFile(join(src, a.source), a.suffix === 'node' ? '// changed\n' : '# changed\n');
    const [re, reS] = await timed(async () => JSON.parse(await omni('f1', 'build', src, '--repo', repo, '--json', '-q')) as { digest: string; depsReused: boolean });
    if (!re.depsReused) throw new Error('the rebuild did not reuse the dependency layer');
    const other = JSON.parse(await omni('f2', 'build', src, '--repo', repo, '--rebuild', '--json', '-q')) as { digest: string };
    results[`cold_build_s_${a.suffix}`] = round(coldS);
    results[`rebuild_s_${a.suffix}`] = round(reS);
    results[`reproducible_${a.suffix}`] = other.digest === re.digest;
    await dkAuth('pull', `${reg}/${repo}@${re.digest}`);
    results[`image_mib_${a.suffix}`] = mib(await dk('image', 'inspect', '-f', '{{.Size}}', `${reg}/${repo}@${re.digest}`));
    log(`forge ${a.suffix}: cold ${round(coldS)} s, rebuild ${round(reS)} s, ${results[`image_mib_${a.suffix}`]} MiB, reproducible ${results[`reproducible_${a.suffix}`]}`);
    // docker build, the same base imported into the engine
    const baseTag = `omni-bench/${a.suffix}-base:1`;
    const [, tag] = a.base.split(':');
    const tree = (await run('bash', ['-c', `ls -d ${cache}/${a.suffix}-*-r*/rootfs | head -1`])).stdout.trim();
    if (!tree) throw new Error(`no cached ${a.suffix} tree under ${cache}`);
    await run('bash', ['-c', `tar -C ${tree} -c . | docker import - ${baseTag}`], { env: denv, timeout: 600_000, maxBuffer: 16 * 1024 * 1024 });
    void tag;
    const dsrc = join(work, `docker-${a.suffix}`);
    await cp(forgeFixture(a.fixture), dsrc, { recursive: true });
    await writeFile(join(dsrc, a.depsFile), a.bump(await readFile(join(dsrc, a.depsFile), 'utf8'), marker));
    await writeFile(join(dsrc, 'Dockerfile'), a.dockerfile(baseTag));
    await writeFile(join(dsrc, '.dockerignore'), 'Dockerfile\n.dockerignore\nnode_modules\n.deps\n');
    const [, dColdS] = await timed(() => dk('build', '--no-cache', '-q', '-t', `bench-${a.suffix}:1`, dsrc));
    const id1 = await dk('image', 'inspect', '-f', '{{.Id}}', `bench-${a.suffix}:1`);
    await appendFile(join(dsrc, a.source), a.suffix === 'node' ? '// changed\n' : '# changed\n');
    const [, dReS] = await timed(() => dk('build', '-q', '-t', `bench-${a.suffix}:2`, dsrc));
    await dk('build', '--no-cache', '-q', '-t', `bench-${a.suffix}:3`, dsrc);
    const id2 = await dk('image', 'inspect', '-f', '{{.Id}}', `bench-${a.suffix}:2`);
    const id3 = await dk('image', 'inspect', '-f', '{{.Id}}', `bench-${a.suffix}:3`);
    results[`docker_cold_build_s_${a.suffix}`] = round(dColdS);
    results[`docker_rebuild_s_${a.suffix}`] = round(dReS);
    results[`docker_image_mib_${a.suffix}`] = mib(await dk('image', 'inspect', '-f', '{{.Size}}', `bench-${a.suffix}:2`));
    results[`docker_reproducible_${a.suffix}`] = id2 === id3;
    log(`docker ${a.suffix}: cold ${round(dColdS)} s, rebuild ${round(dReS)} s, ${results[`docker_image_mib_${a.suffix}`]} MiB, reproducible ${id2 === id3} (${id1 === id2 ? 'same' : 'another'} id after the change)`);
    for (const t of [`bench-${a.suffix}:1`, `bench-${a.suffix}:2`, `bench-${a.suffix}:3`, baseTag, `${reg}/${repo}@${re.digest}`]) await dk('rmi', '-f', t).catch(() => undefined);
  }
  results.reproducible = results.reproducible_node === true && results.reproducible_python === true;
} finally {
  await c.destroy();
  await rm(work, { recursive: true, force: true });
  engine.stop();
}
process.stdout.write(JSON.stringify(results) + '\n');
