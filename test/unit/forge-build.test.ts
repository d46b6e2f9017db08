// Forge builds into a real registry (node/registry, in process, its /v2/ over loopback): the
// same source gives one digest on two registries ("nodes") with separate work directories; a
// source-only change reuses the dependency layer (the install step is not run again); a lockfile
// change rebuilds it; layers are reproducible tars (sorted, fixed mtime, uid/gid 0, under app/,
// without ignored files); a failing step is named with its last log lines; an unknown tree is
// refused. Steps run on this host (HostRunner) with its npm.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { list } from 'tar';
import { ClusterState, encodeCommand, type Command } from '../../protocol/cluster/state.js';
import { Registry } from '../../node/registry/registry.js';
import { ApiTls } from '../../node/api/tls.js';
import { silentLogger } from '../../node/logger.js';
import { OmniError } from '../../node/errors.js';
import { sha256Hex } from '../../node/api/tokens.js';
import { RegistryClient } from '../../cli/omni/registry-client.js';
import { Forge } from '../../node/forge/builder.js';
import { HostRunner, StepFailed, type StepRequest, type StepRunner } from '../../node/forge/runner.js';
import { importRootfs } from '../../node/forge/rootfs.js';
import { FIXED_MTIME } from '../../node/forge/layer.js';
import { forgeFixture } from '../support/forge-fixtures.js';

const ADMIN = 'OMNIA1.forge-test-admin';
const fixture = forgeFixture;

function harness() {
  const state = new ClusterState();
  const apply = (cmd: Command) => {
    const r = state.apply(state.appliedIndex + 1, encodeCommand(cmd));
    if (!r.ok) throw new OmniError(r.error.code, r.error.message);
    return r.value;
  };
  apply({ type: 'token.add', token: { id: 'a1', hash: sha256Hex(ADMIN), role: 'admin', name: 'admin' } });
  return { raft: { state, raft: undefined as never, isLeader: true }, readBarrier: async () => undefined, proposeOk: async (cmd: Command) => apply(cmd) };
}

/** Counts the steps it runs, by name. */
class CountingRunner implements StepRunner {
  readonly kind = 'counting';
  readonly ran: string[] = [];
  private readonly host = new HostRunner();
  run(req: StepRequest, onLine: (l: string) => void) {
    this.ran.push(req.step);
    return this.host.run(req, onLine);
  }
}

interface TestNode {
  dir: string;
  registry: Registry;
  client: RegistryClient;
}

let root: string;
const nodes: TestNode[] = [];

async function startNode(name: string): Promise<TestNode> {
  const dir = join(root, name);
  await mkdir(dir);
  const registry = await Registry.open({ cluster: harness(), log: silentLogger, dataDir: dir, store: { pieceSizeBytes: 64 * 1024, minFreeBytes: 0 } });
  registry.setFetcher(async (rec) => {
    throw new OmniError('UNAVAILABLE', `no peer holds ${rec.digest}`);
  });
  await registry.listen('127.0.0.1:0', await ApiTls.prepare({ dataDir: dir, apiHost: '127.0.0.1', addrs: () => [], nodeName: name, flags: {}, log: silentLogger }));
  const client = new RegistryClient(registry.server!.url, ADMIN);
  return { dir, registry, client };
}

/** A tiny root filesystem standing in for a runtime base (steps run on the host here). */
async function baseRootfs(): Promise<string> {
  const d = join(root, 'rootfs');
  await mkdir(join(d, 'etc'), { recursive: true });
  await mkdir(join(d, 'usr/bin'), { recursive: true });
  await writeFile(join(d, 'etc/os-release'), 'ID=omni-test\n');
  await writeFile(join(d, 'usr/bin/tool'), '#!/bin/sh\necho tool\n', { mode: 0o755 });
  return d;
}

async function copyFixture(name: string): Promise<string> {
  const d = await mkdtemp(join(root, `src-${name}-`));
  await cp(fixture(name), d, { recursive: true });
  return d;
}

