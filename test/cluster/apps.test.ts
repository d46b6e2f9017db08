// Apps on a real 3-node loopback cluster with the process driver: placement with
// anti-affinity, health, restarts, rolling update with rollback, pending reasons, invalid
// specs, node loss, agent restart, logs and endpoints.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LocalCluster } from '../../node/local-cluster.js';
import { apiCall, formCluster, waitFor, httpGet, recordsKeptAsText } from './helpers.js';

// A tiny HTTP app: / answers with its task id and version, /fail answers 500, /pid its pid.
const SERVER = `
const http = require('http');
const v = process.env.APP_VERSION || '1';
http.createServer((q, s) => {
  if (q.url === '/fail') { s.statusCode = 500; return s.end('failing'); }
  if (q.url === '/pid') return s.end(String(process.pid));
  if (q.url === '/runtime-env') return s.end(JSON.stringify([process.env.LD_PRELOAD, process.env.MALLOC_ARENA_MAX, process.env.OMNI_RUNTIME_ENV]));
  s.end('hello ' + v + ' from ' + process.env.OMNI_TASK_ID);
}).listen(Number(process.env.PORT), '127.0.0.1', () => console.log('listening on ' + process.env.PORT + ' version ' + v));
`;

const run = promisify(execFile);

function webSpec(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: 'web',
    command: [process.execPath, '-e', SERVER],
    ports: [{ name: 'http', port: 8080 }],
    replicas: 3,
    antiAffinity: true,
    resources: { cpu: 0.1, memoryMB: 64 },
    healthCheck: { type: 'http', port: 'http', path: '/', intervalMs: 300, timeoutMs: 500, retries: 2 },
    restart: { policy: 'always', delayMs: 200 },
    update: { parallel: 1, healthyTimeoutMs: 8000, minHealthyMs: 1000 },
    env: { APP_VERSION: '1' },
    ...over,
  };
}


interface Inspect {
  version: number;
  healthy: number;
  replicas: number;
  pending: string;
  deployment: { status: string; message: string };
  tasks: { id: string; node: string; version: number; desired: string; state: string; health: string; restarts: number; hostPorts: number[]; reason: string; cause: string }[];
  events: { message: string }[];
  endpoints: { host: string; ports: Record<string, number>; node: string; task: string }[];
}

