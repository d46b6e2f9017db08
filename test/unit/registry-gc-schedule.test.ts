// Garbage collection's saved policy, its schedule and the catch-up of a node that missed a run, in
// process: two registries (two blob stores) over one real cluster state machine. Node A runs GC
// without reaching B (as when B is down); B, when it looks, sees the recorded run it missed and
// deletes its own unreferenced copy — never a live one — and remembers it across a restart. The
// policy saved with a run is what later runs (and the schedule) use. Per-repository replica
// targets: stored, and used by the re-replication plan.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from '../../node/registry/registry.js';
import { RegistryGc, effectiveGcOptions, readGcRequest } from '../../node/registry/gc.js';
import { GcSchedule } from '../../node/registry/gc-schedule.js';
import { ApiTls } from '../../node/api/tls.js';
import { silentLogger } from '../../node/logger.js';
import { LEADER_DUTY, SELF } from '../../node/cluster/caller.js';
import { gcDue } from '../../protocol/registry/gc.js';
import { planRereplication } from '../../protocol/registry/rereplication.js';
import { blobReplicaTargets } from '../../protocol/registry/durability.js';
import { DOCKER_MANIFEST } from '../../protocol/registry/media-types.js';
import { openTestRegistry, registryCluster, type RegistryCluster } from '../support/registry-harness.js';

const ADMIN = 'OMNIA1.test-admin-token';
const sha = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');
const HOUR = 3_600_000;

let dir: string;
let a: Registry;
let b: Registry;
let cluster: RegistryCluster;

async function v2(method: string, path: string, body?: Uint8Array | string, headers: Record<string, string> = {}) {
  const res = await fetch(`${a.server!.url}/v2/${path}`, { method, body, headers: { authorization: `Bearer ${ADMIN}`, ...headers } });
  return { status: res.status, text: await res.text() };
}

async function pushBlob(repo: string, bytes: Buffer): Promise<string> {
  const d = sha(bytes);
  const r = await v2('POST', `${repo}/blobs/uploads/?digest=${d}`, bytes);
  expect(r.status, r.text).toBe(201);
  return d;
}

async function pushImage(repo: string, tag: string): Promise<{ manifest: string; blobs: string[] }> {
  const config = Buffer.from(JSON.stringify({ os: 'linux', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: [] }, n: randomBytes(6).toString('hex') }));
  const layer = randomBytes(3000);
  const [c, l] = [await pushBlob(repo, config), await pushBlob(repo, layer)];
  const m = JSON.stringify({ schemaVersion: 2, mediaType: DOCKER_MANIFEST, config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: c, size: config.length }, layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: l, size: layer.length }] });
  const r = await v2('PUT', `${repo}/manifests/${tag}`, m, { 'content-type': DOCKER_MANIFEST });
  expect(r.status, r.text).toBe(201);
  return { manifest: sha(Buffer.from(m)), blobs: [c, l] };
}

