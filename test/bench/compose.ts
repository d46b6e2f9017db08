// npm run bench:compose — a 4-service compose stack (test/fixtures/compose-bench) on a 3-node
// loopback cluster (omnid processes, the real CLI bin/omni), against Debian's docker-compose
// (1.29) `up` of the same stack with Dockerfiles on one host, in the same run, same engine.
// The stack: api (examples/node-api, copied at run time, built by Forge), py
// (examples/python-api, likewise), db (Debian's redis-server: apt-get install -y redis-server),
// gateway (depends on the three with condition service_healthy; GET / calls http://api:8080 and
// http://py:8080 by name, and SETs and GETs a counter in redis at db:6379).
// db and gateway run with the process driver on n1; api and py with the docker driver on n2/n3,
// their healthchecks inside their containers (docker exec). Where each `up` spends its time per
// docker service (image pulled into the engine, container created/started, first passing check)
// is logged from the engine's events.
// Figures (seconds; last line JSON):
//   up_cold_s          `omni compose up` with new dependency keys (Forge builds included, no
//                      cached layer) until up returns and the gateway answers through all names
//   up_warm_s          the same `up` again, nothing changed
//   up_after_down_s    `down`, then `up` (built images reused, containers new)
//   build_parallel_s / build_serial_s: `omni compose build --rebuild --parallel 3` / `--parallel 1`
//                      (both really build both services), medians of COMPOSE_BENCH_BUILD_TRIALS
//                      (default 3) alternating pairs; build_ratio = parallel / serial;
//                      build_*_builds_s / build_builds_ratio: the same for the builds alone, as
//                      the CLI times them (its start, ~2 s here, and the file's load left out)
//   failover_names_s   kill -9 the omnid running api (and remove its containers: the machine
//                      is gone) → until the gateway's calls by name to api/py/db succeed again
//   docker_compose_up_s       docker-compose build --no-cache + up -d + the gateway answers
//   docker_compose_up_warm_s  docker-compose up -d again, nothing changed, until it answers
//   load_avg_1m_start / _end: the host's load average (2 shared cores: figures are noisy)
// docker-compose runs the same redis-server binary, in an image of it and the shared libraries it
// loads (docker import of a tree made here: no registry is reachable).
// Uses DOCKER_HOST (unix://), or starts a private dockerd (scripts/dockerd-private.sh) and stops it.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir, homedir, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { request } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { LocalCluster, waitFor } from '../../node/local-cluster.js';

const run = promisify(execFile);
const log = (s: string) => process.stderr.write(`bench:compose: ${new Date().toISOString().slice(11, 19)} ${s}\n`);
const round = (n: number, d = 2) => Math.round(n * 10 ** d) / 10 ** d;
const load = () => round(loadavg()[0], 2);
/** Pairs of builds (parallel, then serial) whose medians are the build figures (COMPOSE_BENCH_BUILD_TRIALS). */
const BUILD_TRIALS = Math.max(1, Math.min(20, Number(process.env.COMPOSE_BENCH_BUILD_TRIALS ?? 3) || 3));
const medianOf = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const FIX = resolve('test/fixtures/compose-bench');
// api and py are Forge's own fixtures, copied at run time (not kept twice in the repository)
const SOURCES: Record<string, string> = { api: resolve('examples/node-api'), py: resolve('examples/python-api') };

