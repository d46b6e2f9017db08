// The docker driver end to end: a 3-node loopback cluster runs a busybox httpd image (built
// locally with docker import; no registry) with 3 replicas, one per node, on published ports.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../node/local-cluster.js';
import { dockerForTests } from '../support/docker.js';
import { formCluster, waitFor, httpGet as get } from './helpers.js';

const docker = await dockerForTests();
const skip = 'skip' in docker ? docker.skip : undefined;
if (skip) console.warn(`!!! SKIPPING docker app tests: ${skip}`);


describe.skipIf(skip !== undefined)('apps with the docker driver', () => {
  let c: LocalCluster;
  beforeAll(async () => {
    c = await formCluster(['d1', 'd2', 'd3']);
  });
  afterAll(async () => c?.destroy());

  it('runs 3 httpd replicas, one per node, reachable and healthy; a killed container restarts', async () => {
    const image = 'skip' in docker ? '' : docker.image;
    const client = c.client('d1');
    const r = await client.raw('POST', '/v1/apps', {
      name: 'www',
      image,
      command: undefined,
      args: ['sh', '-c', 'mkdir -p /www && echo "hello from $HOSTNAME" > /www/index.html && exec httpd -f -p 8080 -h /www'],
      ports: [{ name: 'http', port: 8080 }],
      replicas: 3,
      antiAffinity: true,
      resources: { cpu: 0.1, memory: '32M' },
      healthCheck: { type: 'http', port: 'http', path: '/', intervalMs: 300, timeoutMs: 1000, retries: 3 },
      restart: { policy: 'always', delayMs: 200 },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const a = await waitFor('3 healthy containers', async () => {
      const x = (await client.get<{ healthy: number; endpoints: { ports: Record<string, number>; node: string; task: string }[] }>('/v1/apps/www'));
      return x.healthy === 3 ? x : undefined;
    }, 60_000, 300);
    expect(new Set(a.endpoints.map((e) => e.node))).toEqual(new Set(['d1', 'd2', 'd3']));
    for (const e of a.endpoints) {
      const res = await get(e.ports.http);
      expect(res.status).toBe(200);
      expect(res.body).toMatch(/^hello from /);
    }
    const logs = await new Promise<string>((resolve, reject) => {
      let text = '';
      client.stream('/v1/apps/www/logs?tail=20', (chunk) => (text += chunk)).then(() => resolve(text), reject);
    });
    expect(typeof logs).toBe('string');
    // omni stats: each container sampled through its node's engine (two of them over RPC)
    const stats = await client.get<{ tasks: { node: string; memoryBytes?: number; cpuPercent?: number; error?: string }[] }>('/v1/apps/www/stats');
    expect(new Set(stats.tasks.map((t) => t.node))).toEqual(new Set(['d1', 'd2', 'd3']));
    for (const t of stats.tasks) {
      expect(t.error).toBeUndefined();
      expect(t.memoryBytes).toBeGreaterThan(0);
      expect(t.cpuPercent).toBeGreaterThanOrEqual(0);
    }
    // A container that dies is restarted by its agent.
    const { default: Docker } = await import('dockerode');
    const engine = new Docker({ socketPath: 'skip' in docker ? '' : docker.socketPath });
    const victim = a.endpoints[0].task;
    await engine.getContainer(`omni-${victim}`).kill();
    await waitFor('restarted', async () => {
      const x = await client.get<{ tasks: { id: string; restarts: number; health: string; state: string }[] }>('/v1/apps/www');
      const t = x.tasks.find((y) => y.id === victim);
      return t && t.restarts >= 1 && t.state === 'running' && t.health === 'healthy';
    }, 60_000, 300);
    expect((await client.raw('DELETE', '/v1/apps/www')).status).toBe(200);
    await waitFor('containers removed', async () => (await engine.listContainers({ all: true, filters: { label: ['omni.app=www'] } })).length === 0, 60_000, 500);
    client.close();
  });
});
