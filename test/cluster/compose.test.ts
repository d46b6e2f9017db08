// Compose stacks end to end (issue 17) on a real 3-node loopback cluster with the process driver
// (x-omni-driver: process: no Docker engine needed): `omni compose up` starts the services in
// dependency order (service_healthy, service_completed_successfully, service_started), a redeploy
// with one changed service rolls only that one, health is healthy / degraded, a dependency that
// never gets healthy fails `up` naming it and what was not started, `down` removes every app,
// and bad files (unknown keys, a cycle, a missing env_file, a bind mount) give clear errors.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import type { LocalCluster } from '../../node/local-cluster.js';
import { formCluster, waitFor, recordsKeptAsText } from './helpers.js';

const run = promisify(execFile);

interface StackView {
  status: string;
  health: string;
  reasons: string[];
  services: { service: string; app: string; version: number; state: string; up: boolean }[];
}
interface Inspect { version: number; state: string; tasks: { id: string; desired: string; state: string }[] }

// The scripts record when each service starts (one line each in order.log); db becomes ready
// (its health check passes) only 1.5 s after it started (start_period: failures before then do
// not count; an unhealthy task is restarted, as Swarm does); init is a one-shot job.
const scripts = (dir: string): Record<string, string> => ({
  'db.sh': `echo db >> "${dir}/order.log"\nsleep 1.5\necho db-ready >> "${dir}/order.log"\ntouch "${dir}/db-ready"\nexec sleep 100000\n`,
  'init.sh': `echo init >> "${dir}/order.log"\nsleep 0.5\necho init-done >> "${dir}/order.log"\n`,
  'api.sh': `echo api >> "${dir}/order.log"\necho "api up in $API_MODE mode"\nexec sleep 100000\n`,
  'worker.sh': `echo "worker $WORKER_VERSION" >> "${dir}/order.log"\nexec sleep 100000\n`,
});

const STACK = `
name: shop
services:
  db:
    x-omni-driver: process
    command: ["sh", "\${DIR}/db.sh"]
    healthcheck:
      test: ["CMD", "test", "-f", "\${DIR}/db-ready"]
      interval: 300ms
      timeout: 1s
      start_period: 2s
  init:
    x-omni-driver: process
    command: ["sh", "\${DIR}/init.sh"]
    restart: "no"
    depends_on:
      db: {condition: service_healthy}
  api:
    x-omni-driver: process
    command: ["sh", "\${DIR}/api.sh"]
    env_file: api.env
    depends_on:
      db: {condition: service_healthy}
      init: {condition: service_completed_successfully}
  worker:
    x-omni-driver: process
    command: ["sh", "\${DIR}/worker.sh"]
    x-omni-critical: false
    environment:
      WORKER_VERSION: \${WORKER_VERSION:-1}
    depends_on: [api]
x-notes: ignored
`;

