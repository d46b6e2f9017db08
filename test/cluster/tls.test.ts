// The API over TLS on a real 3-node cluster (--tls forced: tests only use 127.0.0.1, which
// otherwise stays plain HTTP): the omni CLI verifies the nodes against the cluster CA that
// omnid init saved, refuses them without it or with another CA, plain HTTP gets nothing,
// and logs of a task on another node travel over libp2p (/omni/logs/1.0.0), never through
// that node's API, for cluster members only.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { request } from 'node:http';
import { writeFile, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import type { LocalCluster } from '../../node/local-cluster.js';
import { createHost, type OmniHost } from '../../node/p2p/host.js';
import { networkKeyFromJoinToken } from '../../node/api/tokens.js';
import { createCa, caCertPath } from '../../node/api/cluster-ca.js';
import { TaskLogService } from '../../node/apps/task-logs.js';
import { silentLogger } from '../../node/logger.js';
import type { OmniError } from '../../node/errors.js';
import { formCluster, waitFor } from './helpers.js';

const run = promisify(execFile);
const TALKER = `console.log('hello from ' + process.env.OMNI_TASK_ID); setInterval(() => console.log('tick ' + Date.now()), 200);`;

interface Tasks {
  tasks: { id: string; node: string; state: string; desired: string }[];
}

describe('TLS API and logs over libp2p (--tls on 127.0.0.1)', () => {
  let c: LocalCluster;
  let attacker: OmniHost | undefined;
  const url = (n: string) => c.nodes.get(n)!.apiUrl;
  const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OMNI_')));
  const omni = (env: Record<string, string>, ...args: string[]) =>
    run('bin/omni', args, { env: { ...baseEnv, ...env }, timeout: 60_000 }).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
    );
  const tlsConnections = (n: string) => c.nodes.get(n)!.lines.filter((l) => l.includes('api: TLS connection from')).length;

  beforeAll(async () => {
    c = await formCluster(['t1', 't2', 't3'], { flags: ['--tls', '--log-level', 'debug'] });
  });
  afterAll(async () => {
    await attacker?.stop();
    await c?.destroy();
  });

  it('every node serves https; the omni CLI verifies it with the CA from the config omnid init wrote, or OMNI_CA / --ca', async () => {
    for (const n of ['t1', 't2', 't3']) expect(url(n)).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const cfg = JSON.parse(await readFile(join(c.rootDir, 'omni-cli.json'), 'utf8')) as { addr: string; token: string; ca: string };
    expect(cfg.addr).toBe(url('t1'));
    expect(cfg.ca).toMatch(/^-----BEGIN CERTIFICATE-----/);
    expect(cfg.ca).toBe(await readFile(caCertPath(c.dataDir('t1')), 'utf8'));
    // A joined node got the same CA and signs its own certificate with it.
    expect(await readFile(caCertPath(c.dataDir('t3')), 'utf8')).toBe(cfg.ca);
    const viaConfig = await omni({ OMNI_CONFIG: join(c.rootDir, 'omni-cli.json') }, 'status', '--json', '--addr', url('t2'));
    expect(viaConfig.stderr).toBe('');
    expect(JSON.parse(viaConfig.stdout).voters).toEqual(['t1', 't2', 't3']);
    const viaEnv = await omni({ OMNI_CONFIG: '/nonexistent/omni.json', OMNI_ADDR: url('t3'), OMNI_TOKEN: c.adminToken, OMNI_CA: caCertPath(c.dataDir('t2')) }, 'kv', 'put', 'tls/key', 'v');
    expect(viaEnv.code).toBe(0);
    const viaFlag = await omni({ OMNI_CONFIG: '/nonexistent/omni.json' }, 'kv', 'get', 'tls/key', '--addr', url('t1'), '--token', c.adminToken, '--ca', caCertPath(c.dataDir('t1')));
    expect(viaFlag.stdout).toBe('v\n');
  });

  it('without the CA, or with another cluster\'s CA, the CLI fails with one clear line', async () => {
    const noCa = join(c.rootDir, 'no-ca.json');
    await writeFile(noCa, JSON.stringify({ addr: url('t2'), token: c.adminToken }));
    const r1 = await omni({ OMNI_CONFIG: noCa }, 'status');
    expect(r1.code).toBe(1);
    expect(r1.stderr).toMatch(/^error: the TLS certificate of https:\/\/127\.0\.0\.1:\d+ does not verify against the system CAs .*OMNI_CA.* \(TLS_VERIFY_FAILED\)\n$/);
    const other = join(c.rootDir, 'other-ca.crt');
    await writeFile(other, (await createCa('another cluster')).certPem);
    const r2 = await omni({ OMNI_CONFIG: join(c.rootDir, 'omni-cli.json'), OMNI_CA: other }, 'status');
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(/^error: .*does not verify against the cluster CA from .*other-ca\.crt.* \(TLS_VERIFY_FAILED\)\n$/);
    expect(r2.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('plain http to the TLS port gets no API answer', async () => {
    const port = Number(new URL(url('t1')).port);
    const res = await new Promise<string>((resolve) => {
      const req = request({ host: '127.0.0.1', port, path: '/healthz', timeout: 5000 }, (r) => resolve(`HTTP ${r.statusCode}`));
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (err) => resolve(`error: ${err.message}`));
      req.end();
    });
    expect(res).toMatch(/^error: /);
    const r = await omni({ OMNI_CONFIG: join(c.rootDir, 'omni-cli.json') }, 'status', '--addr', `http://127.0.0.1:${port}`);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/use https:\/\/.*\(UNAVAILABLE\)\n$/);
  });

  it('reads the logs of a task on another node over libp2p, without touching that node\'s API', async () => {
    const client = c.client('t1');
    try {
      const spec = { name: 'talker', command: [process.execPath, '-e', TALKER], replicas: 3, antiAffinity: true, resources: { cpu: 0.1, memoryMB: 32 } };
      expect((await client.raw('POST', '/v1/apps', spec)).status).toBe(201);
      const tasks = await waitFor('3 running tasks', async () => {
        const a = await client.get<Tasks>('/v1/apps/talker');
        const live = a.tasks.filter((t) => t.desired === 'run' && t.state === 'running');
        return live.length === 3 ? live : undefined;
      }, 30_000, 200);
      const remote = tasks.find((t) => t.node === 't2')!;
      const t1Id = (await client.get<{ nodeId: string }>('/v1/status')).nodeId;
      const before = tlsConnections('t2');
      let text = '';
      await waitFor('the remote task has printed', async () => {
        text = '';
        await client.stream(`/v1/apps/talker/logs?task=${remote.id}&tail=20`, (chunk) => (text += chunk));
        return text.includes(`hello from ${remote.id}`);
      }, 20_000, 300);
      expect(text).not.toMatch(/logs unavailable/);
      // t2 served it over /omni/logs/1.0.0 to t1, and nothing connected to t2's API meanwhile.
      await waitFor('t2 logged the libp2p stream', () => c.nodes.get('t2')!.lines.some((l) => l.includes(`logs: streaming task ${remote.id} to ${t1Id}`)));
      expect(tlsConnections('t2')).toBe(before);
      expect(tlsConnections('t1')).toBeGreaterThan(0); // the count does see API connections

      // Follow mode streams new lines, and the stream on t2 ends when the HTTP client goes away.
      const abort = new AbortController();
      let followed = '';
      const following = client.stream(`/v1/apps/talker/logs?task=${remote.id}&tail=0&follow=true`, (chunk) => {
        followed += chunk;
        if ((followed.match(/tick \d+/g) ?? []).length >= 3) abort.abort();
      }, abort.signal).catch((err: Error) => err);
      await following;
      expect((followed.match(/tick \d+/g) ?? []).length).toBeGreaterThanOrEqual(3);
      await waitFor('t2 ended the follow stream', () => c.nodes.get('t2')!.lines.some((l) => l.includes(`logs: stream of task ${remote.id} to ${t1Id} ended (reader went away)`)), 15_000);
      expect(tlsConnections('t2')).toBe(before);
      await client.delete('/v1/apps/talker');
    } finally {
      client.close();
    }
  });

  it('a member that lost its CA serves a provisional certificate, gets the CA back from the cluster and signs its own', async () => {
    await c.kill('t3', 'SIGTERM');
    await rm(join(c.dataDir('t3'), 'tls'), { recursive: true });
    await c.restart('t3');
    expect(c.nodes.get('t3')!.lines.some((l) => l.includes('serving a provisional certificate'))).toBe(true);
    await waitFor('t3 serves a certificate from the cluster CA', async () => {
      const client = c.client('t3');
      try {
        return await client.get('/healthz');
      } finally {
        client.close();
      }
    }, 30_000, 300);
    expect(c.nodes.get('t3')!.lines.some((l) => l.includes('api: received the cluster CA'))).toBe(true);
    expect(await readFile(caCertPath(c.dataDir('t3')), 'utf8')).toBe(c.ca);
  });

  it('only cluster members may open /omni/logs/1.0.0', async () => {
    attacker = await createHost({ privateKey: await generateKeyPair('Ed25519'), networkKey: networkKeyFromJoinToken(c.joinToken), listen: ['/ip4/127.0.0.1/tcp/0'] });
    const client = c.client('t1');
    const { nodes } = await client.get<{ nodes: { name: string; id: string; addrs: string[] }[] }>('/v1/nodes');
    client.close();
    const t2 = nodes.find((n) => n.name === 't2')!;
    await attacker.peerStore.merge(peerIdFromString(t2.id), { multiaddrs: t2.addrs.map((a) => multiaddr(a)) });
    const reader = new TaskLogService(attacker, { authorize: () => undefined, localLogs: () => undefined, log: silentLogger });
    const err = await (async () => {
      for await (const _ of reader.read(t2.id, { taskId: 'anything', follow: false }, AbortSignal.timeout(15_000))) {
        // nothing may arrive
      }
    })().then(() => undefined, (e: OmniError) => e);
    expect(err?.code).toBe('FORBIDDEN');
    await waitFor('t2 logged the refusal', () => c.nodes.get('t2')!.lines.some((l) => l.includes(`logs: refused a stream from ${attacker!.peerId.toString()}`)));
  });
});