/** Puts a copy of a blob into a node's store (as a fetch from a peer would). */
async function hold(reg: Registry, bytes: Buffer): Promise<void> {
  const tmp = reg.store.tempPath();
  await writeFile(tmp, bytes);
  await reg.store.commit(tmp, sha(bytes));
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'omni-gc-schedule-'));
  cluster = registryCluster([{ id: 'a1', secret: ADMIN, role: 'admin' }]);
  const open = (name: string) => openTestRegistry({ cluster, dataDir: join(dir, name) });
  a = await open('a');
  b = await open('b');
  await a.listen('127.0.0.1:0', await ApiTls.prepare({ dataDir: join(dir, 'a'), apiHost: '127.0.0.1', addrs: () => [], nodeName: 'a', flags: {}, log: silentLogger }));
});
afterAll(async () => {
  await a?.stop();
  await b?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('a node that missed a run', () => {
  it('sweeps its own unreferenced copies when it sees the recorded run, keeps live ones, and remembers it across a restart', async () => {
    const img = await pushImage('sched/app', '1');
    const orphanBytes = randomBytes(4000);
    const orphan = await pushBlob('sched/orphan', orphanBytes);
    // B holds a copy of the orphan and of the image's layer (as after fetching them)
    const layerBytes = await readFile(join(dir, 'a', 'registry', 'blobs', 'sha256', img.blobs[1].slice(7)));
    await hold(b, orphanBytes);
    await hold(b, layerBytes);
    expect(await b.gc.catchUp()).toBeUndefined(); // no run recorded yet

    // A runs GC without reaching B (no peers: B is "down"); the policy says no grace period
    const r = await a.gc.request(readGcRequest({ graceMs: 0, save: true }), SELF);
    expect(r.removed.blobs.map((x) => x.digest)).toEqual([orphan]);
    expect(r.nodes.map((n) => n.node)).toEqual(['this node']);
    expect(a.store.has(orphan)).toBe(false);
    expect(b.store.has(orphan)).toBe(true);
    expect(a.gc.lastRun()).toMatchObject({ run: 1, scheduled: false, graceMs: 0, removed: { blobs: 1, manifests: 0 } });
    expect(a.gc.policy()).toMatchObject({ graceMs: 0 });
    // a dry run records nothing
    await a.gc.request(readGcRequest({ dryRun: true, graceMs: 0 }), SELF);
    expect(a.gc.lastRun()?.run).toBe(1);

    // B comes back: it catches up with run 1 — the orphan goes, the live layer stays (and not
    // before the policy allows: with a 1 h grace saved since, the copy, just stored, stays)
    await a.gc.savePolicy({ graceMs: HOUR }, SELF);
    const cautious = new RegistryGc({ cluster, store: b.store, log: silentLogger, nodeName: () => 'b' });
    expect(await cautious.catchUp()).toMatchObject({ deletedCount: 0 });
    expect(b.store.has(orphan)).toBe(true);
    await a.gc.savePolicy({ graceMs: 0 }, SELF);
    const caught = await b.gc.catchUp();
    expect(caught).toMatchObject({ deletedCount: 1, deleted: [{ digest: orphan }] });
    expect(caught!.kept.live).toBe(1);
    expect(b.store.has(orphan)).toBe(false);
    expect(b.store.has(img.blobs[1])).toBe(true);
    expect(await b.gc.catchUp()).toBeUndefined(); // nothing more to do
    expect(JSON.parse(await readFile(join(dir, 'b', 'registry', 'gc-swept.json'), 'utf8'))).toEqual({ run: 1 });
    // restarted, B remembers it swept after run 1
    const again = new RegistryGc({ cluster, store: b.store, log: silentLogger, nodeName: () => 'b', sweptFile: join(dir, 'b', 'registry', 'gc-swept.json') });
    expect(await again.sweptRun()).toBe(1);
    expect(await again.catchUp()).toBeUndefined();
    // a new run: B catches up again (nothing of its own to delete this time)
    await a.gc.request(readGcRequest({ graceMs: 0 }), SELF);
    expect(a.gc.lastRun()?.run).toBe(2);
    expect(await again.catchUp()).toMatchObject({ deletedCount: 0 });
    expect(b.store.has(img.blobs[1])).toBe(true);
  });
});

describe('the saved policy', () => {
  it('fills in what a run does not set; --save stores it; keepLast null overrides it for one run', async () => {
    expect(readGcRequest({})).toEqual({ dryRun: false, save: false });
    expect(readGcRequest({ keepLast: null, save: true, graceMs: 5 })).toEqual({ dryRun: false, graceMs: 5, keepLast: null, save: true });
    expect(() => readGcRequest({ save: 'yes' })).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }));
    expect(() => readGcRequest({ keepLast: -1 })).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }));
    expect(effectiveGcOptions({ dryRun: false }, undefined)).toEqual({ dryRun: false, graceMs: HOUR });
    expect(effectiveGcOptions({ dryRun: false }, { graceMs: 5, keepLast: 2, updatedAtMs: 1 })).toEqual({ dryRun: false, graceMs: 5, keepLast: 2 });
    expect(effectiveGcOptions({ dryRun: true, keepLast: null, graceMs: 0 }, { graceMs: 5, keepLast: 2, updatedAtMs: 1 })).toEqual({ dryRun: true, graceMs: 0 });

    await pushImage('sched/ret', 'v1');
    await pushImage('sched/ret', 'v2');
    const saved = await a.gc.request(readGcRequest({ dryRun: true, keepLast: 1, graceMs: 0, save: true }), SELF);
    expect(saved).toMatchObject({ saved: true, policy: { keepLast: 1, graceMs: 0 }, keepLast: 1 });
    expect(saved.removed.tags.map((t) => `${t.repository}:${t.tag}`)).toContain('sched/ret:v1');
    // later runs use it without being told
    const next = await a.gc.request(readGcRequest({ dryRun: true }), SELF);
    expect(next).toMatchObject({ keepLast: 1, graceMs: 0, saved: false });
    // keepLast null: every tag kept for this run, the policy unchanged
    const all = await a.gc.request(readGcRequest({ dryRun: true, keepLast: null }), SELF);
    expect(all.keepLast).toBeNull();
    expect(all.removed.tags).toEqual([]);
    expect(a.gc.policy()).toMatchObject({ keepLast: 1, graceMs: 0 });
    // saving only keepLast null keeps the saved grace
    await a.gc.savePolicy({ keepLast: null }, SELF);
    expect(a.gc.policy()).toEqual({ graceMs: 0, updatedAtMs: expect.any(Number) });
  });
});

