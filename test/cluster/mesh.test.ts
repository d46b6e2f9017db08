// Service networking on a real 3-node loopback cluster with the process driver: app `a` calls
// app `b` by its alias (http://b:8080) from another node — the name comes from the hosts file
// the task sees as /etc/hosts, the address is a VIP of a's node, the bytes cross nodes through
// /omni/tunnel over libp2p; b's node is killed, b moves and the name follows; b's published port
// answers on every node; an app on two networks sees the names of both, one of a single network
// only its own. The test itself talks only to 127.0.0.1 (the tasks to their node's
// loopback VIPs: each node uses its own --vip-range, as several nodes share this host).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../node/local-cluster.js';
import { apiCall, formCluster, freePublishBase, waitFor, waitPublished, httpGet, udpAsk, udpAskerSource, udpEchoSource } from './helpers.js';
import { canUnshare } from '../../node/apps/drivers/process.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

// b: answers with its task id.
const SERVER = `require('http').createServer((q, s) => s.end('b says hi from ' + process.env.OMNI_TASK_ID)).listen(Number(process.env.PORT), '127.0.0.1')`;
// a: /node fetches http://b:8080/ with Node's http (getaddrinfo reads /etc/hosts), /wget with
// busybox-style wget (a C resolver), /hosts shows its /etc/hosts; errors are answered as 502.
const CLIENT = `
const http = require('http');
const { execFile } = require('child_process');
const fs = require('fs');
http.createServer((q, s) => {
  const fail = (e) => { s.statusCode = 502; s.end(String(e && e.message || e)); };
  if (q.url === '/hosts') return s.end(fs.readFileSync('/etc/hosts', 'utf8'));
  if (q.url === '/resolv') return s.end(fs.readFileSync('/etc/resolv.conf', 'utf8'));
  // DNS only (c-ares reads /etc/resolv.conf, not /etc/hosts): the network's DNS address answers
  if (q.url === '/dns') return require('dns').resolve4('b', (e, a) => (e ? fail(e) : s.end(JSON.stringify(a))));
  if (q.url === '/env') return s.end(JSON.stringify({ net: process.env.OMNI_NETWORK, b: process.env.OMNI_HOST_B }));
  if (q.url === '/wget') return execFile('wget', ['-q', '-T', '3', '-O', '-', 'http://b:8080/'], (e, out) => (e ? fail(e) : s.end(out)));
  const r = http.get({ host: 'b', port: 8080, path: '/', timeout: 3000 }, (res) => { let t = ''; res.on('data', (c) => (t += c)); res.on('end', () => s.end(t)); });
  r.on('timeout', () => r.destroy(new Error('timeout')));
  r.on('error', fail);
}).listen(Number(process.env.PORT), '127.0.0.1');
`;

// m: on two networks: /get?host=H fetches http://H:8080/, /dns?name=N resolves N by DNS only, /hosts.
const MULTI = `
const http = require('http');
const fs = require('fs');
http.createServer((q, s) => {
  const u = new URL(q.url, 'http://x');
  const fail = (e) => { s.statusCode = 502; s.end(String(e && e.message || e)); };
  if (u.pathname === '/hosts') return s.end(fs.readFileSync('/etc/hosts', 'utf8'));
  if (u.pathname === '/dns') return require('dns').resolve4(u.searchParams.get('name'), (e, a) => (e ? fail(e) : s.end(JSON.stringify(a))));
  if (u.pathname === '/env') return s.end(JSON.stringify({ net: process.env.OMNI_NETWORK, nets: process.env.OMNI_NETWORKS }));
  const r = http.get({ host: u.searchParams.get('host'), port: 8080, path: '/', timeout: 3000 }, (res) => { let t = ''; res.on('data', (c) => (t += c)); res.on('end', () => s.end(t)); });
  r.on('timeout', () => r.destroy(new Error('timeout')));
  r.on('error', fail);
}).listen(Number(process.env.PORT), '127.0.0.1');
`;

// Each node of this host gets its own VIP range and publish offset.
const NODE_INDEX: Record<string, number> = { n1: 1, n2: 2, n3: 3 };
const PUBLISH = await freePublishBase(40);
const publishedOn = (node: string) => PUBLISH + NODE_INDEX[node] * 7;

