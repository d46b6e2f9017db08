// Service networking with the docker driver on a 3-node loopback cluster: container `a` on d3
// sends GET / to b:8080 (busybox nc: the test image's static busybox wget crashes in
// getservbyname, its nc resolves names through /etc/hosts like any libc) to container `b` on
// another node; the names are the
// container's /etc/hosts (the network's hosts file), the addresses are docker VIPs the node put
// on an interface of its own, the bytes cross nodes through /omni/tunnel. b's published port
// answers on every node. A UDP service (Node's dgram in an image made offline from this host's
// node by scripts/forge-base.sh) is reached by name from a container on another node and on its
// published UDP port on every node. The test talks only to 127.0.0.1; the containers talk to their node.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import type { LocalCluster } from '../../node/local-cluster.js';
import { dockerForTests } from '../support/docker.js';
import { apiCall, formCluster, freePublishBase, waitFor, waitPublished, httpGet, udpAsk, udpAskerSource, udpEchoSource } from './helpers.js';
import { dockerVipInterface, dockerVipsAvailable } from '../../node/net/docker-vips.js';
import { parseVipRange } from '../../protocol/net/vip.js';

const docker = await dockerForTests();
const skip = 'skip' in docker ? docker.skip : dockerVipsAvailable().ok ? undefined : (dockerVipsAvailable() as { reason: string }).reason;
if (skip) console.warn(`!!! SKIPPING docker service networking tests: ${skip}`);

const NODE_INDEX: Record<string, number> = { d1: 1, d2: 2, d3: 3 };
const dockerRange = (n: string) => `198.18.${NODE_INDEX[n] * 16}.0/20`;
const NODE_IMAGE = 'omni-test/node:24';
const PUBLISH = await freePublishBase(40);
const publishedOn = (node: string) => PUBLISH + NODE_INDEX[node] * 7;

interface Inspect {
  tasks: { id: string; node: string; desired: string; state: string; health: string; hostPorts: number[] }[];
}