describe('runs at once on one node', () => {
  it('a run asked for while another goes on waits for it; a scheduled one does not start meanwhile', async () => {
    const report = { node: 'slow', deleted: [], deletedCount: 0, deletedBytes: 0, kept: { live: 0, recorded: 0, young: 0 } };
    a.gc.setPeers({ members: () => [{ id: 'slow', name: 'slow' }], sweep: () => new Promise((r) => setTimeout(() => r(report), 300)) });
    try {
      const first = a.gc.run({ dryRun: true, graceMs: HOUR }, SELF, true);
      expect(a.gc.busy).toBe(true);
      await expect(a.gc.run({ dryRun: true, graceMs: HOUR }, LEADER_DUTY, true)).rejects.toThrow(/already running/);
      const second = a.gc.run({ dryRun: true, graceMs: HOUR }, SELF);
      expect((await first).nodes.map((n) => n.node)).toEqual(['slow', 'this node']);
      expect((await second).dryRun).toBe(true);
      expect(a.gc.busy).toBe(false);
    } finally {
      a.gc.setPeers({ members: () => [], sweep: async () => report });
    }
  });
});

describe('the schedule', () => {
  it('is due an interval after the last recorded run (or after leadership began), later after a failure, never when off', () => {
    expect(gcDue({ nowMs: 100, everyMs: 0, leaderSinceMs: 0 })).toEqual({ due: false });
    expect(gcDue({ nowMs: 5_000, everyMs: 10_000, leaderSinceMs: 0 })).toEqual({ due: false, nextAtMs: 10_000 });
    expect(gcDue({ nowMs: 10_000, everyMs: 10_000, leaderSinceMs: 0 })).toEqual({ due: true, nextAtMs: 10_000 });
    expect(gcDue({ nowMs: 10_000, everyMs: 10_000, leaderSinceMs: 0, lastRunAtMs: 4_000 })).toEqual({ due: false, nextAtMs: 14_000 });
    // a failed attempt at 14 s: the next not before a tenth of 6 h later
    expect(gcDue({ nowMs: 6 * HOUR + 60_000, everyMs: 6 * HOUR, leaderSinceMs: 0, lastAttemptMs: 6 * HOUR })).toEqual({ due: false, nextAtMs: 6 * HOUR + 0.6 * HOUR });
  });

  it('the leader runs with the saved policy when due and records a scheduled run; other nodes do not', async () => {
    let leader = false;
    const s = new GcSchedule({ gc: a.gc, isLeader: () => leader, log: silentLogger, everyMs: 10_000 });
    const last = a.gc.lastRun()!;
    expect(await s.check(last.atMs + 20_000)).toBe(false); // not the leader
    expect(s.status()).toBeUndefined();
    leader = true;
    expect(await s.check(last.atMs + 5_000)).toBe(false); // not due
    expect(s.status(last.atMs + 5_000)).toEqual({ everyMs: 10_000, nextAtMs: last.atMs + 10_000 });
    expect(await s.check(last.atMs + 10_000)).toBe(true);
    const rec = a.gc.lastRun()!;
    expect(rec).toMatchObject({ run: last.run + 1, scheduled: true, graceMs: 0 });
    expect(rec.keepLast).toBeUndefined();
    // run with LEADER_DUTY: refused off the leader by the cluster (here the harness applies anything)
    expect(LEADER_DUTY.kind).toBe('leader-duty');
    const off = new GcSchedule({ gc: a.gc, isLeader: () => true, log: silentLogger, everyMs: 0 });
    expect(await off.check(Date.now() + 100 * HOUR)).toBe(false);
    expect(off.status()).toEqual({ everyMs: 0 });
  });
});