function dockerEngine(): { host: string; mine: boolean; stop: () => void } {
  if (process.env.DOCKER_HOST) return { host: process.env.DOCKER_HOST, mine: false, stop: () => undefined };
  const dir = mkdtempSync('/tmp/omni-bench-compose-dockerd-');
  const out = execFileSync('bash', ['scripts/dockerd-private.sh', 'start', dir], { encoding: 'utf8', timeout: 120_000 });
  const host = out.split('\n').find((l) => l.startsWith('DOCKER_HOST='))!.slice('DOCKER_HOST='.length).trim();
  return {
    host,
    mine: true,
    stop: () => {
      execFileSync('bash', ['scripts/dockerd-private.sh', 'stop', dir], { timeout: 60_000 });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const timed = async <T>(f: () => Promise<T>): Promise<[T, number]> => {
  const t = performance.now();
  const v = await f();
  return [v, (performance.now() - t) / 1000];
};
const get = (port: number, path = '/') =>
  new Promise<{ status: number; body: string }>((res, rej) => {
    const r = request({ host: '127.0.0.1', port, path, timeout: 5000 }, (m) => {
      let t = '';
      m.on('data', (c) => (t += c));
      m.on('end', () => res({ status: m.statusCode ?? 0, body: t }));
    });
    r.on('timeout', () => r.destroy(new Error('timeout')));
    r.on('error', rej);
    r.end();
  });
const freePort = async () => {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
};
/** The gateway answers 200 (it reached api, py and db by name). */
const gatewayOk = async (port: () => Promise<number | undefined>, what: string, ms = 300_000) =>
  waitFor(what, async () => {
    const p = await port();
    if (!p) return undefined;
    const r = await get(p).catch(() => undefined);
    if (r?.status !== 200) return undefined;
    const b = JSON.parse(r.body) as { ok: boolean; api: { ok: boolean }; py: { ok: boolean }; db: { v: string } };
    return b.ok && b.api.ok && b.py.ok && b.db.v ? b : undefined;
  }, ms, 200);

const NODE_HC = `["CMD", "node", "-e", "require('http').get('http://127.0.0.1:8080/',r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1))"]`;
const PY_HC = `["CMD", "python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/', timeout=2)"]`;
const omniStack = (work: string) => `
name: benchc
services:
  db:
    x-omni-driver: process
    command: ["/bin/sh", "-c", "echo $$PORT >${work}/db.port && exec redis-server --port $$PORT --bind 127.0.0.1 --save '' --appendonly no --protected-mode no"]
    ports: ["6379"]
    deploy:
      placement: {constraints: ["node.hostname==n1"]}
    healthcheck:
      test: ["CMD-SHELL", "redis-cli -p $(cat ${work}/db.port) ping | grep -q PONG"]
      interval: 500ms
      timeout: 3s
  api:
    build: ./api
    ports: ["8080"]
    deploy:
      placement: {constraints: ["node.hostname!=n1"]}
    healthcheck:
      test: ${NODE_HC}
      interval: 1s
      timeout: 8s
  py:
    build: ./py
    ports: ["8080"]
    deploy:
      placement: {constraints: ["node.hostname!=n1"]}
    healthcheck:
      test: ${PY_HC}
      interval: 1s
      timeout: 8s
  gateway:
    x-omni-driver: process
    command: ["${process.execPath}", "${work}/gateway/gateway.js"]
    environment: {PORT_FILE: "${work}/gateway.port"}
    ports: ["8080"]
    deploy:
      placement: {constraints: ["node.hostname==n1"]}
    depends_on:
      db: {condition: service_healthy}
      api: {condition: service_healthy}
      py: {condition: service_healthy}
    healthcheck:
      test: ["CMD-SHELL", "curl -fs http://127.0.0.1:$(cat ${work}/gateway.port)/health"]
      interval: 500ms
      timeout: 3s
`;

const dcStack = (gwPort: number) => `
version: "2.4"
services:
  db:
    image: ${REDIS_IMAGE}
    command: ["redis-server", "--port", "6379", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
    healthcheck: {test: ["CMD", "redis-cli", "ping"], interval: 1s, timeout: 5s}
  api:
    build: ./api
    healthcheck: {test: ${NODE_HC}, interval: 1s, timeout: 5s}
  py:
    build: ./py
    healthcheck: {test: ${PY_HC}, interval: 1s, timeout: 5s}
  gateway:
    build: ./gateway
    ports: ["127.0.0.1:${gwPort}:8080"]
    depends_on:
      db: {condition: service_healthy}
      api: {condition: service_healthy}
      py: {condition: service_healthy}
    healthcheck: {test: ${NODE_HC}, interval: 1s, timeout: 5s}
`;
const dockerfiles: Record<string, (nodeBase: string, pyBase: string) => string> = {
  api: (from) =>
    `FROM ${from} AS deps\nWORKDIR /app\nCOPY package.json package-lock.json ./\nRUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && mkdir -p node_modules\nFROM ${from}\nWORKDIR /app\nCOPY --from=deps /app/node_modules ./node_modules\nCOPY . .\nENV PORT=8080\nCMD ["node","server.js"]\n`,
  py: (_n, from) =>
    `FROM ${from} AS deps\nWORKDIR /app\nCOPY requirements.txt ./\nRUN python3 -m pip install --no-cache-dir --disable-pip-version-check --target .deps -r requirements.txt && mkdir -p .deps\nFROM ${from}\nWORKDIR /app\nCOPY --from=deps /app/.deps ./.deps\nCOPY . .\nENV PORT=8080 PYTHONPATH=/app/.deps\nCMD ["python3","main.py"]\n`,
  gateway: (from) => `FROM ${from}\nWORKDIR /app\nCOPY gateway.js ./\nENV PORT=8080\nCMD ["node","gateway.js"]\n`,
};

// The reference runs last: without it the whole run would be lost at the end.
for (const [cmd, args, pkg, why] of [
  ['docker-compose', ['version', '--short'], 'docker-compose', 'the benchmark compares with it'],
  ['redis-server', ['--version'], 'redis-server', "the stack's database service is Debian's redis-server"],
] as const) {
  try {
    execFileSync(cmd, [...args], { stdio: 'ignore' });
  } catch {
    process.stderr.write(`bench:compose: ${cmd} is not installed: ${why} (Debian: apt-get install -y ${pkg})\n`);
    process.exit(1);
  }
}
const REDIS_IMAGE = 'omni-bench-compose/redis:1';
const results: Record<string, number | boolean | string | null> = { load_avg_1m_start: load() };
log(`load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
const engine = dockerEngine();
process.env.DOCKER_HOST = engine.host; // the omnids inherit it (docker driver, health commands)
const denv = { ...process.env, DOCKER_HOST: engine.host, DOCKER_BUILDKIT: '0', COMPOSE_DOCKER_CLI_BUILD: '0' };
const dk = async (...args: string[]) => (await run('docker', args, { env: denv, timeout: 600_000, maxBuffer: 64 * 1024 * 1024 })).stdout.trim();
const work = await mkdtemp(join(tmpdir(), 'omni-bench-compose-'));
const marker = `bench-${Date.now()}`;
const c = await LocalCluster.create({ flags: ['--down-after-ms', '2000', '--heartbeat-ms', '250'] });
let dcUp = false;
const dcDir = join(work, 'dc');
const dc = async (...args: string[]) => (await run('docker-compose', ['-p', 'benchdc', '-f', join(dcDir, 'docker-compose.yml'), ...args], { env: denv, cwd: dcDir, timeout: 900_000, maxBuffer: 64 * 1024 * 1024 })).stdout;
try {
  // the stack's sources: new dependency keys (no cached dependency layer anywhere)
  await cp(FIX, work, { recursive: true });
  for (const [s, src] of Object.entries(SOURCES)) await cp(src, join(work, s), { recursive: true, filter: (f) => !/\/(node_modules|\.deps|__pycache__)(\/|$)/.test(f) });
  const bump = async () => {
    const pkg = join(work, 'api/package.json');
    await writeFile(pkg, JSON.stringify({ ...(JSON.parse(await readFile(pkg, 'utf8')) as object), description: marker }, null, 2));
    await writeFile(join(work, 'py/requirements.txt'), `${await readFile(join(work, 'py/requirements.txt'), 'utf8')}# ${marker}\n`);
  };
  await bump();
  await writeFile(join(work, 'compose.yaml'), omniStack(work));

  const flagsOf = (i: number) => ['--vip-range', `127.77.${i * 16}.0/20`, '--docker-vip-range', `198.18.${i * 16}.0/20`];
  await c.init('n1', flagsOf(1));
  await c.join('n2', flagsOf(2));
  await c.join('n3', flagsOf(3));
  await c.waitForVoters('n3', 3, 120_000);
  const omniEnv = { ...process.env, OMNI_ADDR: c.nodes.get('n1')!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' };
  const omni = async (...args: string[]) => {
    const r = await run(resolve('bin/omni'), args, { env: omniEnv, cwd: work, timeout: 900_000, maxBuffer: 16 * 1024 * 1024 });
    return r.stdout + r.stderr;
  };
  /** The same, logging each output line with the seconds since the start (where an `up` spends its time). */
  const omniTimed = (...args: string[]) =>
    new Promise<string>((res, rej) => {
      const t0 = performance.now();
      const p = spawn(resolve('bin/omni'), args, { env: omniEnv, cwd: work, stdio: ['ignore', 'pipe', 'pipe'] });
      let all = '';
      let partial = '';
      const onData = (b: Buffer) => {
        all += b.toString();
        partial += b.toString();
        const lines = partial.split('\n');
        partial = lines.pop()!;
        for (const l of lines) if (l.trim()) log(`  +${((performance.now() - t0) / 1000).toFixed(1)} s ${l.slice(0, 200)}`);
      };
      p.stdout.on('data', onData);
      p.stderr.on('data', onData);
      p.on('error', rej);
      p.on('close', (code) => (code === 0 ? res(all) : rej(new Error(`omni ${args.join(' ')} exited ${code}:\n${all}`))));
    });
  /** `omni compose up|build` output must say each built service was `built` (or `reused`). */
  const expectBuilds = (out: string, how: 'built' | 'reused', what: string) => {
    for (const s of ['api', 'py']) if (!new RegExp(`^${s}: ${how} `, 'm').test(out)) throw new Error(`${what}: ${s} was not ${how}:\n${out}`);
    log(`${what}: ${out.split('\n').filter((l) => /^(api|py): (built|reused)|^builds done/.test(l)).join('; ')}`);
  };
  const cache = process.env.OMNI_FORGE_BASE_CACHE ?? join(homedir(), '.cache/omni/forge-base');
  log('runtime bases (scripts/forge-base.sh, cached trees)');
  await run('scripts/forge-base.sh', ['node', 'python', '--import'], { env: { ...omniEnv, NODE: resolve('node_modules/node/bin/node'), OMNI_FORGE_BASE_CACHE: cache }, timeout: 900_000, maxBuffer: 16 * 1024 * 1024 });
  /**
   * Where an `up` spent its time for the docker services, from the engine's events since `since`:
   * the image pulled (from the node's registry), the container created and started, and the first
   * health check exec that exited 0 (the checks run inside the containers).
   */
  const dockerTimeline = async (since: number, what: string) => {
    const out = await dk('events', '--since', String(since / 1000), '--until', String(Date.now() / 1000), '--format', '{{.TimeNano}}|{{.Type}}|{{.Actor.ID}}|{{index .Actor.Attributes "omni.app"}}|{{.Actor.Attributes.exitCode}}|{{.Action}}').catch((e: Error) => `error ${e.message}`);
    // time, type, id, app, exit code, action (last: an exec's action holds its command line)
    const rows = out.split('\n').filter(Boolean).map((l) => {
      const [t, type, id, app, code, ...action] = l.split('|');
      return [t, type, action.join('|'), id, app, code];
    });
    const at = (ns: string) => `+${((Number(BigInt(ns) / 1_000_000n) - since) / 1000).toFixed(1)} s`;
    const pulls = rows.filter((r) => r[1] === 'image' && r[2] === 'pull').map((r) => `${r[3].replace(/@sha256:.*$/, '').split('/').pop()} ${at(r[0])}`);
    log(`${what}: docker events: images pulled ${pulls.join(', ') || 'none'}`);
    for (const app of ['benchc-api', 'benchc-py']) {
      const mine = rows.filter((r) => r[1] === 'container' && r[4] === app);
      const ids = new Set(mine.map((r) => r[3]));
      const create = mine.find((r) => r[2] === 'create');
      const start = mine.find((r) => r[2] === 'start');
      const execs = rows.filter((r) => r[1] === 'container' && ids.has(r[3]) && r[2].startsWith('exec_die'));
      const okAt = execs.findIndex((r) => r[5] === '0');
      const ok = execs[okAt];
      // each check until the first pass: when it was created and when it ended, its exit code
      const created = rows.filter((r) => r[1] === 'container' && ids.has(r[3]) && r[2].startsWith('exec_create'));
      const checks = execs.slice(0, okAt + 1).map((r, i) => `${created[i] ? at(created[i][0]) : '?'}→${at(r[0])}:${r[5]}`);
      log(`${what}: ${app}: created ${create ? at(create[0]) : '-'}, started ${start ? at(start[0]) : '-'}, first passing check ${ok ? at(ok[0]) : '-'} (${okAt < 0 ? execs.length : okAt} failing before; checks ${checks.join(' ')})`);
    }
  };
  const gwPort = async () => Number(await readFile(join(work, 'gateway.port'), 'utf8').catch(() => '')) || undefined;
  const clearPorts = () => Promise.all(['db.port', 'gateway.port'].map((f) => rm(join(work, f), { force: true })));

  log(`omni compose up (cold), load ${load()}`);
  await clearPorts();
  const coldAt = Date.now();
  const [, coldS] = await timed(async () => {
    expectBuilds(await omniTimed('compose', 'up', '--timeout', '600'), 'built', 'up cold');
    return gatewayOk(gwPort, 'gateway answers (cold)');
  });
  await dockerTimeline(coldAt, 'up cold');
  results.up_cold_s = round(coldS);
  log(`up cold ${round(coldS)} s`);
  const [, warmS] = await timed(async () => {
    expectBuilds(await omni('compose', 'up', '--timeout', '600'), 'reused', 'up warm');
    return gatewayOk(gwPort, 'gateway answers (warm)');
  });
  results.up_warm_s = round(warmS);
  log(`up warm ${round(warmS)} s`);
  await omni('compose', 'down');
  await clearPorts();
  const afterDownAt = Date.now();
  const [, afterDownS] = await timed(async () => {
    expectBuilds(await omniTimed('compose', 'up', '--timeout', '600'), 'reused', 'up after down');
    return gatewayOk(gwPort, 'gateway answers (after down)');
  });
  await dockerTimeline(afterDownAt, 'up after down');
  results.up_after_down_s = round(afterDownS);
  log(`up after down ${round(afterDownS)} s, load ${load()}`);

  // Alternating trials (parallel, serial, parallel, …): with builds of a second or two on 2 shared
  // cores one pair is mostly noise; the figures are the medians, each trial is logged.
  const done = (out: string) => Number(/^builds done in ([\d.]+) s/m.exec(out)?.[1] ?? NaN);
  const trials: { par: number; ser: number; parBuilds: number; serBuilds: number }[] = [];
  for (let i = 0; i < BUILD_TRIALS; i++) {
    const [parOut, parS] = await timed(() => omni('compose', 'build', '--rebuild', '--parallel', '3'));
    expectBuilds(parOut, 'built', 'build --parallel 3');
    const [serOut, serS] = await timed(() => omni('compose', 'build', '--rebuild', '--parallel', '1'));
    expectBuilds(serOut, 'built', 'build --parallel 1');
    trials.push({ par: parS, ser: serS, parBuilds: done(parOut), serBuilds: done(serOut) });
    log(`build --rebuild trial ${i + 1}: parallel 3 ${round(parS)} s (builds ${done(parOut)} s), parallel 1 ${round(serS)} s (builds ${done(serOut)} s), load ${load()}`);
  }
  const med = (f: (t: (typeof trials)[number]) => number) => medianOf(trials.map(f));
  const parS = med((t) => t.par);
  const serS = med((t) => t.ser);
  results.build_trials = trials.length;
  results.build_parallel_s = round(parS);
  results.build_serial_s = round(serS);
  results.build_ratio = round(parS / serS);
  // the builds alone, as the CLI times them ("builds done in X s"; without the CLI's start and the stack's load)
  results.build_parallel_builds_s = med((t) => t.parBuilds);
  results.build_serial_builds_s = med((t) => t.serBuilds);
  results.build_builds_ratio = round(med((t) => t.parBuilds) / med((t) => t.serBuilds));
  log(`build --rebuild, medians of ${trials.length}: parallel 3 ${round(parS)} s, parallel 1 ${round(serS)} s (ratio ${round(parS / serS)})`);

  // failover: the node running api dies (omnid kill -9, its containers gone with the machine)
  try {
    const tasksOf = async (a: string) => {
      const cl = c.client('n1');
      try {
        return (await cl.get<{ tasks: { id: string; node: string; desired: string; state: string }[] }>(`/v1/apps/${a}`)).tasks.filter((t) => t.desired === 'run');
      } finally {
        cl.close();
      }
    };
    const task = (await tasksOf('benchc-api')).find((t) => t.state === 'running')!;
    const victim = task.node;
    if (!c.nodes.has(victim)) throw new Error(`api's task runs on ${victim}, not a node of this cluster`);
    const onVictim = [...(await tasksOf('benchc-api')), ...(await tasksOf('benchc-py'))].filter((t) => t.node === victim);
    await gatewayOk(gwPort, 'gateway answers before the failover');
    log(`failover: kill -9 ${victim} (runs ${onVictim.map((t) => t.id).join(', ')})`);
    const t0 = performance.now();
    await c.kill(victim, 'SIGKILL');
    const gone: string[] = [];
    for (const t of onVictim) gone.push(...(await dk('ps', '-q', '--filter', `label=omni.task=${t.id}`)).split('\n').filter(Boolean));
    if (gone.length) await dk('rm', '-f', ...gone);
    await gatewayOk(gwPort, 'gateway answers after the failover', 180_000);
    results.failover_names_s = round((performance.now() - t0) / 1000);
    log(`failover: names answer again after ${results.failover_names_s} s (removed ${gone.length} container(s))`);
  } catch (e) {
    results.failover_names_s = null;
    log(`failover not measured: ${(e as Error).message}`);
  }
  await omni('compose', 'down').catch((e: Error) => log(`down: ${e.message}`));

  // docker-compose: the same stack with Dockerfiles, FROM the same runtime trees imported
  log(`docker-compose (${(await run('docker-compose', ['version', '--short'])).stdout.trim()}), load ${load()}`);
  const bases: Record<string, string> = {};
  for (const k of ['node', 'python']) {
    const tree = (await run('bash', ['-c', `ls -d ${cache}/${k}-*-r*/rootfs | head -1`])).stdout.trim();
    if (!tree) throw new Error(`no cached ${k} tree under ${cache}`);
    bases[k] = `omni-bench-compose/${k}-base:1`;
    await run('bash', ['-c', `tar -C ${tree} -c . | docker import - ${bases[k]}`], { env: denv, timeout: 600_000, maxBuffer: 16 * 1024 * 1024 });
  }
  await mkdir(dcDir);
  // redis for docker-compose: the host's redis-server and redis-cli with the libraries they load
  await run('bash', ['-c', `set -euo pipefail; t=$(mktemp -d); trap 'rm -rf "$t"' EXIT; for b in $(command -v redis-server) $(command -v redis-cli); do cp --parents -L "$b" "$t"; for l in $(ldd "$b" | grep -o '/[^ ]*'); do cp --parents -L "$l" "$t"; done; done; mkdir -p "$t/tmp" "$t/data"; tar -C "$t" -c . | docker import - ${REDIS_IMAGE}`], { env: denv, timeout: 300_000, maxBuffer: 16 * 1024 * 1024 });
  for (const s of ['api', 'py', 'gateway']) {
    await cp(join(work, s), join(dcDir, s), { recursive: true });
    await writeFile(join(dcDir, s, 'Dockerfile'), dockerfiles[s](bases.node, bases.python));
    await writeFile(join(dcDir, s, '.dockerignore'), 'Dockerfile\n.dockerignore\nnode_modules\n.deps\n');
  }
  const dcPort = await freePort();
  await writeFile(join(dcDir, 'docker-compose.yml'), dcStack(dcPort));
  dcUp = true;
  const [, dcS] = await timed(async () => {
    await dc('build', '--no-cache');
    await dc('up', '-d');
    return gatewayOk(async () => dcPort, 'docker-compose gateway answers');
  });
  results.docker_compose_up_s = round(dcS);
  const [, dcWarmS] = await timed(async () => {
    await dc('up', '-d');
    return gatewayOk(async () => dcPort, 'docker-compose gateway answers (warm)');
  });
  results.docker_compose_up_warm_s = round(dcWarmS);
  log(`docker-compose: up (build --no-cache + up -d) ${round(dcS)} s, up again ${round(dcWarmS)} s`);
} finally {
  results.load_avg_1m_end = load();
  if (dcUp) await dc('down', '--rmi', 'all', '-v').catch((e: Error) => log(`docker-compose down: ${e.message}`));
  await c.destroy();
  // no leftover containers of this bench (an omnid killed -9 does not stop its own)
  const left = (await dk('ps', '-aq', '--filter', 'label=omni.app').catch(() => '')).split('\n').filter(Boolean);
  const ours: string[] = [];
  for (const id of left) if ((await dk('inspect', '-f', '{{index .Config.Labels "omni.app"}}', id).catch(() => '')).startsWith('benchc-')) ours.push(id);
  if (ours.length) await dk('rm', '-f', ...ours).catch(() => undefined);
  await rm(work, { recursive: true, force: true });
  engine.stop();
}
log(`load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
process.stdout.write(JSON.stringify(results) + '\n');
