// The real Prometheus (Debian's prometheus package, which .ci/run installs) scrapes every node's
// /metrics with a pull token from a credentials file, as a user would set it up; promtool checks
// the exposition text. Without the prometheus binary the test is skipped, loudly (CI sets
// OMNI_REQUIRE_PROMETHEUS=1: there it fails instead).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LocalCluster } from '../../node/local-cluster.js';
import { apiCall, formCluster, waitFor } from './helpers.js';

const PROMETHEUS = '/usr/bin/prometheus';
const PROMTOOL = '/usr/bin/promtool';
const missing = existsSync(PROMETHEUS) && existsSync(PROMTOOL) ? undefined : `${PROMETHEUS} or ${PROMTOOL} is not installed (apt-get install prometheus)`;
if (missing && process.env.OMNI_REQUIRE_PROMETHEUS === '1') throw new Error(`OMNI_REQUIRE_PROMETHEUS=1 but ${missing}`);
if (missing) console.warn(`!!! SKIPPING the scrape by a real Prometheus: ${missing}`);

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

describe.skipIf(missing !== undefined)('a real Prometheus scrapes every node', () => {
  let c: LocalCluster;
  let dir: string;
  let prom: ChildProcess | undefined;
  const names = ['p1', 'p2', 'p3'];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-prometheus-'));
    c = await formCluster(names);
  }, 120_000);
  afterAll(async () => {
    prom?.kill('SIGKILL');
    await c?.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  it('promtool accepts the text; Prometheus scrapes the 3 nodes with a pull token and sees one leader and the task samples', async () => {
    const spec = { name: 'ticker', command: ['sh', '-c', 'while true; do sleep 1; done'], resources: { cpu: 0.1, memoryMB: 32 } };
    expect((await apiCall(c, 'p1', 'POST', '/v1/apps', spec)).status).toBe(201);
    const pull = (await apiCall<{ token: string }>(c, 'p1', 'POST', '/v1/tokens', { role: 'pull', name: 'prometheus' })).body.token;
    await writeFile(join(dir, 'token'), pull, { mode: 0o600 });
    // the task runs somewhere: its node's text has its sample
    const texts = await waitFor('a scrape with the task sample', async () => {
      const all = await Promise.all(names.map(async (n) => (await fetch(`${c.nodes.get(n)!.apiUrl}/metrics`, { headers: { authorization: `Bearer ${pull}` } })).text()));
      return all.some((t) => t.includes('omni_task_memory_bytes{app="ticker"')) ? all : undefined;
    }, 30_000);
    for (const text of texts) {
      const check = await new Promise<{ code: number | null; out: string }>((resolve) => {
        const p = execFile(PROMTOOL, ['check', 'metrics'], (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }));
        p.stdin!.end(text);
      });
      // 0: clean; 3: lint problems only — allowed for prom-client's own nodejs_* gauges (e.g.
      // nodejs_active_handles_total), never for Omni's metrics; anything else is a parse error.
      const problems = check.out.split('\n').filter((l) => l.trim() !== '');
      expect([0, 3], check.out).toContain(check.code);
      expect(problems.filter((l) => !l.startsWith('nodejs_')), check.out).toEqual([]);
    }
    const targets = names.map((n) => new URL(c.nodes.get(n)!.apiUrl).host);
    await writeFile(
      join(dir, 'prometheus.yml'),
      [
        'global: { scrape_interval: 1s, scrape_timeout: 900ms }',
        'scrape_configs:',
        '  - job_name: omni',
        `    authorization: { credentials_file: ${join(dir, 'token')} }`,
        `    static_configs: [{ targets: [${targets.map((t) => `"${t}"`).join(', ')}] }]`,
        '',
      ].join('\n'),
    );
    const port = await freePort();
    prom = spawn(PROMETHEUS, [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    let promLog = '';
    prom.stderr!.on('data', (d: Buffer) => (promLog = (promLog + d.toString()).slice(-4000)));
    const query = async (q: string) => {
      const res = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(q)}`).catch(() => undefined);
      if (!res?.ok) return undefined;
      return ((await res.json()) as { data: { result: { metric: Record<string, string>; value: [number, string] }[] } }).data.result;
    };
    const up = await waitFor('Prometheus to scrape the 3 nodes', async () => {
      const r = await query('up{job="omni"} == 1');
      return r && r.length === 3 ? r : undefined;
    }, 60_000).catch((err: Error) => {
      throw new Error(`${err.message}\nprometheus log:\n${promLog}`);
    });
    expect(up.map((s) => s.metric.instance).sort()).toEqual([...targets].sort());
    const leaders = await waitFor('sum(omni_raft_is_leader)', async () => (await query('sum(omni_raft_is_leader)'))?.[0], 30_000);
    expect(leaders.value[1]).toBe('1');
    const nodes = await query('omni_node_info');
    expect(nodes?.map((s) => s.metric.node).sort()).toEqual(names);
    const mem = await waitFor('the task memory series', async () => {
      const r = await query('omni_task_memory_bytes{app="ticker"}');
      return r && r.length === 1 ? r : undefined;
    }, 30_000);
    expect(Number(mem[0].value[1])).toBeGreaterThan(0);
    // the API's request counter, increasing between scrapes (Prometheus's own scrapes count too)
    await waitFor('omni_api_requests_total to increase', async () => ((await query('sum(increase(omni_api_requests_total[1m])) > 0'))?.length === 1 ? true : undefined), 30_000);
  }, 180_000);
});