describe('apps on a 3-node cluster (process driver)', () => {
  let c: LocalCluster;
  const api = <T>(method: string, path: string, body?: unknown) => apiCall<T>(c, 'n1', method, path, body);
  const inspect = async (name: string) => (await api<Inspect>('GET', `/v1/apps/${name}`)).body;
  const healthyCount = async (name: string, version?: number) => {
    const a = await inspect(name);
    return a.tasks.filter((t) => t.desired === 'run' && (version === undefined || t.version === version) && t.state === 'running' && t.health === 'healthy').length;
  };

  beforeAll(async () => {
    // A restarted omnid must be back before it counts as down (the re-attach test restarts n2;
    // on a loaded 2-core host a restart takes 3-5 s, past the 2 s of TEST_FLAGS).
    c = await formCluster(['n1', 'n2', 'n3'], { flags: ['--down-after-ms', '8000'] });
  });
  afterAll(async () => c?.destroy());

  it('deploys 3 replicas with anti-affinity: one per node, healthy, reachable on their ports', async () => {
    const r = await api<{ version: number }>('POST', '/v1/apps', webSpec());
    expect(r.status).toBe(201);
    await waitFor('3 healthy replicas', async () => (await healthyCount('web')) === 3, 30_000, 200);
    const a = await inspect('web');
    expect(new Set(a.tasks.map((t) => t.node))).toEqual(new Set(['n1', 'n2', 'n3']));
    expect(a.endpoints).toHaveLength(3);
    for (const e of a.endpoints) {
      const res = await httpGet(e.ports.http);
      expect(res.body).toBe(`hello 1 from ${e.task}`);
    }
  });

  it("a task inherits none of the launcher's runtime settings (bin/omnid: MALLOC_ARENA_MAX; with OMNI_MALLOC=jemalloc, LD_PRELOAD)", async () => {
    // each node said at its start which allocator it runs on (glibc unless OMNI_MALLOC=jemalloc; cli-launchers.test.ts checks that omnid drops LD_PRELOAD too)
    for (const n of ['n1', 'n2', 'n3']) expect(c.recentOutput(n, 400).join('\n')).toMatch(/memory allocator: (jemalloc|glibc)/);
    for (const e of (await inspect('web')).endpoints) expect((await httpGet(e.ports.http, '/runtime-env')).body).toBe('[null,null,null]');
  });

  it('omni stats samples each task on the node that runs it: CPU and memory', async () => {
    const env = { ...process.env, OMNI_ADDR: c.nodes.get('n2')!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' };
    const omni = (...args: string[]) => run('bin/omni', args, { env, timeout: 60_000 });
    const r = JSON.parse((await omni('stats', 'web', '--json')).stdout) as { reserved: { cpu: number; memoryBytes: number }; tasks: { task: string; node: string; state: string; cpuPercent?: number; memoryBytes?: number; error?: string }[] };
    expect(r.reserved).toEqual({ cpu: 0.1, memoryBytes: 64 * 1024 * 1024 });
    // one task per node: two of them sampled over RPC by the nodes that run them
    expect(new Set(r.tasks.map((t) => t.node))).toEqual(new Set(['n1', 'n2', 'n3']));
    for (const t of r.tasks) {
      expect(t.error).toBeUndefined();
      expect(t.memoryBytes).toBeGreaterThan(1024 * 1024); // a node process: tens of MiB
      expect(t.cpuPercent).toBeGreaterThanOrEqual(0);
    }
    const text = (await omni('stats', 'web')).stdout.trim().split('\n');
    expect(text[0]).toMatch(/^TASK\s+NODE\s+STATE\s+CPU %\s+MEMORY\s+RESERVED/);
    expect(text.slice(1)).toHaveLength(3);
    for (const line of text.slice(1)) expect(line).toMatch(/running\s+\d+\.\d%\s+\d+\.\dMiB\s+0\.1 cpu \/ 64\.0MiB/);
    // every app: an APP column; --json a list of the per-app answers
    const all = (await omni('stats')).stdout.trim().split('\n');
    expect(all[0]).toMatch(/^APP\s+TASK\s+NODE/);
    expect(all.filter((l) => l.startsWith('web '))).toHaveLength(3);
    expect((JSON.parse((await omni('stats', '--json')).stdout) as { app: string }[]).map((v) => v.app)).toContain('web');
    const missing = await omni('stats', 'nosuchapp').then(() => undefined, (e: { code: number; stderr: string }) => e);
    expect(missing?.code).toBe(1);
    expect(missing?.stderr).toMatch(/no app named nosuchapp/);
 
    // -f: a sample every --interval (one JSON line each) until Ctrl-C, which ends it with 0
    const samples = await new Promise<{ code: number | null; lines: string[] }>((resolve, reject) => {
      const p = spawn('bin/omni', ['stats', 'web', '-f', '--json', '--interval', '300ms'], { env });
      let out = '';
      p.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.split('\n').length > 3) p.kill('SIGINT');
      });
      p.on('error', reject);
      p.on('exit', (code) => resolve({ code, lines: out.trim().split('\n') }));
    });
    expect(samples.code).toBe(0);
    expect(samples.lines.length).toBeGreaterThanOrEqual(3);
    for (const l of samples.lines) expect((JSON.parse(l) as { stats: { tasks: unknown[] } }).stats.tasks).toHaveLength(3);
    await expect(omni('stats', 'web', '--interval', '1s')).rejects.toMatchObject({ stderr: expect.stringContaining('--interval goes with --follow') });
  });

  it('GET /metrics on every node (Prometheus text): Raft, state, its own tasks with CPU and memory, API requests; an admin or pull token', async () => {
    const scrape = async (node: string, token?: string) => {
      const res = await fetch(`${c.nodes.get(node)!.apiUrl}/metrics`, token ? { headers: { authorization: `Bearer ${token}` } } : {});
      return { status: res.status, type: res.headers.get('content-type') ?? '', text: await res.text() };
    };
    const value = (text: string, metric: string) => {
      const line = text.split('\n').find((l) => l.startsWith(metric + ' ') || l.startsWith(metric + '{'));
      return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
    };
    const pull = (await api<{ token: string }>('POST', '/v1/tokens', { role: 'pull', name: 'prometheus' })).body.token;
    let leaders = 0;
    for (const node of ['n1', 'n2', 'n3']) {
      const m = await scrape(node, node === 'n1' ? c.adminToken : pull);
      expect(m.status).toBe(200);
      expect(m.type).toMatch(/^text\/plain; version=0\.0\.4/);
      expect(m.text).toContain(`omni_node_info{node="${node}"`);
      expect(value(m.text, 'omni_raft_term')).toBeGreaterThan(0);
      expect(value(m.text, 'omni_raft_applied_index')).toBeGreaterThan(0);
      expect(value(m.text, 'omni_raft_voters')).toBe(3);
      expect(value(m.text, 'omni_raft_has_leader')).toBe(1);
      leaders += value(m.text, 'omni_raft_is_leader')!;
      expect(value(m.text, 'omni_state_bytes')).toBeGreaterThan(0);
      expect(m.text).toContain('omni_cluster_nodes{status="up"} 3');
      // its own replica of web, running and healthy, with a CPU and memory sample from its driver
      expect(m.text).toContain('omni_node_tasks{app="web",state="running",health="healthy"} 1');
      const mem = m.text.split('\n').find((l) => l.startsWith('omni_task_memory_bytes{app="web",task="web-'));
      expect(Number(mem?.split(' ').at(-1))).toBeGreaterThan(1024 * 1024);
      expect(m.text).toMatch(/^omni_task_cpu_percent\{app="web",task="web-[^"]+"\} [\d.]+$/m);
      expect(m.text).toMatch(/^process_resident_memory_bytes \d+/m); // Node's process metrics
      expect(m.text).toMatch(/^omni_registry_blobs \d+$/m); // the registry's blobs on this node
      expect(m.text).toContain('# TYPE omni_builds gauge');
    }
    expect(leaders).toBe(1);
    // the requests answered so far, counted by method and status code
    expect(value((await scrape('n1', c.adminToken)).text, 'omni_api_requests_total{method="GET",code="200"}')).toBeGreaterThan(0);
    expect((await scrape('n2')).status).toBe(401);
    expect((await scrape('n2', 'OMNIA1.not-a-token')).status).toBe(401);
    // a pull token still has no other API access
    expect((await fetch(`${c.nodes.get('n2')!.apiUrl}/v1/status`, { headers: { authorization: `Bearer ${pull}` } })).status).toBe(401);
  });

  it('restarts a task whose process is killed', async () => {
    const a = await inspect('web');
    const t = a.tasks.find((x) => x.desired === 'run')!;
    const pid = Number((await httpGet(t.hostPorts[0], '/pid')).body);
    process.kill(pid, 'SIGKILL');
    const after = await waitFor('restarted and healthy', async () => {
      const b = await inspect('web');
      const same = b.tasks.find((x) => x.id === t.id);
      return same && same.restarts >= 1 && same.state === 'running' && same.health === 'healthy' ? same : undefined;
    }, 30_000, 200);
    expect(after.restarts).toBe(1);
    expect(Number((await httpGet(t.hostPorts[0], '/pid')).body)).not.toBe(pid);
  });

  it('restarts a task that turns unhealthy (self-healing)', async () => {
    const breakable = `let broken = false; require('http').createServer((q, s) => { if (q.url === '/break') broken = true; s.statusCode = broken ? 500 : 200; s.end(broken ? 'broken' : 'ok'); }).listen(Number(process.env.PORT), '127.0.0.1')`;
    const r = await api('POST', '/v1/apps', webSpec({ name: 'healer', replicas: 1, antiAffinity: false, command: [process.execPath, '-e', breakable] }));
    expect(r.status).toBe(201);
    await waitFor('healer healthy', async () => (await healthyCount('healer')) === 1, 30_000, 200);
    const t = (await inspect('healer')).tasks[0];
    await httpGet(t.hostPorts[0], '/break');
    const healed = await waitFor('restarted after turning unhealthy', async () => {
      const x = (await inspect('healer')).tasks.find((y) => y.id === t.id);
      return x && x.restarts >= 1 && x.health === 'healthy' ? x : undefined;
    }, 30_000, 200);
    expect(healed.state).toBe('running');
    expect((await httpGet(t.hostPorts[0], '/')).status).toBe(200);
    await api('DELETE', '/v1/apps/healer');
  });

  it('keeps logs readable through the API from any node', async () => {
    const client = c.client('n3');
    let text = '';
    await client.stream('/v1/apps/web/logs?tail=50', (chunk) => (text += chunk));
    client.close();
    expect(text).toMatch(/listening on \d+ version 1/);
  });

  it('rolls back an update whose health check fails; the old version keeps serving', async () => {
    const r = await api<{ version: number }>('POST', '/v1/apps', webSpec({ env: { APP_VERSION: '2' }, healthCheck: { type: 'http', port: 'http', path: '/fail', intervalMs: 300, timeoutMs: 500, retries: 2 } }));
    expect(r.status).toBe(200);
    expect(r.body.version).toBe(2);
    const a = await waitFor('rolled back', async () => {
      const x = await inspect('web');
      return x.deployment.status === 'rolled-back' ? x : undefined;
    }, 40_000, 200);
    expect(a.version).toBe(1);
    // The first cause (the health check result), not the SIGTERM the agent sent because of it.
    expect(a.deployment.message).toMatch(/^task web-[0-9a-f]+ on n\d: health check got HTTP 500 on \/fail$/);
    expect(a.events.find((e) => /rolled back to version 1/.test(e.message))?.message).toMatch(/health check got HTTP 500 on \/fail$/);
    for (const t of a.tasks.filter((x) => x.version === 2)) expect(t.reason).toMatch(/health check got HTTP 500 on \/fail/);
    expect(JSON.stringify(a)).not.toMatch(/SIGTERM/);
    await waitFor('no version-2 task left running', async () => (await inspect('web')).tasks.every((t) => t.version === 1 || t.desired === 'stop'), 20_000, 200);
    expect(await healthyCount('web', 1)).toBe(3);
    for (const e of (await inspect('web')).endpoints) expect((await httpGet(e.ports.http)).body).toMatch(/^hello 1 /);
  });

  it('a good update rolls through to the new version', async () => {
    const r = await api<{ version: number }>('POST', '/v1/apps', webSpec({ env: { APP_VERSION: '3' } }));
    const v = r.body.version;
    await waitFor('all replicas on the new version', async () => {
      const x = await inspect('web');
      return x.version === v && x.deployment.status === 'stable' && (await healthyCount('web', v)) === 3 && x.tasks.filter((t) => t.desired === 'run').length === 3;
    }, 60_000, 300);
    for (const e of (await inspect('web')).endpoints) expect((await httpGet(e.ports.http)).body).toMatch(/^hello 3 /);
  });

  it('the omni CLI drives apps: run, ps, inspect, endpoints, scale, logs', async () => {
    const env = { ...process.env, OMNI_ADDR: c.nodes.get('n2')!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' };
    const omni = (...args: string[]) => run('bin/omni', args, { env, timeout: 60_000 });
    const server = `require('http').createServer((q,s)=>s.end('cli')).listen(Number(process.env.PORT),'127.0.0.1',()=>console.log('cli app up'))`;
    const started = await omni('run', '--name', 'cliapp', '--port', '8080', '--replicas', '2', '--health-http', '/', '--', process.execPath, '-e', server);
    expect(started.stdout).toMatch(/cliapp is healthy \(version 1\)/);
    const ps = JSON.parse((await omni('ps', '--json')).stdout) as { apps: { name: string; healthy: number; replicas: number }[] };
    expect(ps.apps.find((a) => a.name === 'cliapp')).toMatchObject({ healthy: 2, replicas: 2 });
    expect((await omni('inspect', 'cliapp')).stdout).toMatch(/replicas\s+2\/2 healthy/);
    const eps = (await omni('endpoints', 'cliapp')).stdout.trim().split('\n');
    expect(eps).toHaveLength(2);
    for (const line of eps) expect((await httpGet(Number(line.split('\t')[0].split(':')[1]))).body).toBe('cli');
    await omni('scale', 'cliapp', '1');
    await waitFor('scaled to 1', async () => (await inspect('cliapp')).tasks.filter((t) => t.desired === 'run').length === 1, 20_000, 200);
    expect((await omni('logs', 'cliapp', '--tail', '5')).stdout).toMatch(/cli app up/);
    const bad = await omni('run', '--name', 'Bad_Name', '--', 'true').then(() => undefined, (e: { code: number; stderr: string }) => e);
    expect(bad?.code).toBe(1);
    expect(bad?.stderr).toMatch(/^error: name: .*\(INVALID_SPEC\)/);
    // omni rm waits until the app is gone (its tasks stopped, its records deleted)
    expect((await omni('rm', 'cliapp')).stdout).toBe('cliapp: removed\n');
    expect((await api('GET', '/v1/apps/cliapp')).status).toBe(404);
    // omni deploy FILE.yaml, with an env file, as in the README.
    const dir = await mkdtemp(join(tmpdir(), 'omni-yaml-'));
    await writeFile(join(dir, 'app.env'), '# comment\nGREETING="from yaml"\n');
    const yamlServer = `require('http').createServer((q, s) => s.end(process.env.GREETING)).listen(Number(process.env.PORT), '127.0.0.1')`;
    await writeFile(join(dir, 'app.yaml'), [
      'name: yamlapp',
      `command: [${JSON.stringify(process.execPath)}, -e, ${JSON.stringify(yamlServer)}]`,
      `envFile: ${join(dir, 'app.env')}`,
      'ports: [{ name: http, port: 8080 }]',
      'replicas: 1',
      'resources: { cpu: 100m, memory: 32M }',
      'healthCheck: { type: http, port: http, path: /, intervalMs: 300 }',
    ].join('\n'));
    const deployed = JSON.parse((await omni('deploy', join(dir, 'app.yaml'), '--json')).stdout);
    expect(deployed).toMatchObject({ name: 'yamlapp', version: 1, healthy: true });
    const ep = (await inspect('yamlapp')).endpoints[0];
    expect((await httpGet(ep.ports.http)).body).toBe('from yaml');
    const badYaml = await omni('deploy', join(dir, 'app.env')).then(() => undefined, (e: { code: number; stderr: string }) => e);
    expect(badYaml?.code).toBe(2);
    await omni('rm', 'yamlapp');
    await rm(dir, { recursive: true, force: true });
  });

  it('omni logs piped into head exits 0 quietly (no EPIPE stack); --json prints JSON lines', async () => {
    const env = { ...process.env, OMNI_ADDR: c.nodes.get('n3')!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' };
    // Prints a numbered line every 5 ms, forever: the reader always stops first.
    const chatty = `let i = 0; setInterval(() => console.log('line ' + i++), 5); require('http').createServer((q, s) => s.end('ok')).listen(Number(process.env.PORT), '127.0.0.1')`;
    const r = await api('POST', '/v1/apps', webSpec({ name: 'chatty', replicas: 1, antiAffinity: false, command: [process.execPath, '-e', chatty] }));
    expect(r.status).toBe(201);
    await waitFor('chatty healthy', async () => ((await inspect('chatty')).endpoints.length === 1 ? true : undefined));
    const piped = await run('bash', ['-c', 'set -o pipefail; bin/omni logs chatty -f | head -n 3'], { env, timeout: 60_000 }).then(
      (x) => ({ code: 0, ...x }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    expect(piped.stderr).toBe('');
    expect(piped.code).toBe(0);
    expect(piped.stdout.trim().split('\n')).toHaveLength(3);
    const json = await run('bin/omni', ['logs', 'chatty', '--tail', '4', '--json'], { env, timeout: 60_000 });
    // One JSON object per line; the live task's lines are its last 4 (an earlier task of the app,
    // replaced on a loaded machine, may add its own).
    const lines = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as { task: string; node: string; line?: string; error?: string });
    const task = (await inspect('chatty')).tasks.find((t) => t.desired === 'run')!;
    const mine = lines.filter((l) => l.task === task.id);
    expect(mine).toHaveLength(4);
    // each line with the time its node wrote it (omni watch resumes from it)
    for (const l of mine) expect(l).toEqual({ task: task.id, node: task.node, line: expect.stringMatching(/^line \d+$/), at: expect.any(Number) });
    for (const l of lines) expect(Object.keys(l).sort()).toEqual(l.error === undefined ? ['at', 'line', 'node', 'task'] : ['error', 'node', 'task']);
    await api('DELETE', '/v1/apps/chatty');
  });

  it('keeps a persistent volume on its node: the data survives a stop and start', async () => {
    // Each start appends a line to $OMNI_VOLUME_DATA/starts and serves the line count.
    const counter = `const fs = require('fs'); const f = process.env.OMNI_VOLUME_DATA + '/starts'; fs.appendFileSync(f, 'x\\n'); const n = fs.readFileSync(f, 'utf8').trim().split('\\n').length; require('http').createServer((q, s) => s.end(String(n))).listen(Number(process.env.PORT), '127.0.0.1')`;
    const r = await api('POST', '/v1/apps', webSpec({ name: 'store', replicas: 1, antiAffinity: false, command: [process.execPath, '-e', counter], volumes: [{ name: 'data', path: '/data' }] }));
    expect(r.status).toBe(201);
    const first = await waitFor('store healthy', async () => {
      const a = await inspect('store');
      return a.endpoints.length === 1 ? a : undefined;
    }, 30_000, 200);
    expect((await httpGet(first.endpoints[0].ports.http)).body).toBe('1');
    expect((await api('POST', '/v1/apps/store/stop')).status).toBe(200);
    await waitFor('stopped', async () => (await inspect('store')).tasks.every((t) => t.desired === 'stop' && t.state !== 'running'), 20_000, 200);
    expect((await api('POST', '/v1/apps/store/start')).status).toBe(200);
    const second = await waitFor('store healthy again', async () => {
      const a = await inspect('store');
      return a.endpoints.length === 1 && a.endpoints[0].task !== first.endpoints[0].task ? a : undefined;
    }, 30_000, 200);
    expect(second.endpoints[0].node).toBe(first.endpoints[0].node);
    expect((await httpGet(second.endpoints[0].ports.http)).body).toBe('2');
    await api('DELETE', '/v1/apps/store');
  });

  it('leaves impossible replicas pending with a reason, never over-committing', async () => {
    const big = await api('POST', '/v1/apps', webSpec({ name: 'huge', replicas: 1, antiAffinity: false, resources: { cpu: 0.1, memoryMB: 64 * 1024 * 1024 } }));
    expect(big.status).toBe(201);
    const gpu = await api('POST', '/v1/apps', webSpec({ name: 'gpu', replicas: 1, antiAffinity: false, resources: { cpu: 0.1, memoryMB: 64, gpus: 4 } }));
    expect(gpu.status).toBe(201);
    const arm = await api('POST', '/v1/apps', webSpec({ name: 'arm', replicas: 1, antiAffinity: false, constraints: ['arch==riscv64'] }));
    expect(arm.status).toBe(201);
    const pending = await waitFor('pending reasons', async () => {
      const [h, g, a] = await Promise.all([inspect('huge'), inspect('gpu'), inspect('arm')]);
      return h.pending && g.pending && a.pending ? { h, g, a } : undefined;
    }, 20_000, 200);
    expect(pending.h.pending).toMatch(/memory/i);
    expect(pending.g.pending).toMatch(/4 GPU/i);
    expect(pending.a.pending).toMatch(/arch/);
    for (const x of [pending.h, pending.g, pending.a]) expect(x.tasks).toHaveLength(0);
    for (const n of ['huge', 'gpu', 'arm']) expect((await api('DELETE', `/v1/apps/${n}`)).status).toBe(200);
  });

  it('refuses invalid specs with a 400 naming the field, creating nothing', async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [webSpec({ name: 'Bad Name' }), /name/],
      [webSpec({ name: 'noimage', command: undefined }), /image|command/],
      [webSpec({ name: 'badport', ports: [{ name: 'http', port: 70000 }] }), /ports\[0\]\.port/],
      [webSpec({ name: 'badreplicas', replicas: -1 }), /replicas/],
      [webSpec({ name: 'typo', replica: 3 }), /replica/],
    ];
    for (const [spec, field] of cases) {
      const r = await api<{ error: { code: string; message: string } }>('POST', '/v1/apps', spec);
      expect(r.status, JSON.stringify(spec.name)).toBe(400);
      expect(r.body.error.code).toBe('INVALID_SPEC');
      expect(r.body.error.message).toMatch(field);
      expect((await api('GET', `/v1/apps/${encodeURIComponent(String(spec.name))}`)).status).toBe(404);
    }
  });

  it('re-attaches to running tasks after the agent (omnid) restarts: no duplicates', async () => {
    const before = await inspect('web');
    const onN2 = before.tasks.find((t) => t.node === 'n2' && t.desired === 'run')!;
    const pid = Number((await httpGet(onN2.hostPorts[0], '/pid')).body);
    await c.kill('n2', 'SIGTERM');
    await c.restart('n2');
    await waitFor('n2 reports again', async () => {
      const lines = c.nodes.get('n2')!.lines;
      return lines.some((l) => l.includes(`re-attached to task ${onN2.id}`));
    }, 20_000, 200);
    await new Promise((r) => setTimeout(r, 1500));
    const after = await inspect('web');
    const same = after.tasks.find((t) => t.id === onN2.id)!;
    expect(same.desired).toBe('run');
    expect(same.restarts).toBe(onN2.restarts);
    expect(Number((await httpGet(onN2.hostPorts[0], '/pid')).body)).toBe(pid);
    expect(after.tasks.filter((t) => t.desired === 'run')).toHaveLength(3);
  });

  it('moves the tasks of a node killed with -9 to the other nodes; a global app keeps one per live node', async () => {
    const r = await api('POST', '/v1/apps', webSpec({ name: 'mover', replicas: 3, antiAffinity: false, healthCheck: undefined }));
    expect(r.status).toBe(201);
    const { replicas: _r, antiAffinity: _a, ...base } = webSpec({ name: 'everywhere', healthCheck: undefined });
    const g = await api('POST', '/v1/apps', { ...base, mode: 'global' });
    expect(g.status, JSON.stringify(g.body)).toBe(201);
    await waitFor('mover running', async () => (await inspect('mover')).tasks.filter((t) => t.state === 'running').length === 3, 30_000, 200);
    const spread = await waitFor('everywhere on every node', async () => {
      const a = await inspect('everywhere');
      const running = a.tasks.filter((t) => t.desired === 'run' && t.state === 'running');
      return running.length === 3 ? a : undefined;
    }, 30_000, 200);
    expect(new Set(spread.tasks.filter((t) => t.desired === 'run').map((t) => t.node))).toEqual(new Set(['n1', 'n2', 'n3']));
    expect(spread.replicas).toBe(3);
    const leaderName = (await c.client('n1').get<{ leader: string }>('/v1/status')).leader;
    const victim = ['n1', 'n2', 'n3'].find((n) => n !== leaderName && n !== 'n1')!;
    await c.kill(victim);
    const moved = await waitFor('tasks rescheduled off the dead node', async () => {
      const a = await inspect('mover');
      const live = a.tasks.filter((t) => t.desired === 'run');
      return live.length === 3 && live.every((t) => t.node !== victim && t.state === 'running') ? a : undefined;
    }, 40_000, 300);
    expect(moved.tasks.some((t) => t.desired === 'stop' && t.node === victim)).toBe(true);
    // the global app: the dead node's task stopped and not replaced; it wants the two live nodes
    const g2 = await waitFor('everywhere on the live nodes', async () => {
      const a = await inspect('everywhere');
      const live = a.tasks.filter((t) => t.desired === 'run');
      return a.replicas === 2 && live.length === 2 && live.every((t) => t.node !== victim && t.state === 'running') ? a : undefined;
    }, 40_000, 300);
    expect(new Set(g2.tasks.filter((t) => t.desired === 'run').map((t) => t.node)).size).toBe(2);
  });

  it('keeps every record Omni wrote in protobuf on every node (none kept as JSON text)', async () => {
    const counts = await recordsKeptAsText(c);
    expect(Object.keys(counts).length).toBeGreaterThan(0);
    for (const n of Object.values(counts)) expect(n).toBe(0);
  });
});