describe('compose stacks on a 3-node cluster (process driver)', () => {
  let c: LocalCluster;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  const omni = (args: string[], extra: Record<string, string> = {}) => run('bin/omni', args, { env: { ...env, ...extra }, timeout: 120_000 });
  const fails = (args: string[], extra: Record<string, string> = {}) =>
    omni(args, extra).then(
      (r) => { throw new Error(`omni ${args.join(' ')} exited 0: ${r.stdout}`); },
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
  const api = async <T>(method: string, path: string, body?: unknown) => {
    const client = c.client('n2');
    try {
      return (await client.raw(method, path, body)) as { status: number; body: T };
    } finally {
      client.close();
    }
  };
  const order = async () => (await readFile(join(dir, 'order.log'), 'utf8').catch(() => '')).split('\n').filter(Boolean);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-compose-'));
    for (const [f, text] of Object.entries(scripts(dir))) await writeFile(join(dir, f), text);
    await writeFile(join(dir, 'compose.yaml'), STACK);
    await writeFile(join(dir, 'api.env'), 'API_MODE=test\n');
    c = await formCluster(['n1', 'n2', 'n3']);
    env = { ...process.env, OMNI_ADDR: c.nodes.get('n1')!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json', DIR: dir };
  }, 120_000);
  afterAll(async () => {
    await c?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('up starts the services in dependency order and waits until the stack is healthy', async () => {
    const f = join(dir, 'compose.yaml');
    const r = await omni(['compose', '-f', f, 'up', '--timeout', '60']);
    expect(r.stdout).toMatch(/shop is healthy/);
    expect(r.stderr).toMatch(/api: created, waiting for db, init/);
    const o = await order();
    const at = (l: string) => o.indexOf(l);
    for (const l of ['db', 'db-ready', 'init', 'init-done', 'api', 'worker 1']) expect(at(l), `${l} in ${o.join(',')}`).toBeGreaterThanOrEqual(0);
    expect(at('db')).toBeLessThan(at('db-ready'));
    expect(at('db-ready')).toBeLessThan(at('init')); // service_healthy
    expect(at('init-done')).toBeLessThan(at('api')); // service_completed_successfully
    expect(at('api')).toBeLessThan(at('worker 1')); // service_started
    expect(o.filter((l) => l === 'init')).toHaveLength(1); // a job: run once
    const h = await api<{ status: string }>('GET', '/v1/stacks/shop/health');
    expect(h.status).toBe(200);
    expect(h.body.status).toBe('healthy');
    const ps = await omni(['compose', '-f', f, 'ps']);
    expect(ps.stdout).toMatch(/stack shop \(generation 1\): up, healthy/);
    expect(ps.stdout).toMatch(/init\s+shop-init\s+1\s+completed\s+job succeeded/);
    const apiApp = await api<{ spec: { env: Record<string, string> } }>('GET', '/v1/apps/shop-api');
    expect(apiApp.body.spec.env).toEqual({ API_MODE: 'test' });
    const logs = await omni(['compose', '--file', f, 'logs', 'api', 'db']);
    expect(logs.stdout).toMatch(/^api \| api up in test mode$/m);
    // pull: an image that is not in the cluster's registry is named, exit 1
    const pf = join(dir, 'pull.yaml');
    await writeFile(pf, 'services:\n  a: {image: "nosuch/thing:1"}\n');
    const pull = await fails(['compose', '-f', pf, 'pull']);
    expect(pull.code).toBe(1);
    expect(pull.stdout).toMatch(/a\tNOT PINNED: nosuch\/thing:1 is not in the cluster's registry/);
  }, 120_000);

  it('up again with one changed service rolls only that one', async () => {
    const f = join(dir, 'compose.yaml');
    const before = new Map<string, Inspect>();
    for (const s of ['db', 'init', 'api', 'worker']) before.set(s, (await api<Inspect>('GET', `/v1/apps/shop-${s}`)).body);
    const same = await omni(['compose', '-f', f, 'up', '--json']);
    expect((JSON.parse(same.stdout) as { changed: boolean }).changed).toBe(false);
    const r = await omni(['compose', '-f', f, 'up', '--json', '--timeout', '60'], { WORKER_VERSION: '2' });
    const out = JSON.parse(r.stdout) as { changed: boolean; generation: number; services: { service: string; action: string }[] };
    expect(out.changed).toBe(true);
    expect(out.generation).toBe(2);
    expect(Object.fromEntries(out.services.map((s) => [s.service, s.action]))).toEqual({ db: 'unchanged', init: 'unchanged', api: 'unchanged', worker: 'rolling update' });
    await waitFor('worker 2 to start', async () => ((await order()).includes('worker 2') ? true : undefined), 30_000, 200);
    for (const s of ['db', 'init', 'api']) {
      const a = (await api<Inspect>('GET', `/v1/apps/shop-${s}`)).body;
      expect(a.version, s).toBe(before.get(s)!.version);
      const live = (x: Inspect) => x.tasks.filter((t) => t.desired === 'run').map((t) => t.id).sort();
      expect(live(a), s).toEqual(live(before.get(s)!));
    }
    expect((await api<Inspect>('GET', '/v1/apps/shop-worker')).body.version).toBe(before.get('worker')!.version + 1);
    const o = await order();
    expect(o.filter((l) => l === 'db' || l === 'api' || l === 'init')).toEqual(['db', 'init', 'api']); // none restarted
  }, 120_000);

  it('health: degraded (200) when a non-critical service is down, unhealthy (503) for a critical one', async () => {
    await api('POST', '/v1/apps/shop-worker/stop');
    const degraded = await waitFor('degraded', async () => {
      const h = await api<{ status: string; reasons: string[] }>('GET', '/v1/stacks/shop/health');
      return h.body.status === 'degraded' ? h : undefined;
    }, 30_000, 200);
    expect(degraded.status).toBe(200);
    expect(degraded.body.reasons[0]).toMatch(/^worker \(not critical\): /);
    await api('POST', '/v1/apps/shop-api/stop');
    const unhealthy = await waitFor('unhealthy', async () => {
      const h = await api<{ status: string; reasons: string[] }>('GET', '/v1/stacks/shop/health');
      return h.body.status === 'unhealthy' ? h : undefined;
    }, 30_000, 200);
    expect(unhealthy.status).toBe(503);
    expect(unhealthy.body.reasons.some((r) => r.startsWith('api: '))).toBe(true);
    expect((await api('GET', '/v1/stacks/shop/health/simple')).status).toBe(200);
    // up brings stopped services back without a new version
    await omni(['compose', '-f', join(dir, 'compose.yaml'), 'up', '--timeout', '60'], { WORKER_VERSION: '2' });
    expect((await api<{ status: string }>('GET', '/v1/stacks/shop/health')).body.status).toBe('healthy');
  }, 120_000);

  it('a dependency that never gets healthy fails up, naming it and the services not started', async () => {
    const f = join(dir, 'bad-health.yaml');
    await writeFile(f, `services:\n  slowdb:\n    x-omni-driver: process\n    command: ["sh", "-c", "echo starting slowdb; exec sleep 100000"]\n    healthcheck:\n      test: ["CMD", "sh", "-c", "echo not ready yet; exit 1"]\n      interval: 300ms\n  app:\n    x-omni-driver: process\n    command: ["sleep", "100000"]\n    depends_on:\n      slowdb: {condition: service_healthy}\n`);
    const e = await fails(['compose', '-f', f, '-p', 'flaky', 'up', '--timeout', '4']);
    expect(e.code).toBe(1);
    expect(e.stdout).toMatch(/flaky: up failed: slowdb did not become healthy within 4 s/);
    expect(e.stdout).toMatch(/not started: app/);
    // the health log: the failing check's own output (a process task's check runs on the node)
    expect(e.stdout).toMatch(/health check: command exited with code 1: not ready yet/);
    const st = await api<StackView>('GET', '/v1/stacks/flaky');
    expect(st.body.status).toBe('failed');
    expect(st.body.services.find((s) => s.service === 'app')!.state).toBe('not started');
    expect((await api<Inspect>('GET', '/v1/apps/flaky-app')).body.tasks).toEqual([]); // never started
    expect((await api('GET', '/v1/stacks/flaky/health')).status).toBe(503);
    await omni(['compose', '-f', f, '-p', 'flaky', 'down']);
  }, 120_000);

  it('down removes every app of the stack and its record, and returns once they are gone', async () => {
    const f = join(dir, 'compose.yaml');
    const r = await omni(['compose', '-f', f, 'down', '--json']);
    const out = JSON.parse(r.stdout) as { removed: string[]; gone: boolean };
    expect(out.removed.sort()).toEqual(['shop-api', 'shop-db', 'shop-init', 'shop-worker']);
    expect(out.gone).toBe(true);
    expect((await api('GET', '/v1/stacks/shop')).status).toBe(404);
    // down waited: no app of either stack is left, not even one still stopping
    const { body } = await api<{ apps: { name: string }[] }>('GET', '/v1/apps');
    expect(body.apps.filter((a) => a.name.startsWith('shop-') || a.name.startsWith('flaky-'))).toEqual([]);
    expect((await omni(['compose', '-f', f, 'down'])).stdout).toMatch(/no stack shop/);
  }, 60_000);

  it('bad files give clear errors and change nothing', async () => {
    const bad = async (name: string, text: string, files: Record<string, string> = {}) => {
      const f = join(dir, name);
      await writeFile(f, text);
      for (const [p, t] of Object.entries(files)) await writeFile(join(dir, p), t);
      return fails(['compose', '-f', f, '-p', 'bad', 'up']);
    };
    const unknown = await bad('unknown.yaml', 'services:\n  web:\n    image: nginx\n    enviroment: {A: "1"}\n');
    expect(unknown.stderr).toMatch(/services\.web\.enviroment: unknown key 'enviroment' \(did you mean 'environment'\?\) \(INVALID_COMPOSE\)/);
    const cycle = await bad('cycle.yaml', 'services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [a]}\n');
    expect(cycle.stderr).toMatch(/depends_on has a cycle: a → b → a/);
    const envfile = await bad('envfile.yaml', 'services:\n  a: {image: x, env_file: missing.env}\n');
    expect(envfile.stderr).toMatch(/services\.a\.env_file: missing\.env not found/);
    const bind = await bad('bind.yaml', 'services:\n  a: {image: x, volumes: ["./certs:/certs:ro"]}\n');
    expect(bind.stderr).toMatch(/bind mount of \.\/certs refused: a host path is not the same on every node/);
    const noFile = await run(join(process.cwd(), 'bin/omni'), ['compose', 'ps'], { env, cwd: dir + '/..', timeout: 30_000 }).catch((e: { code: number; stderr: string }) => e);
    expect((noFile as { code: number }).code).toBe(2);
    expect((await api('GET', '/v1/stacks/bad')).status).toBe(404);
    // the API refuses a cycle and a dependency outside the stack itself
    const put = await api<{ error: { message: string } }>('PUT', '/v1/stacks/bad', { services: [{ service: 'a', spec: { name: 'bad-a', command: ['true'] }, dependsOn: [{ service: 'a', condition: 'service_started' }] }] });
    expect(put.status).toBe(400);
    expect(JSON.stringify(put.body)).toMatch(/cycle: a → a/);
  }, 120_000);

  it('keeps every record Omni wrote in protobuf on every node (none kept as JSON text)', async () => {
    const counts = await recordsKeptAsText(c);
    expect(Object.keys(counts).length).toBeGreaterThan(0);
    for (const n of Object.values(counts)) expect(n).toBe(0);
  });
});