describe('per-repository replica targets', () => {
  it('are stored per repository; a blob gets the largest target of the repositories that link it', async () => {
    const shared = await pushImage('rep/one', '1');
    // the same layer in another repository (mounted), plus its own image
    expect((await v2('POST', `rep/two/blobs/uploads/?mount=${shared.blobs[1]}&from=rep/one`)).status).toBe(201);
    const t = a.repoReplicas;
    expect(t.defaultReplicas).toBe(2);
    expect(t.byBlob().size).toBe(0); // nothing set: every blob has the default
    await t.set('rep/one', 3, SELF);
    expect(t.forRepo('rep/one')).toBe(3);
    expect(t.forRepo('rep/two')).toBe(2);
    expect(t.list()).toEqual([{ repository: 'rep/one', replicas: 3, updatedAtMs: expect.any(Number) }]);
    expect(t.byBlob().get(shared.blobs[1])).toBe(3);
    await t.set('rep/one', 1, SELF);
    expect(t.byBlob().get(shared.blobs[0])).toBe(1); // only in rep/one
    expect(t.byBlob().get(shared.blobs[1])).toBe(2); // rep/two has the default (2)
    await t.set('rep/one', null, SELF);
    expect(t.list()).toEqual([]);
    await expect(t.set('Bad Name', 2, SELF)).rejects.toThrow(/not a valid repository/);
    await expect(t.set('rep/one', 10, SELF)).rejects.toThrow(/from 1 to 9/);
    expect([...blobReplicaTargets(new Map([['x', 4]]), [{ repo: 'x', digest: 'd1' }, { repo: 'y', digest: 'd1' }, { repo: 'y', digest: 'd2' }], 2)]).toEqual([['d1', 4], ['d2', 2]]);
  });

  it('the re-replication plan restores each blob to its own target', () => {
    const plan = planRereplication({
      replicas: 2,
      replicasOf: (d) => (d === 'three' ? 3 : d === 'one' ? 1 : undefined),
      blobs: [{ digest: 'three', createdAtMs: 0 }, { digest: 'one', createdAtMs: 0 }, { digest: 'dflt', createdAtMs: 0 }],
      holders: () => ['n1'],
      live: ['n1', 'n2', 'n3', 'n4'],
      targets: ['n1', 'n2', 'n3', 'n4'],
      nowMs: 100_000,
      settleMs: 0,
      inFlight: new Set(),
      maxCopies: 10,
    });
    const copies = (d: string) => plan.copies.filter((c) => c.digest === d).length;
    expect([copies('three'), copies('one'), copies('dflt')]).toEqual([2, 0, 1]);
    expect(plan.under).toBe(2);
  });
});