async function layerEntries(client: RegistryClient, repo: string, digest: string): Promise<{ path: string; mode: number; uid: number; gid: number; mtime: number; uname: string }[]> {
  const p = join(root, `layer-${digest.slice(7, 19)}.tgz`);
  await client.downloadBlob(repo, digest, p);
  const out: { path: string; mode: number; uid: number; gid: number; mtime: number; uname: string }[] = [];
  await list({ file: p, onReadEntry: (e) => out.push({ path: e.path, mode: e.mode ?? -1, uid: e.uid ?? -1, gid: e.gid ?? -1, mtime: e.mtime?.getTime() ?? -1, uname: e.uname ?? '' }) });
  return out;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'omni-forge-'));
  const rootfs = await baseRootfs();
  for (const name of ['a', 'b']) {
    const n = await startNode(name);
    nodes.push(n);
    for (const repo of ['omni/node', 'omni/python']) await importRootfs(n.client, rootfs, repo, repo === 'omni/node' ? '24' : '3', { architecture: 'amd64' });
  }
}, 60_000);
afterAll(async () => {
  for (const n of nodes) await n.registry.stop();
  await rm(root, { recursive: true, force: true });
});

describe('import-rootfs', () => {
  it('a directory gives the same base digest on two registries, and importing it again uploads nothing', async () => {
    const a = await nodes[0].client.resolveTag('omni/node', '24');
    const b = await nodes[1].client.resolveTag('omni/node', '24');
    expect(a).toMatch(/^sha256:/);
    expect(a).toBe(b);
    const again = await importRootfs(nodes[0].client, join(root, 'rootfs'), 'omni/node', '24', { architecture: 'amd64' });
    expect(again.digest).toBe(a);
    expect(again.uploaded).toBe(false);
  });
});

