// A compose stack's services find each other by service name across nodes (issue 17 item 4), on a
// real 3-node loopback cluster with the process driver: `client` (pinned to n3) calls
// `http://web:8080/` where `web` runs on another node, through the node's proxy and the libp2p
// tunnel; web's published port ("PUBLISHED:8080") answers on every node (the routing mesh). Each
// node of this host gets its own VIP range and publish offset, as several nodes share it. The test
// itself talks only to 127.0.0.1.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import type { LocalCluster } from '../../node/local-cluster.js';
import { canUnshare } from '../../node/apps/drivers/process.js';
import { createDrivers } from '../../node/apps/drivers/index.js';
import { formCluster, freePublishBase, waitFor, waitPublished } from './helpers.js';

const run = promisify(execFile);

const NODE_INDEX: Record<string, number> = { n1: 1, n2: 2, n3: 3 };
const PUBLISH = await freePublishBase(40);

// web answers with its task id on $PORT; client asks http://web:8080/ at once and every 300 ms and
// writes the last answer (or error) to $DIR/client.out, its first to $DIR/client.first (an error
// there would mean it started before web was healthy: the dependency order).
const WEB = `require('http').createServer((q, s) => s.end('web ' + process.env.OMNI_TASK_ID)).listen(Number(process.env.PORT), '127.0.0.1')`;
const CLIENT = `
const http = require('http'); const fs = require('fs');
const out = process.env.DIR + '/client.out';
const first = process.env.DIR + '/client.first';
const write = (t) => { fs.writeFileSync(out, t); if (!fs.existsSync(first)) fs.writeFileSync(first, t); };
const ask = () => {
  const r = http.get({ host: 'web', port: 8080, path: '/', timeout: 2000 }, (res) => { let t = ''; res.on('data', (c) => (t += c)); res.on('end', () => write('ok ' + t)); });
  r.on('timeout', () => r.destroy(new Error('timeout')));
  r.on('error', (e) => write('error ' + e.message));
};
ask();
setInterval(ask, 300);
`;

const stack = (dir: string) => `
name: names
services:
  web:
    x-omni-driver: process
    command: ["${process.execPath}", "-e", ${JSON.stringify(WEB)}]
    ports: ["${PUBLISH}:8080"]
    deploy:
      placement: {constraints: ["node.hostname!=n3"]}
    healthcheck:
      test: ["CMD", "true"]
      interval: 300ms
  client:
    x-omni-driver: process
    command: ["${process.execPath}", "-e", ${JSON.stringify(CLIENT)}]
    environment: {DIR: "${dir}"}
    deploy:
      placement: {constraints: ["node.hostname==n3"]}
    depends_on:
      web: {condition: service_healthy}
`;

describe.runIf(canUnshare())('compose: services by name across nodes, published ports on every node (process driver)', () => {
  let c: LocalCluster;
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-compose-mesh-'));
    await writeFile(join(dir, 'compose.yaml'), stack(dir));
    c = await formCluster(['n1', 'n2', 'n3'], {
      nodeFlags: (n) => ['--vip-range', `127.77.${NODE_INDEX[n] * 16}.0/20`, '--publish-host', '127.0.0.1', '--publish-port-offset', String(NODE_INDEX[n] * 7)],
    });
  }, 120_000);
  afterAll(async () => {
    await c?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('client on n3 reaches web on another node as http://web:8080; the published port answers on every node', async () => {
    const env = { ...process.env, OMNI_ADDR: c.nodes.get('n1')!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' };
    const up = await run('bin/omni', ['compose', '-f', join(dir, 'compose.yaml'), 'up', '--timeout', '90'], { env, timeout: 120_000 });
    expect(up.stdout).toMatch(/names is healthy/);
    const client = c.client('n1');
    const web = (await client.get<{ spec: { network: unknown; ports: unknown }; tasks: { id: string; node: string; desired: string; state: string }[] }>('/v1/apps/names-web').finally(() => client.close()));
    expect(web.spec.network).toEqual({ name: 'names', aliases: ['web'] });
    expect(web.spec.ports).toEqual([expect.objectContaining({ port: 8080, publish: PUBLISH })]);
    const task = web.tasks.find((t) => t.desired === 'run' && t.state === 'running')!;
    expect(task.node).not.toBe('n3');
    const answer = await waitFor('client reaches web by name', async () => {
      const t = await readFile(join(dir, 'client.out'), 'utf8').catch(() => '');
      return t.startsWith('ok ') ? t : undefined;
    }, 30_000, 300);
    expect(answer).toBe(`ok web ${task.id}`);
    // depends_on web: service_healthy: the client's very first call by name already succeeded
    expect(await readFile(join(dir, 'client.first'), 'utf8')).toBe(`ok web ${task.id}`);
    for (const n of ['n1', 'n2', 'n3']) {
      const r = await waitPublished(c, n, PUBLISH + NODE_INDEX[n] * 7, '/', 20_000);
      expect(r.body).toBe(`web ${task.id}`);
    }
  }, 240_000);

  it('killing the node that runs web moves it; the client reaches the new replica by the same name', async () => {
    const client = c.client('n3');
    try {
      const tasksOf = async () => (await client.get<{ tasks: { id: string; node: string; desired: string; state: string }[] }>('/v1/apps/names-web')).tasks;
      const old = (await tasksOf()).find((t) => t.desired === 'run' && t.state === 'running')!;
      expect(old.node).not.toBe('n3');
      // The machine dies: its omnid (kill -9) and its task with it (a process task outlives omnid on purpose).
      await c.kill(old.node, 'SIGKILL');
      await createDrivers(c.dataDir(old.node)).process.stop(old.id, 1000);
      const moved = await waitFor('web replaced on another node', async () => (await tasksOf()).find((t) => t.desired === 'run' && t.state === 'running' && t.id !== old.id), 60_000, 300);
      expect(moved.node).not.toBe(old.node);
      expect(moved.node).not.toBe('n3');
      const answer = await waitFor('client reaches the new web by name', async () => {
        const t = await readFile(join(dir, 'client.out'), 'utf8').catch(() => '');
        return t === `ok web ${moved.id}` ? t : undefined;
      }, 30_000, 300);
      expect(answer).toBe(`ok web ${moved.id}`);
    } finally {
      client.close();
    }
  }, 180_000);
});