interface Inspect {
  tasks: { id: string; node: string; desired: string; state: string; health: string; hostPorts: number[] }[];
}

describe.runIf(canUnshare())('service networking across nodes (process driver)', () => {
  let c: LocalCluster;
  const api = <T>(node: string, method: string, path: string, body?: unknown) => apiCall<T>(c, node, method, path, body);
  const servingTask = async (node: string, app: string) => {
    const a = (await api<Inspect>(node, 'GET', `/v1/apps/${app}`)).body;
    return a.tasks.find((t) => t.desired === 'run' && t.state === 'running' && t.health === 'healthy');
  };

  beforeAll(async () => {
    c = await formCluster(['n1', 'n2', 'n3'], {
      flags: ['--down-after-ms', '3000'],
      nodeFlags: (n) => ['--vip-range', `127.77.${NODE_INDEX[n] * 16}.0/20`, '--publish-host', '127.0.0.1', '--publish-port-offset', String(NODE_INDEX[n] * 7)],
    });
  });
  afterAll(async () => c?.destroy());

  const health = { type: 'http', port: 'http', path: '/', intervalMs: 300, timeoutMs: 1000, retries: 2 };
  let aPort = 0;
  let bNode = '';

  it('a on n3 calls b on another node by name and container port', async () => {
    const b = await api('n1', 'POST', '/v1/apps', {
      name: 'b',
      command: [process.execPath, '-e', SERVER],
      ports: [{ name: 'http', port: 8080, publish: PUBLISH }],
      network: { name: 'net1' },
      constraints: ['node.name!=n3'],
      healthCheck: health,
      restart: { policy: 'always', delayMs: 200 },
    });
    expect(b.status).toBe(201);
    const a = await api('n1', 'POST', '/v1/apps', {
      name: 'a',
      command: [process.execPath, '-e', CLIENT],
      ports: [{ name: 'http', port: 8080 }],
      network: { name: 'net1', aliases: ['a', 'client'] },
      constraints: ['node.name==n3'],
      healthCheck: health,
    });
    expect(a.status).toBe(201);
    const bt = await waitFor('b serving', () => servingTask('n1', 'b'), 30_000, 200);
    const at = await waitFor('a serving', () => servingTask('n1', 'a'), 30_000, 200);
    bNode = bt.node;
    expect(at.node).toBe('n3');
    expect(bNode).not.toBe('n3');
    aPort = at.hostPorts[0];
    const hosts = (await httpGet(aPort, '/hosts')).body;
    expect(hosts).toMatch(/^127\.77\.(4[89]|5\d|6[0-3])\.\d+\tb$/m); // n3's range 127.77.48.0/20
    expect(hosts).toMatch(/\tclient$/m);
    const env = JSON.parse((await httpGet(aPort, '/env')).body) as { net: string; b: string };
    expect(env.net).toBe('net1');
    expect(hosts).toContain(`${env.b}\tb`);
    const viaNode = await waitFor('a reaches b by name', async () => {
      const r = await httpGet(aPort, '/node');
      return r.status === 200 ? r.body : undefined;
    }, 15_000, 200);
    expect(viaNode).toBe(`b says hi from ${bt.id}`);
    const viaWget = await httpGet(aPort, '/wget');
    expect(viaWget).toEqual({ status: 200, body: `b says hi from ${bt.id}` });
  });

  it("b's published port answers on every node", async () => {
    const bt = (await servingTask('n1', 'b'))!;
    for (const n of ['n1', 'n2', 'n3']) {
      const r = await waitPublished(c, n, publishedOn(n));
      expect(r.body).toBe(`b says hi from ${bt.id}`);
    }
  });

  it('omni run --network/--alias/--publish: the new name reaches a running task, the port is published', async () => {
    const env = { ...process.env, OMNI_ADDR: c.nodes.get('n3')!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' };
    const cserver = SERVER.replace("'b says hi from '", "'c says hi from '");
    await promisify(execFile)('bin/omni', ['run', '--name', 'c', '--network', 'net1', '--alias', 'cache', '--port', 'http=9000', '--publish', String(PUBLISH + 2), '--health-http', '/', '--constraint', 'node.name==n3', '--', process.execPath, '-e', cserver], { env, timeout: 60_000 });
    const hosts = await waitFor('cache in a\'s /etc/hosts', async () => {
      const r = await httpGet(aPort, '/hosts');
      return r.body.includes('\tcache\n') ? r.body : undefined;
    }, 15_000, 200);
    expect(hosts).not.toMatch(/\tc$/m); // --alias replaces the default alias
    const r = await waitPublished(c, 'n1', publishedOn('n1') + 2);
    expect(r.body).toMatch(/^c says hi from c-/);
  });

  it('a UDP service: reached by name from a task on another node, and on its published port on every node', async () => {
    // u (on n1) echoes each datagram with its task id; q (on n3) asks u by name over UDP (dgram resolves u through /etc/hosts)
    const echo = udpEchoSource('Number(process.env.PORT)', '127.0.0.1');
    const asker = udpAskerSource('Number(process.env.PORT)', '127.0.0.1');
    expect((await api('n1', 'POST', '/v1/apps', { name: 'u', command: [process.execPath, '-e', echo], ports: [{ name: 'dns', port: 5353, protocol: 'udp', publish: PUBLISH + 4 }], network: { name: 'net1' }, constraints: ['node.name==n1'] })).status).toBe(201);
    // a UDP port cannot be checked by http or tcp
    const bad = await api<{ error: { message: string } }>('n1', 'POST', '/v1/apps', { name: 'ubad', command: ['true'], ports: [{ name: 'dns', port: 53, protocol: 'udp' }], healthCheck: { type: 'tcp', port: 'dns' } });
    expect(bad.status).toBe(400);
    expect(JSON.stringify(bad.body)).toContain('dns is a UDP port');
    expect((await api('n1', 'POST', '/v1/apps', { name: 'q', command: [process.execPath, '-e', asker], ports: [{ name: 'http', port: 8080 }], network: { name: 'net1' }, constraints: ['node.name==n3'], healthCheck: health })).status).toBe(201);
    const ut = await waitFor('u running', async () => (await api<Inspect>('n1', 'GET', '/v1/apps/u')).body.tasks.find((t) => t.desired === 'run' && t.state === 'running'), 30_000, 200);
    const qt = await waitFor('q serving', () => servingTask('n1', 'q'), 30_000, 200);
    expect(ut.node).toBe('n1');
    const byName = await waitFor('q reaches u by name over UDP', async () => {
      const r = await httpGet(qt.hostPorts[0], '/hello');
      return r.status === 200 ? r.body : undefined;
    }, 20_000, 300);
    expect(byName).toBe(`u ${ut.id}: ping hello`); // n3 → tunnel → n1
    // the published UDP port on every node (n2 and n3 relay through a tunnel, n1 directly)
    for (const n of ['n1', 'n2', 'n3']) {
      const answer = await waitFor(`published UDP port on ${n}`, () => udpAsk(publishedOn(n) + 4, `from test via ${n}`), 15_000, 200);
      expect(answer).toBe(`u ${ut.id}: from test via ${n}`);
    }
  });

  it("names by DNS too: the network's DNS address on each node answers b, and forwards other names", async () => {
    const resolv = (await httpGet(aPort, '/resolv')).body;
    const m = /^nameserver (127\.77\.\d+\.\d+)$/m.exec(resolv);
    expect(m, resolv).not.toBeNull();
    const dnsVip = m![1];
    expect(dnsVip).toMatch(/^127\.77\.(4[89]|5\d|6[0-3])\./); // n3's range, where a runs
    expect(resolv).toContain('search net1.omni net1');
    const bVip = /^(\S+)\tb$/m.exec((await httpGet(aPort, '/hosts')).body)![1];
    // from inside the task, through DNS only (Node's dns.resolve4: c-ares)
    expect(JSON.parse((await httpGet(aPort, '/dns')).body)).toEqual([bVip]);
    // a real DNS client against the node's DNS address: the three forms of the name, a missing one
    const nslookup = async (name: string) => (await promisify(execFile)('busybox', ['nslookup', name, dnsVip], { timeout: 10_000 }).catch((e: { stdout: string; stderr: string }) => e)) as { stdout: string; stderr: string };
    for (const name of ['b', 'b.net1', 'b.net1.omni']) expect((await nslookup(name)).stdout).toContain(`Address: ${bVip}`);
    const missing = await nslookup('nothere.net1.omni');
    expect(`${missing.stdout}${missing.stderr}`).toMatch(/NXDOMAIN/);
  });

  it('an app on two networks reaches the services of both (bare and qualified names, hosts file and DNS); an app of one network does not see the other', async () => {
    const env = { ...process.env, OMNI_ADDR: c.nodes.get('n1')!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' };
    const zserver = SERVER.replace("'b says hi from '", "'z says hi from '");
    expect((await api('n1', 'POST', '/v1/apps', { name: 'z', command: [process.execPath, '-e', zserver], ports: [{ name: 'http', port: 8080 }], network: { name: 'net2' }, constraints: ['node.name==n2'], healthCheck: health })).status).toBe(201);
    await promisify(execFile)('bin/omni', ['run', '--name', 'm', '--network', 'net1', '--network', 'net2', '--port', 'http=8080', '--health-http', '/hosts', '--constraint', 'node.name==n3', '--', process.execPath, '-e', MULTI], { env, timeout: 60_000 });
    const zt = await waitFor('z serving', () => servingTask('n1', 'z'), 30_000, 200);
    const mt = await waitFor('m serving', () => servingTask('n1', 'm'), 30_000, 200);
    const mPort = mt.hostPorts[0];
    const bt = (await servingTask('n1', 'b'))!;
    const get = async (host: string) => (await httpGet(mPort, `/get?host=${host}`)).body;
    expect(await waitFor('m reaches z (net2) by name', async () => ((await get('z')).startsWith('z says') ? get('z') : undefined), 15_000, 200)).toBe(`z says hi from ${zt.id}`);
    expect(await get('b')).toBe(`b says hi from ${bt.id}`); // net1
    expect(await get('z.net2')).toBe(`z says hi from ${zt.id}`);
    expect(await get('b.net1')).toBe(`b says hi from ${bt.id}`);
    const hosts = (await httpGet(mPort, '/hosts')).body;
    expect(hosts).toMatch(/\tz$/m);
    expect(hosts).toMatch(/\tz\.net2$/m);
    expect(hosts).toMatch(/\tb\.net1$/m);
    expect(JSON.parse((await httpGet(mPort, '/env')).body)).toEqual({ net: 'net1', nets: 'net1,net2' });
    // by DNS only: the view's DNS address answers both networks' names
    const zVip = /^(\S+)\tz$/m.exec(hosts)![1];
    expect(JSON.parse((await httpGet(mPort, '/dns?name=z')).body)).toEqual([zVip]);
    expect(JSON.parse((await httpGet(mPort, '/dns?name=b.net1')).body)).toEqual([/^(\S+)\tb$/m.exec(hosts)![1]]);
    // a is on net1 only: z is not a name there; m is (its alias on net1)
    const aHosts = await waitFor("m in a's hosts", async () => {
      const h = (await httpGet(aPort, '/hosts')).body;
      return /\tm$/m.test(h) ? h : undefined;
    }, 15_000, 200);
    expect(aHosts).not.toMatch(/\tz$/m);
    expect(aHosts).not.toContain('z.net2');
  });

  it("b's node is killed: b moves and the name follows", async () => {
    const old = (await servingTask('n3', 'b'))!;
    await c.kill(bNode);
    const other = ['n1', 'n2'].find((n) => n !== bNode)!;
    const moved = await waitFor('b replaced on the other node', async () => {
      const t = await servingTask('n3', 'b').catch(() => undefined);
      return t && t.id !== old.id ? t : undefined;
    }, 60_000, 300);
    expect(moved.node).toBe(other);
    const answer = await waitFor('a reaches the new b by name', async () => {
      const r = await httpGet(aPort, '/node').catch(() => undefined);
      return r?.status === 200 && r.body.endsWith(moved.id) ? r.body : undefined;
    }, 15_000, 200);
    expect(answer).toBe(`b says hi from ${moved.id}`);
    // The published port of the surviving nodes routes to the new replica too.
    for (const n of [other, 'n3']) {
      const r = await waitFor(`published port on ${n} after the move`, async () => {
        const x = await httpGet(publishedOn(n)).catch(() => undefined);
        return x?.status === 200 && x.body.endsWith(moved.id) ? x : undefined;
      }, 15_000, 200);
      expect(r.body).toBe(`b says hi from ${moved.id}`);
    }
  });
});