describe.skipIf(skip !== undefined)('service networking across nodes (docker driver)', () => {
  let c: LocalCluster;
  const image = 'skip' in docker ? '' : docker.image;
  const api = <T>(method: string, path: string, body?: unknown) => apiCall<T>(c, 'd1', method, path, body);
  const servingTask = async (app: string) => {
    const a = (await api<Inspect>('GET', `/v1/apps/${app}`)).body;
    return a.tasks.find((t) => t.desired === 'run' && t.state === 'running' && t.health === 'healthy');
  };

  beforeAll(async () => {
    c = await formCluster(['d1', 'd2', 'd3'], {
      nodeFlags: (n) => ['--vip-range', `127.77.${NODE_INDEX[n] * 16}.0/20`, '--docker-vip-range', dockerRange(n), '--publish-host', '127.0.0.1', '--publish-port-offset', String(NODE_INDEX[n] * 7)],
    });
  });
  afterAll(async () => {
    if (!c) return;
    // A node killed without its shutdown leaves its docker VIP interface behind.
    const names = Object.keys(NODE_INDEX).map((n) => {
      const r = parseVipRange(dockerRange(n), 'docker');
      return r.ok ? dockerVipInterface(r.range, c.dataDir(n)) : '';
    });
    await c.destroy();
    for (const name of names) if (name) await promisify(execFile)('ip', ['link', 'del', name]).catch(() => undefined);
  });

  let bNode = '';
  let aPort = 0;

  it('container a on d3 reaches b:8080 by name in container b on another node; the published port answers everywhere', async () => {
    const health = { type: 'tcp', port: 'http', intervalMs: 300, timeoutMs: 1000, retries: 3 };
    const b = await api('POST', '/v1/apps', {
      name: 'b',
      image,
      args: ['sh', '-c', 'mkdir -p /www && echo "b from $OMNI_TASK_ID" > /www/index.html && exec httpd -f -p 8080 -h /www'],
      ports: [{ name: 'http', port: 8080, publish: PUBLISH }],
      network: { name: 'net1' },
      constraints: ['node.name!=d3'],
      resources: { cpu: 0.1, memory: '32M' },
      healthCheck: health,
    });
    expect(b.status, JSON.stringify(b.body)).toBe(201);
    const a = await api('POST', '/v1/apps', {
      name: 'a',
      image,
      args: ['sh', '-c', 'mkdir -p /www && httpd -p 8080 -h /www && while true; do cp /etc/hosts /www/hosts; cp /etc/resolv.conf /www/resolv; nslookup b >/www/dns.txt 2>&1; if printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 2 b 8080 >/www/b.raw 2>/www/b.err; then tr -d "\\r" </www/b.raw | sed "1,/^$/d" >/www/b.tmp && mv /www/b.tmp /www/b.txt; else cp /www/b.err /www/b.txt; fi; sleep 0.3; done'],
      // Read through its published port: on this shared host another process may hold 127.0.0.1
      // on a's host port (docker-proxy binds 0.0.0.0, the more specific address wins).
      ports: [{ name: 'http', port: 8080, publish: PUBLISH + 1 }],
      network: { name: 'net1', aliases: ['a'] },
      constraints: ['node.name==d3'],
      resources: { cpu: 0.1, memory: '32M' },
      healthCheck: health,
    });
    expect(a.status, JSON.stringify(a.body)).toBe(201);
    const bt = await waitFor('b serving', () => servingTask('b'), 60_000, 300);
    const at = await waitFor('a serving', () => servingTask('a'), 60_000, 300);
    expect(at.node).toBe('d3');
    expect(bt.node).not.toBe('d3');
    bNode = bt.node;
    aPort = publishedOn('d3') + 1;
    const hosts = (await waitFor('a hosts', async () => {
      const r = await httpGet(aPort, '/hosts').catch(() => undefined);
      return r?.status === 200 ? r : undefined;
    }, 15_000, 200)).body;
    expect(hosts).toMatch(/^198\.18\.(4[89]|5\d|6[0-3])\.\d+\tb$/m); // d3's docker range 198.18.48.0/20
    let last = '';
    const answer = await waitFor('a reaches b by name', async () => {
      const r = await httpGet(aPort, '/b.txt').catch(() => undefined);
      last = r?.body ?? last;
      if (process.env.OMNI_TEST_ECHO) console.log(`a: ${last}`);
      return r?.status === 200 && r.body.startsWith('b from') ? r.body : undefined;
    }, 30_000, 300);
    expect(answer).toBe(`b from ${bt.id}\n`);
    for (const n of ['d1', 'd2', 'd3']) {
      const r = await waitPublished(c, n, publishedOn(n));
      expect(r.body).toBe(`b from ${bt.id}\n`);
    }
  });

  it("the container asks the network's DNS address on its node (busybox nslookup b)", async () => {
    const resolv = (await httpGet(aPort, '/resolv')).body;
    expect(resolv).toMatch(/^nameserver 198\.18\.(4[89]|5\d|6[0-3])\.\d+$/m); // d3's docker range
    const bVip = /^(\S+)\tb$/m.exec((await httpGet(aPort, '/hosts')).body)![1];
    const dns = await waitFor('nslookup b in the container', async () => {
      const r = await httpGet(aPort, '/dns.txt').catch(() => undefined);
      return r?.status === 200 && r.body.includes(bVip) ? r.body : undefined;
    }, 15_000, 300);
    expect(dns).toMatch(/Name:\s+b/);
  });

  it('a UDP service in a container: reached by name from a container on another node, and on its published port on every node', async () => {
    // a Node image made offline from this host's node (scripts/forge-base.sh), imported into the engine
    const env = { ...process.env, DOCKER_HOST: `unix://${'skip' in docker ? '' : docker.socketPath}`, NODE: resolve('node_modules/node/bin/node'), OMNI_FORGE_BASE_CACHE: process.env.OMNI_FORGE_BASE_CACHE ?? join(homedir(), '.cache/omni/forge-base') };
    const made = await promisify(execFile)('scripts/forge-base.sh', ['node'], { env, timeout: 300_000, maxBuffer: 16 * 1024 * 1024 });
    const rootfs = made.stdout.trim().split(/\s+/).pop()!;
    await promisify(execFile)('sh', ['-c', `tar -C "${rootfs}" -c . | docker import - ${NODE_IMAGE}`], { env, timeout: 300_000, maxBuffer: 16 * 1024 * 1024 });
    // u echoes each datagram with its task id; q asks u by name over UDP (dgram resolves u through /etc/hosts)
    const echo = udpEchoSource('5353', '0.0.0.0');
    const asker = udpAskerSource('8080', '0.0.0.0');
    const u = await api('POST', '/v1/apps', { name: 'u', image: NODE_IMAGE, args: ['node', '-e', echo], ports: [{ name: 'dns', port: 5353, protocol: 'udp', publish: PUBLISH + 4 }], network: { name: 'net1' }, constraints: ['node.name!=d3'], resources: { cpu: 0.1, memory: '64M' } });
    expect(u.status, JSON.stringify(u.body)).toBe(201);
    const q = await api('POST', '/v1/apps', { name: 'q', image: NODE_IMAGE, args: ['node', '-e', asker], ports: [{ name: 'http', port: 8080, publish: PUBLISH + 2 }], network: { name: 'net1' }, constraints: ['node.name==d3'], resources: { cpu: 0.1, memory: '64M' }, healthCheck: { type: 'tcp', port: 'http', intervalMs: 300, timeoutMs: 1000, retries: 3 } });
    expect(q.status, JSON.stringify(q.body)).toBe(201);
    const ut = await waitFor('u running', async () => (await api<Inspect>('GET', '/v1/apps/u')).body.tasks.find((t) => t.desired === 'run' && t.state === 'running'), 60_000, 300);
    await waitFor('q serving', () => servingTask('q'), 60_000, 300);
    expect(ut.node).not.toBe('d3');
    let last = '';
    const byName = await waitFor('q reaches u by name over UDP', async () => {
      const r = await httpGet(publishedOn('d3') + 2, '/hello').catch(() => undefined);
      last = r ? `${r.status} ${r.body}` : last;
      return r?.status === 200 ? r.body : undefined;
    }, 30_000, 300).catch((err: Error) => {
      throw new Error(`${err.message}; last answer: ${last}`);
    });
    expect(byName).toBe(`u ${ut.id}: ping hello`); // container on d3 → its node → tunnel → u's node → u's container
    for (const n of ['d1', 'd2', 'd3']) {
      const answer = await waitFor(`published UDP port on ${n}`, () => udpAsk(publishedOn(n) + 4, `from test via ${n}`), 15_000, 200);
      expect(answer).toBe(`u ${ut.id}: from test via ${n}`);
    }
    for (const app of ['u', 'q']) expect((await api('DELETE', `/v1/apps/${app}`)).status).toBeLessThan(300);
  }, 400_000);

  it("a new service on the network appears in the running container's /etc/hosts", async () => {
    const r = await api('POST', '/v1/apps', { name: 'c', command: ['sleep', '600'], ports: [{ name: 'http', port: 9000 }], network: { name: 'net1', aliases: ['cache'] } });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const hosts = await waitFor('cache in a\'s /etc/hosts', async () => {
      const x = await httpGet(aPort, '/hosts').catch(() => undefined);
      return x?.body.includes('\tcache\n') ? x.body : undefined;
    }, 15_000, 300);
    expect(hosts).toMatch(/^198\.18\.(4[89]|5\d|6[0-3])\.\d+\tcache$/m);
  });

  it('a container on two networks reaches the services of both, by bare and qualified names; its hosts file has both', async () => {
    const health = { type: 'tcp', port: 'http', intervalMs: 300, timeoutMs: 1000, retries: 3 };
    const z = await api('POST', '/v1/apps', {
      name: 'z',
      image,
      args: ['sh', '-c', 'mkdir -p /www && echo "z from $OMNI_TASK_ID" > /www/index.html && exec httpd -f -p 8080 -h /www'],
      ports: [{ name: 'http', port: 8080 }],
      network: { name: 'net2' },
      constraints: ['node.name!=d3'],
      resources: { cpu: 0.1, memory: '32M' },
      healthCheck: health,
    });
    expect(z.status, JSON.stringify(z.body)).toBe(201);
    // fetch NAME:8080 into /www/NAME.txt for each name, every 300 ms
    const fetchLoop = 'for h in b z z.net2 b.net1; do if printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 2 $h 8080 >/www/$h.raw 2>/www/$h.err; then tr -d "\\r" </www/$h.raw | sed "1,/^$/d" >/www/$h.tmp && mv /www/$h.tmp /www/$h.txt; fi; done';
    const m = await api('POST', '/v1/apps', {
      name: 'm',
      image,
      args: ['sh', '-c', `mkdir -p /www && httpd -p 8080 -h /www && while true; do cp /etc/hosts /www/hosts; ${fetchLoop}; sleep 0.3; done`],
      ports: [{ name: 'http', port: 8080, publish: PUBLISH + 6 }],
      networks: [{ name: 'net1' }, { name: 'net2' }],
      constraints: ['node.name==d3'],
      resources: { cpu: 0.1, memory: '32M' },
      healthCheck: health,
    });
    expect(m.status, JSON.stringify(m.body)).toBe(201);
    const zt = await waitFor('z serving', () => servingTask('z'), 60_000, 300);
    await waitFor('m serving', () => servingTask('m'), 60_000, 300);
    const bt = (await servingTask('b'))!;
    const mPort = publishedOn('d3') + 6;
    for (const [name, want] of [['z', `z from ${zt.id}`], ['z.net2', `z from ${zt.id}`], ['b', `b from ${bt.id}`], ['b.net1', `b from ${bt.id}`]]) {
      const got = await waitFor(`m reaches ${name}`, async () => {
        const r = await httpGet(mPort, `/${name}.txt`).catch(() => undefined);
        return r?.status === 200 && r.body === `${want}\n` ? r.body : undefined;
      }, 30_000, 300);
      expect(got).toBe(`${want}\n`);
    }
    const hosts = (await httpGet(mPort, '/hosts')).body;
    expect(hosts).toMatch(/^198\.18\.(4[89]|5\d|6[0-3])\.\d+\tz\.net2$/m); // d3's docker range
    // a (net1 only) does not see z
    expect((await httpGet(aPort, '/hosts')).body).not.toMatch(/\tz(\.net2)?$/m);

    // Nor can a container of net1 alone connect to z's address, taken from m's hosts file: the
    // node's proxy refuses containers of tasks not on the service's network (b, on net1, answers
    // it); nor z's host port through the container's gateway (the host): bound on 127.0.0.1 only.
    const zVip = /^(198\.18\.\d+\.\d+)\tz\.net2$/m.exec(hosts)![1];
    const zHostPort = ((await api<Inspect>('GET', '/v1/apps/z')).body.tasks.find((t) => t.id === zt.id)!).hostPorts[0];
    const ask = (target: string, port: string, file: string) => `if printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 2 ${target} ${port} >/www/r.raw 2>/dev/null && grep -q " from " /www/r.raw; then tr -d "\\r" </www/r.raw | sed "1,/^$/d" >/www/${file}.tmp; else echo refused >/www/${file}.tmp; fi; mv /www/${file}.tmp /www/${file}.txt`;
    const tryLoop = `${ask('$ZVIP', '8080', 'zvip')}; ${ask('b', '8080', 'b')}; GW=$(ip route | awk '/^default/ {print $3}'); ${ask('$GW', '$ZPORT', 'zhost')}`;
    const iso = await api('POST', '/v1/apps', {
      name: 'iso',
      image,
      args: ['sh', '-c', `mkdir -p /www && httpd -p 8080 -h /www && while true; do ${tryLoop}; sleep 0.3; done`],
      env: { ZVIP: zVip, ZPORT: String(zHostPort) },
      ports: [{ name: 'http', port: 8080, publish: PUBLISH + 3 }],
      network: { name: 'net1', aliases: ['iso'] },
      constraints: ['node.name==d3'],
      resources: { cpu: 0.1, memory: '32M' },
      healthCheck: health,
    });
    expect(iso.status, JSON.stringify(iso.body)).toBe(201);
    await waitFor('iso serving', () => servingTask('iso'), 60_000, 300);
    const isoPort = publishedOn('d3') + 3;
    await waitFor('iso reaches b (its own network) and has tried z both ways', async () => {
      const r = await httpGet(isoPort, '/b.txt').catch(() => undefined);
      const tried = await httpGet(isoPort, '/zhost.txt').catch(() => undefined);
      return r?.body === `b from ${bt.id}\n` && tried?.status === 200 ? r : undefined;
    }, 30_000, 300);
    // several rounds of its loop, each refused, while m (on net2 too) still reaches z
    for (let round = 0; round < 3; round++) {
      expect((await httpGet(isoPort, '/zvip.txt')).body).toBe('refused\n');
      expect((await httpGet(isoPort, '/zhost.txt')).body).toBe('refused\n');
      await new Promise((r) => setTimeout(r, 700));
    }
    expect((await httpGet(mPort, '/z.txt')).body).toBe(`z from ${zt.id}\n`);
    for (const app of ['iso', 'm', 'z']) expect((await api('DELETE', `/v1/apps/${app}`)).status).toBeLessThan(300);
  }, 200_000);

  it("b's node is killed: b moves and the name follows", async () => {
    const old = (await servingTask('b'))!;
    await c.kill(bNode);
    const other = ['d1', 'd2'].find((n) => n !== bNode)!;
    const client = () => c.client('d3');
    const moved = await waitFor('b replaced on the other node', async () => {
      const cl = client();
      try {
        const a = await cl.get<Inspect>('/v1/apps/b');
        return a.tasks.find((t) => t.desired === 'run' && t.state === 'running' && t.health === 'healthy' && t.id !== old.id);
      } catch {
        return undefined;
      } finally {
        cl.close();
      }
    }, 90_000, 300);
    expect(moved.node).toBe(other);
    const answer = await waitFor('a reaches the new b by name', async () => {
      const r = await httpGet(aPort, '/b.txt').catch(() => undefined);
      return r?.body === `b from ${moved.id}\n` ? r.body : undefined;
    }, 20_000, 300);
    expect(answer).toBe(`b from ${moved.id}\n`);
  });
});
