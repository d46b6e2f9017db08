// Scheduled garbage collection and per-repository replica targets on a 3-node loopback cluster
// (omnid --registry-gc-every 2s; images pushed with plain /v2/ requests; the app runs on the mock
// driver, whose spec pins its image's digest). The leader collects an unreferenced image on its
// own with the policy saved by `omni images gc --save`, while a node holding a copy is down; that
// node deletes its copy when it comes back; the blobs of a running app stay through every run.
// `omni images replicas REPO N`: a push waits for N copies; raising N has the leader make more.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { LocalCluster } from '../../node/local-cluster.js';
import { formCluster, status, waitFor } from './helpers.js';

const run = promisify(execFile);
const sha = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';

interface RegistryView {
  gc: {
    policy: { graceMs?: number; keepLast?: number } | null;
    lastRun: { run: number; scheduled: boolean; node: string; removed: { manifests: number; blobs: number } } | null;
    schedule: { everyMs: number; nextAtMs?: number } | null;
  };
}

describe('scheduled garbage collection, catch-up after a missed run, per-repository replicas', () => {
  let c: LocalCluster;
  const names = ['s1', 's2', 's3'];
  const reg: Record<string, string> = {};

  const omni = async (node: string, ...args: string[]) => {
    const env = { ...process.env, OMNI_ADDR: c.nodes.get(node)!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' };
    return (await run('bin/omni', args, { env, timeout: 60_000 })).stdout;
  };

  async function v2(node: string, method: string, path: string, body?: Uint8Array | string, headers: Record<string, string> = {}) {
    const res = await fetch(`http://${reg[node]}/v2/${path}`, { method, body, headers: { authorization: `Bearer ${c.adminToken}`, ...headers } });
    return { status: res.status, text: await res.text() };
  }

  async function pushImage(node: string, repo: string, tag: string): Promise<{ manifest: string; config: string; layer: string }> {
    const push = async (bytes: Buffer) => {
      const d = sha(bytes);
      const r = await v2(node, 'POST', `${repo}/blobs/uploads/?digest=${d}`, bytes, { 'content-type': 'application/octet-stream' });
      expect(r.status, r.text).toBe(201);
      return d;
    };
    const configBytes = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, id: randomBytes(8).toString('hex') }));
    const layerBytes = randomBytes(150 * 1024);
    const config = await push(configBytes);
    const layer = await push(layerBytes);
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: DOCKER_MANIFEST,
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: config, size: configBytes.length },
      layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: layer, size: layerBytes.length }],
    });
    const r = await v2(node, 'PUT', `${repo}/manifests/${tag}`, manifest, { 'content-type': DOCKER_MANIFEST });
    expect(r.status, r.text).toBe(201);
    return { manifest: sha(Buffer.from(manifest)), config, layer };
  }

  function onDisk(digest: string, among = names): string[] {
    return among.filter((n) => existsSync(join(c.dataDir(n), 'registry', 'blobs', 'sha256', digest.slice('sha256:'.length))));
  }

  async function registryView(node: string): Promise<RegistryView> {
    return JSON.parse(await omni(node, 'images', 'registry', '--json')) as RegistryView;
  }

  beforeAll(async () => {
    c = await formCluster(names, { flags: ['--registry-gc-every', '2s'] });
    for (const n of names) {
      const client = c.client(n);
      reg[n] = (await client.get<{ address: string }>('/v1/registry')).address;
      client.close();
    }
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('the leader collects an unreferenced image on schedule with the saved policy; a holder that was down deletes its copy when back; a running app keeps its blobs', async () => {
    const s = await status(c, 's1');
    const leader = s.leader!;
    const live = await pushImage('s2', 'sched/live', '1');
    const dead = await pushImage('s1', 'sched/dead', '1');
    const client = c.client('s3');
    try {
      const r = await client.raw('POST', '/v1/apps', { name: 'schedapp', image: 'sched/live:1', driver: 'mock', replicas: 2, resources: { cpu: 0.1, memory: '16M' } });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      await waitFor('the app runs', async () => (await client.get<{ running: number }>('/v1/apps/schedapp')).running === 2, 60_000, 300);
    } finally {
      client.close();
    }
    // neither image has a tag left: only the app's pinned digest keeps sched/live
    await omni('s1', 'images', 'rm', 'sched/live:1');
    await omni('s1', 'images', 'rm', 'sched/dead:1');
    const liveHolders = new Map([live.config, live.layer].map((d) => [d, onDisk(d)]));
    const holders = onDisk(dead.layer);
    expect(holders).toHaveLength(2);
    // the scheduled runs so far used the default 1 h grace: nothing went
    expect((await registryView(leader)).gc.schedule).toMatchObject({ everyMs: 2000 });
    expect(onDisk(dead.layer)).toEqual(holders);

    // a holder of the dead image goes down (not the leader, which runs the schedule)
    const victim = holders.find((n) => n !== leader)!;
    const other = holders.find((n) => n !== victim)!;
    await c.kill(victim, 'SIGKILL');
    // the policy: no grace period (saved with a dry run, which removes nothing itself)
    const bystander = names.find((n) => n !== leader && n !== victim)!;
    const saved = JSON.parse(await omni(bystander, 'images', 'gc', '--grace', '0', '--save', '--dry-run', '--json')) as { saved: boolean; policy: { graceMs: number }; removed: { manifests: string[] } };
    expect(saved).toMatchObject({ saved: true, policy: { graceMs: 0 } });
    expect(saved.removed.manifests).toEqual([dead.manifest]);

    // the next scheduled run removes the dead image from the catalog and from the holder that is up
    await waitFor('a scheduled run removes the dead image', async () => {
      const g = (await registryView(leader)).gc;
      return g.lastRun?.scheduled && onDisk(dead.layer, [other]).length === 0 ? g : undefined;
    }, 60_000, 500);
    expect((await v2(leader, 'GET', `sched/dead/manifests/${dead.manifest}`, undefined, { accept: DOCKER_MANIFEST })).status).toBe(404);
    expect(existsSync(join(c.dataDir(victim), 'registry', 'blobs', 'sha256', dead.layer.slice(7)))).toBe(true); // down: untouched
    const text = await omni(leader, 'images', 'registry');
    expect(text).toMatch(/gc policy: grace 0s, keep every tag \(saved/);
    expect(text).toMatch(/gc last run: #\d+ .*\(scheduled\)/);
    expect(text).toMatch(/gc schedule \(this node leads\): every 2s/);

    // back: the node sees the runs it missed and deletes its copy
    await c.restart(victim);
    const vc = c.client(victim);
    reg[victim] = (await vc.get<{ address: string }>('/v1/registry')).address; // port 0: a new one
    vc.close();
    await waitFor(`${victim} deletes its copy of the dead layer`, async () => onDisk(dead.layer).length === 0, 60_000, 500);
    // through all these runs, the running app's blobs stayed wherever they were
    for (const [d, where] of liveHolders) expect(onDisk(d), d).toEqual(where);
    const view = JSON.parse(await omni('s1', 'images', 'inspect', `sched/live@${live.manifest}`, '--json')) as { digest: string };
    expect(view.digest).toBe(live.manifest);
    // back to a grace period before other pushes (a layer pushed a moment before its manifest must stay)
    await omni(bystander, 'images', 'gc', '--grace', '1h', '--save', '--dry-run');
  });

  it('omni images replicas REPO N: a push waits for N copies; raising N has the leader make the missing ones', async () => {
    await omni('s2', 'images', 'replicas', 'rep/three', '3');
    await omni('s2', 'images', 'replicas', 'rep/one', '1');
    const listed = JSON.parse(await omni('s3', 'images', 'replicas', '--json')) as { default: number; repositories: { repository: string; replicas: number }[] };
    expect(listed.default).toBe(2);
    expect(listed.repositories.map((r) => `${r.repository}=${r.replicas}`).sort()).toEqual(['rep/one=1', 'rep/three=3']);
    const three = await pushImage('s1', 'rep/three', '1');
    expect(onDisk(three.layer)).toEqual(names); // on every node when the push returned
    const one = await pushImage('s1', 'rep/one', '1');
    expect(onDisk(one.layer)).toEqual(['s1']);
    // raised: re-replication (blobs older than 30 s) brings rep/one to 3 copies
    expect(await omni('s1', 'images', 'replicas', 'rep/one', '3')).toContain('rep/one: 3 copies');
    await waitFor('rep/one gets 3 copies', async () => onDisk(one.layer).length === 3, 120_000, 1000);
    expect(await omni('s1', 'images', 'replicas', 'rep/one', 'default')).toContain('back to the node-wide target (2');
    expect(await omni('s1', 'images', 'replicas', 'rep/one')).toContain('the node-wide target (2 copies)');
  });
});