describe('forge build', () => {
  it('Node.js: one digest for the same source on two nodes; a source change reuses the dependency layer; a lockfile change rebuilds it', async () => {
    const src = await copyFixture('node-api');
    await writeFile(join(src, 'npm-debug.log'), 'ignored by .gitignore\n');
    const runA = new CountingRunner();
    const runB = new CountingRunner();
    const forgeA = new Forge(nodes[0].client, runA, join(nodes[0].dir, 'forge'));
    const forgeB = new Forge(nodes[1].client, runB, join(nodes[1].dir, 'forge'));

    const stages: string[] = [];
    const first = await forgeA.build({ dir: src, repo: 'team/api', tags: ['v1'] }, { stage: (s) => stages.push(s) });
    expect(stages).toEqual(['source', 'detect', 'base', 'deps', 'app', 'push']);
    expect(first.type).toBe('node');
    expect(first.depsReused).toBe(false);
    expect(first.reused).toBe(false);
    expect(runA.ran).toEqual(['dependencies']);
    expect(first.tags).toEqual([`sha-${first.sourceDigest.slice(7)}`, 'v1']);
    expect(await nodes[0].client.resolveTag('team/api', first.tags[0])).toBe(first.digest);
    expect(await nodes[0].client.resolveTag('team/api', 'v1')).toBe(first.digest);

    const onB = await forgeB.build({ dir: src, repo: 'team/api' });
    expect(runB.ran).toEqual(['dependencies']); // B ran its own install: its own bytes, the same digest
    expect(onB.digest).toBe(first.digest);
    expect(onB.sourceDigest).toBe(first.sourceDigest);

    // The same source again: its image is reused, nothing is built.
    const again = await forgeA.build({ dir: src, repo: 'team/api', tags: ['v2'] });
    expect(again).toMatchObject({ digest: first.digest, reused: true, sourceUploaded: false });
    expect(await nodes[0].client.resolveTag('team/api', 'v2')).toBe(first.digest);
    // --rebuild: built again, the dependency layer taken from the registry's cache, the same digest.
    const rebuilt = await forgeA.build({ dir: src, repo: 'team/api', rebuild: true });
    expect(rebuilt).toMatchObject({ digest: first.digest, reused: false, depsReused: true });
    expect(runA.ran).toEqual(['dependencies']);

    // The app layer: sorted, fixed mtime, root-owned, under app/, no ignored file, no node_modules.
    const app = await layerEntries(nodes[0].client, 'team/api', first.layers.at(-1)!.digest);
    const paths = app.map((e) => e.path);
    expect(paths).toEqual(['app/', 'app/.gitignore', 'app/package-lock.json', 'app/package.json', 'app/server.js']);
    expect(new Set(app.map((e) => e.mtime))).toEqual(new Set([FIXED_MTIME.getTime()]));
    expect(app.every((e) => e.uid === 0 && e.gid === 0 && e.uname === '')).toBe(true);
    expect(app.find((e) => e.path === 'app/server.js')!.mode).toBe(0o644);
    const deps = await layerEntries(nodes[0].client, 'team/api', first.layers[0].digest);
    expect(deps.every((e) => e.path.startsWith('app/'))).toBe(true);
    expect(deps.map((e) => e.path)).toContain('app/node_modules/');

    // Image config: the start command, workdir, env with PATH, the port, the source label.
    const m = JSON.parse((await nodes[0].client.manifest('team/api', first.digest)).bytes.toString()) as { config: { digest: string }; layers: { digest: string }[] };
    expect(m.layers).toHaveLength(3); // base, dependencies, app
    const cfgPath = join(root, 'cfg.json');
    await nodes[0].client.downloadBlob('team/api', m.config.digest, cfgPath);
    const cfg = JSON.parse(await readFile(cfgPath, 'utf8')) as { created: string; config: { Cmd: string[]; WorkingDir: string; Env: string[]; ExposedPorts: Record<string, unknown>; Labels: Record<string, string> } };
    expect(cfg.created).toBe('2000-01-01T00:00:00Z');
    expect(cfg.config.Cmd).toEqual(['/bin/sh', '-c', 'node server.js']);
    expect(cfg.config.WorkingDir).toBe('/app');
    expect(cfg.config.Env).toContain('PORT=8080');
    expect(cfg.config.Env.find((e) => e.startsWith('PATH='))).toMatch(/^PATH=\/app\/node_modules\/\.bin:/);
    expect(Object.keys(cfg.config.ExposedPorts)).toEqual(['8080/tcp']);
    expect(cfg.config.Labels['dev.omni.forge.source']).toBe(first.sourceDigest);

    // A source-only change: new source digest and image, the same dependency layer, install not run.
    await writeFile(join(src, 'server.js'), (await readFile(join(src, 'server.js'), 'utf8')) + '// changed\n');
    const changed = await forgeA.build({ dir: src, repo: 'team/api' });
    expect(changed.sourceDigest).not.toBe(first.sourceDigest);
    expect(changed.digest).not.toBe(first.digest);
    expect(changed.depsReused).toBe(true);
    expect(changed.layers[0].digest).toBe(first.layers[0].digest);
    expect(runA.ran).toEqual(['dependencies']);

    // A lockfile change: the dependency step runs again.
    const lock = JSON.parse(await readFile(join(src, 'package-lock.json'), 'utf8')) as { version: string };
    lock.version = '1.0.1';
    await writeFile(join(src, 'package-lock.json'), JSON.stringify(lock, null, 2));
    const relocked = await forgeA.build({ dir: src, repo: 'team/api' });
    expect(relocked.depsReused).toBe(false);
    expect(relocked.depsKey).not.toBe(first.depsKey);
    expect(runA.ran).toEqual(['dependencies', 'dependencies']);
  }, 120_000);

  it('build steps run in a workspace (a parallel group too); the build output is in the app layer, dev install and caches are not', async () => {
    const src = await copyFixture('node-build');
    const run = new CountingRunner();
    const r = await new Forge(nodes[0].client, run, join(nodes[0].dir, 'forge')).build({ dir: src, repo: 'team/built' });
    expect(run.ran.slice(0, 3)).toEqual(['dependencies', 'install', 'build']);
    expect(run.ran.slice(3).sort()).toEqual(['check-a', 'check-b']);
    const app = (await layerEntries(nodes[0].client, 'team/built', r.layers.at(-1)!.digest)).map((e) => e.path);
    expect(app).toContain('app/dist/server.js');
    expect(app.some((p) => p.startsWith('app/node_modules') || p.startsWith('app/.omni'))).toBe(false);
    expect(app).toEqual([...app].sort());
  }, 120_000);

  it('Python: requirements.txt + main.py build on the python base', async () => {
    const src = await copyFixture('python-api');
    const r = await new Forge(nodes[0].client, new HostRunner(), join(nodes[0].dir, 'forge')).build({ dir: src, repo: 'team/py' });
    expect(r.type).toBe('python');
    expect(r.runtime).toBe('omni/python:3');
    expect(r.layers.map((l) => l.createdBy)).toEqual([expect.stringMatching(/^dependencies: python3 -m pip install/), 'app']);
  }, 120_000);

  it('a failing step is named, with the last lines of its log', async () => {
    const src = await copyFixture('static-site');
    await mkdir(join(src, '.omni'));
    await writeFile(join(src, '.omni/build.yaml'), 'runtime: omni/node:24\nsteps:\n  - name: compile\n    run: "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25; do echo line $i; done; echo boom >&2; exit 3"\n');
    const err = await new Forge(nodes[0].client, new HostRunner(), join(nodes[0].dir, 'forge')).build({ dir: src, repo: 'team/fail' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StepFailed);
    const f = err as StepFailed;
    expect(f.step).toBe('compile');
    expect(f.exit).toBe('exit status 3');
    expect(f.tail).toHaveLength(20);
    expect(f.tail.at(-1)).toBe('boom');
    expect(f.message).toMatch(/^step 'compile' failed \(exit status 3\); its last 20 log lines:\n {2}\| line 7\n/);
  }, 60_000);

  it('an unknown tree, a missing base and a source over the limit are refused with clear errors', async () => {
    const forge = new Forge(nodes[0].client, new HostRunner(), join(nodes[0].dir, 'forge'));
    await expect(forge.build({ dir: fixture('unknown-py'), repo: 'team/x' })).rejects.toThrow(/add requirements\.txt/);
    const src = await copyFixture('static-site');
    await expect(forge.build({ dir: src, repo: 'team/x' })).rejects.toThrow(/no runtime base image omni\/static:1 .*scripts\/forge-base\.sh/);
    await writeFile(join(src, 'big.bin'), Buffer.alloc(4096));
    await expect(forge.build({ dir: src, repo: 'team/x', maxSourceBytes: 1024 })).rejects.toThrow(/more than 1024 bytes.*\.dockerignore/);
  }, 60_000);
});

describe('source digest', () => {
  it('does not depend on file mtimes or the directory it is in', async () => {
    const a = await copyFixture('node-api');
    const b = await copyFixture('node-api');
    const { utimes } = await import('node:fs/promises');
    await utimes(join(b, 'server.js'), new Date(2010, 1, 1), new Date(2010, 1, 1));
    const forge = new Forge(nodes[0].client, new HostRunner(), join(nodes[0].dir, 'forge'));
    const ra = await forge.build({ dir: a, repo: 'team/same' });
    const rb = await forge.build({ dir: b, repo: 'team/same' });
    expect(rb.sourceDigest).toBe(ra.sourceDigest);
    expect(rb.digest).toBe(ra.digest);
    expect(createHash('sha256').update(a).digest('hex')).not.toBe(createHash('sha256').update(b).digest('hex'));
  }, 60_000);
});
