// A build as a task on a node (issue 15 item 4): the build request's argv and its checks, the
// deterministic build (app) name, the job spec omni build submits and the spec validation of the
// forge driver, the leader's rule that lets a member running a build write registry records, and
// the forge driver itself on an in-process registry (node/registry, as in forge-build.test.ts)
// through NodeBuildRegistry — the source uploaded by "the CLI" (a /v2/ client with the admin
// token), the build run by the driver with no token at all: its image has the same digest as a
// build of the same source through /v2/; a failing step ends the task with exit 1 and the step's
// name and last lines as its log's last line; stop() cancels a build under way.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { ClusterState, encodeCommand, type Command } from '../../protocol/cluster/state.js';
import { Registry } from '../../node/registry/registry.js';
import { ApiTls } from '../../node/api/tls.js';
import { silentLogger } from '../../node/logger.js';
import { OmniError } from '../../node/errors.js';
import { sha256Hex as tokenHash } from '../../node/api/tokens.js';
import { RegistryClient } from '../../cli/omni/registry-client.js';
import { Forge, packSource, putBlob, type BuildResult } from '../../node/forge/builder.js';
import { HostRunner } from '../../node/forge/runner.js';
import { importRootfs } from '../../node/forge/rootfs.js';
import { NodeBuildRegistry } from '../../node/forge/node-registry.js';
import { ForgeDriver } from '../../node/apps/drivers/forge.js';
import type { TaskConfig, TaskStatus } from '../../node/apps/drivers/types.js';
import { SELF } from '../../node/cluster/caller.js';
import {
  BUILD_ERROR_MARKER,
  DEPS_CACHE_REPO_NAME,
  BUILD_RESULT_MARKER,
  buildAppName,
  buildCommand,
  buildIdentity,
  isBuildAppName,
  parseBuildCommand,
  isDockerfileRequest,
  type BuildTaskRequest,
} from '../../protocol/forge/build-request.js';
import { buildAppSpec, sha256Hex } from '../../cli/omni/build-remote.js';
import { validateAppSpec as validateSpec } from '../../protocol/apps/spec.js';
import { authorize, authzView, repoOfKey, workspaceAppOfKey, type AuthzView } from '../../protocol/cluster/authz.js';
import type { TaskRecord } from '../../protocol/apps/model.js';
import { blobKey, repoBlobKey, tagKey, fenceOp } from '../../protocol/registry/records.js';
import { forgeFixture } from '../support/forge-fixtures.js';

const ADMIN = 'OMNIA1.forge-task-test-admin';
const fixture = forgeFixture;
const D1 = 'sha256:' + '1'.repeat(64);
const D2 = 'sha256:' + '2'.repeat(64);

const request = (over: Partial<BuildTaskRequest> = {}): BuildTaskRequest => ({ repo: 'team/api', sourceBlob: D1, sourceDigest: D2, tags: [], rebuild: false, runner: 'host', maxSourceBytes: 256 * 1024 * 1024, ...over });
const nameOf = (r: BuildTaskRequest) => buildAppName(sha256Hex(buildIdentity(r)));

describe('build request', () => {
  it('its argv reads back to the same request; tags are sorted and deduplicated', () => {
    const r = request({ tags: ['v2', 'v1'], rebuild: true, runner: 'docker' });
    const p = parseBuildCommand(buildCommand(r));
    expect(p).toEqual({ ok: true, request: { ...r, tags: ['v1', 'v2'] } });
    const twice = parseBuildCommand([...buildCommand(request()), '--tag', 'v1', '--tag', 'v1']);
    expect(twice.ok && twice.request.tags).toEqual(['v1']);
  });

  it('refuses what is not a build request, naming the flag', () => {
    const base = buildCommand(request());
    const bad: [string[], RegExp][] = [
      [['sh', '-c', 'x'], /must start with forge-build/],
      [[...base, '--evil', 'x'], /unknown flag "--evil"/],
      [['forge-build', '--repo', 'Team/API', '--source', D1, '--source-digest', D2], /--repo "Team\/API" is not a repository name/],
      [['forge-build', '--repo', 'a', '--source', 'sha256:xyz', '--source-digest', D2], /--source must be sha256/],
      [['forge-build', '--repo', 'a', '--source', D1], /--source-digest is required/],
      [['forge-build', '--source', D1, '--source-digest', D2], /--repo is required/],
      [['forge-build', '--repo', 'a', '--repo', 'b', '--source', D1, '--source-digest', D2], /--repo is given twice/],
      [[...base.slice(0, 7), '--runner', 'vm'], /--runner must be host or docker/],
      [[...base.slice(0, 7), '--max-source', '0'], /--max-source must be a number of bytes/],
      [[...base.slice(0, 7), '--max-source', '99999999999'], /--max-source must be a number of bytes/],
      [[...base.slice(0, 7), '--tag', 'bad tag'], /--tag "bad tag" is not a tag/],
      [[...base.slice(0, 7), '--tag'], /--tag needs a value/],
      [[...base.slice(0, 7), ...Array.from({ length: 17 }, (_, i) => ['--tag', `t${i}`]).flat()], /at most 16 --tag/],
    ];
    for (const [argv, re] of bad) {
      const p = parseBuildCommand(argv);
      expect(p.ok, argv.join(' ')).toBe(false);
      if (!p.ok) expect(p.message).toMatch(re);
    }
  });

  it('the build name is deterministic: the same source and options give one name, any difference another', () => {
    const n = nameOf(request({ tags: ['a', 'b'] }));
    expect(n).toMatch(/^build-[a-f0-9]{34}$/);
    expect(n).toHaveLength(40);
    expect(isBuildAppName(n)).toBe(true);
    expect(nameOf(request({ tags: ['b', 'a'] }))).toBe(n);
    const others = [request(), request({ tags: ['a', 'b'], repo: 'team/other' }), request({ tags: ['a', 'b'], sourceDigest: D1 }), request({ tags: ['a', 'b'], rebuild: true }), request({ tags: ['a', 'b'], runner: 'docker' }), request({ tags: ['a', 'b'], maxSourceBytes: 1024 })];
    const names = new Set(others.map(nameOf));
    expect(names.size).toBe(others.length);
    expect(names.has(n)).toBe(false);
    expect(isBuildAppName('build-xyz')).toBe(false);
    expect(isBuildAppName('web')).toBe(false);
  });

  it('the job omni build submits is a valid exclusive job of the forge driver; a forge app that is not a build job is refused', () => {
    const spec = buildAppSpec(request({ tags: ['v1'] }), { cpu: 2, memoryMB: 2048 }, 'amd64');
    const v = validateSpec(spec);
    expect(v.ok).toBe(true);
    if (v.ok) {
      expect(v.spec.driver).toBe('forge');
      expect(v.spec.type).toBe('job');
      expect(v.spec.exclusive).toBe(true);
      expect(v.spec.job?.retries).toBe(0);
      expect(v.spec.resources).toMatchObject({ cpu: 2, memoryMB: 2048 });
      expect(v.spec.constraints).toEqual([{ attribute: 'arch', op: '==', value: 'amd64' }]);
      expect(v.spec.name).toBe(nameOf(request({ tags: ['v1'] })));
    }
    const errs = (s: Record<string, unknown>) => {
      const r = validateSpec(s);
      return r.ok ? [] : r.errors.map((e: { field: string; message: string }) => `${e.field}: ${e.message}`);
    };
    expect(errs({ ...spec, type: undefined, retries: undefined })).toContain('type: a forge build is a job (type: job)');
    expect(errs({ ...spec, command: ['forge-build', '--repo', 'x'] })).toContain('command: forge build: --source is required');
    expect(errs({ ...spec, command: undefined, image: 'x' }).some((e: string) => e.startsWith('driver: the forge driver runs a build'))).toBe(true);
  });

  it('a Docker build carries its Dockerfile, arguments and target, reads back the same, and is another build', () => {
    const r = request({ dockerfile: 'docker/api.Dockerfile', buildArgs: { Z: 'last', A: 'a=b c' }, target: 'final' });
    const argv = buildCommand(r);
    expect(argv).toEqual([...buildCommand(request()), '--dockerfile', 'docker/api.Dockerfile', '--build-arg', 'A=a=b c', '--build-arg', 'Z=last', '--target', 'final']);
    expect(parseBuildCommand(argv)).toEqual({ ok: true, request: r });
    expect(isDockerfileRequest(r)).toBe(true);
    expect(isDockerfileRequest(request())).toBe(false);
    // the order of the arguments does not matter; each option changes the build
    expect(nameOf(request({ dockerfile: 'docker/api.Dockerfile', buildArgs: { A: 'a=b c', Z: 'last' }, target: 'final' }))).toBe(nameOf(r));
    const variants = [request(), request({ dockerfile: 'Dockerfile' }), request({ buildArgs: { A: '1' } }), request({ buildArgs: { A: '2' } }), request({ target: 'final' }), r];
    expect(new Set(variants.map(nameOf)).size).toBe(variants.length);
    // a request without them keeps the identity it had before they existed
    expect(buildIdentity(request())).toBe(['omni-forge-build/1', 'team/api', D2, D1, '', '', 'host', String(256 * 1024 * 1024)].join('\0'));
    const base = buildCommand(request());
    const bad: [string[], RegExp][] = [
      [[...base, '--dockerfile', '../Dockerfile'], /--dockerfile "..\/Dockerfile" must be a relative path inside the source/],
      [[...base, '--dockerfile', '/etc/Dockerfile'], /must be a relative path/],
      [[...base, '--dockerfile', 'a', '--dockerfile', 'b'], /--dockerfile is given twice/],
      [[...base, '--build-arg', 'NOEQUALS'], /--build-arg "NOEQUALS" must be KEY=VALUE/],
      [[...base, '--build-arg', '1X=y'], /must be KEY=VALUE with KEY a variable name/],
      [[...base, '--build-arg', 'A=1', '--build-arg', 'A=2'], /--build-arg A is given twice/],
      [[...base, '--build-arg', `A=${'x'.repeat(5000)}`], /the value is over 4096 characters/],
      [[...base, ...Array.from({ length: 65 }, (_, i) => ['--build-arg', `A${i}=1`]).flat()], /at most 64 --build-arg/],
      [[...base, '--target', 'bad target'], /--target "bad target" is not a stage name/],
    ];
    for (const [argv2, re] of bad) {
      const p = parseBuildCommand(argv2);
      expect(p.ok, argv2.join(' ').slice(0, 200)).toBe(false);
      if (!p.ok) expect(p.message).toMatch(re);
    }
  });

  it('a build that needs an engine (a Dockerfile, or --runner docker) asks for a node whose Docker engine answers', () => {
    const docker = validateSpec(buildAppSpec(request({ dockerfile: 'Dockerfile' }), { cpu: 1, memoryMB: 1024 }, undefined, true));
    expect(docker.ok && docker.spec.constraints).toEqual([{ attribute: 'driver.docker', op: 'exists', value: '' }]);
    const runner = validateSpec(buildAppSpec(request({ runner: 'docker' }), { cpu: 1, memoryMB: 1024 }, 'arm64'));
    expect(runner.ok && runner.spec.constraints).toEqual([{ attribute: 'arch', op: '==', value: 'arm64' }, { attribute: 'driver.docker', op: 'exists', value: '' }]);
    const host = validateSpec(buildAppSpec(request(), { cpu: 1, memoryMB: 1024 }, undefined));
    expect(host.ok && host.spec.constraints).toEqual([]);
  });
});

describe('authz: what a member running a build may write', () => {
  const view = (builds: boolean): AuthzView => ({ taskNodeId: () => undefined, runsBuild: (id) => builds && id === 'n1' });
  const member = { kind: 'member' as const, nodeId: 'n1' };
  const txn = (ops: { op: 'put' | 'delete'; key: string; value?: string }[]): Command => ({ type: 'kv.txn', compares: [], ops: ops.map((o) => (o.op === 'put' ? { op: 'put', key: o.key, value: o.value ?? '' } : { op: 'delete', key: o.key })) }) as Command;
  it('registry records and build records while a build task runs on it; nothing else, and never deletes', () => {
    const ok = txn([{ op: 'put', key: blobKey(D1), value: '{}' }, { op: 'put', key: tagKey('team/api', 'v1'), value: '{}' }, fenceOp()]);
    expect(authorize(member, { kind: 'command', command: ok }, view(true)).ok).toBe(true);
    expect(authorize(member, { kind: 'command', command: { type: 'kv.put', key: 'forge/builds/team/api/sha-1', value: '{}' } }, view(true)).ok).toBe(true);
    const no = authorize(member, { kind: 'command', command: ok }, view(false));
    expect(no.ok).toBe(false);
    if (!no.ok) expect(no.error.message).toMatch(/only while a build task runs on it/);
    expect(authorize({ kind: 'member', nodeId: 'n2' }, { kind: 'command', command: ok }, view(true)).ok).toBe(false);
    expect(authorize(member, { kind: 'command', command: txn([{ op: 'delete', key: blobKey(D1) }]) }, view(true)).ok).toBe(false);
    expect(authorize(member, { kind: 'command', command: { type: 'kv.put', key: 'registry/gc-policy', value: '{}' } }, view(true)).ok).toBe(false);
    expect(authorize(member, { kind: 'command', command: { type: 'kv.put', key: 'apps/web', value: '{}' } }, view(true)).ok).toBe(false);
  });
});

describe('authz: a build writes only its own repository (scoped build credential)', () => {
  const member = { kind: 'member' as const, nodeId: 'n1' };
  const put = (key: string): Command => ({ type: 'kv.put', key, value: '{}' });
  const txn = (keys: string[]): Command => ({ type: 'kv.txn', compares: [], ops: keys.map((key) => ({ op: 'put', key, value: '{}' })) }) as Command;
  const app = buildAppName('a'.repeat(64));
  const spec = { name: app, command: ['forge-build', '--repo', 'team/x', '--source', 'sha256:' + '1'.repeat(64), '--source-digest', 'sha256:' + '2'.repeat(64)] };
  const kv = new Map<string, string>([[`appspecs/${app}/00000001`, JSON.stringify(spec)]]);
  const tasks: TaskRecord[] = [{ id: 't1', app, version: 1, nodeId: 'n1', hostPorts: [], desired: 'run', createdAtMs: 0, stopReason: '' }];
  const view = authzView({ kvGet: (k) => (kv.has(k) ? { value: kv.get(k)! } : undefined), tables: { task: (id) => tasks.find((t) => t.id === id), tasksOnNode: (n) => tasks.filter((t) => t.nodeId === n) } });
  it('the view reads the repository from the build app\'s spec', () => {
    expect(view.buildRepos?.('n1')).toEqual(['team/x']);
    expect(view.buildRepos?.('n2')).toEqual([]);
    expect(repoOfKey(tagKey('team/x', 'v1'))).toBe('team/x');
    expect(repoOfKey(repoBlobKey('team/x', D1))).toBe('team/x');
  });
  it('build X may write repository X, its build record and the deps cache; not repository Y or its build record', () => {
    expect(authorize(member, { kind: 'command', command: txn([blobKey(D1), repoBlobKey('team/x', D1), tagKey('team/x', 'v1')]) }, view).ok).toBe(true);
    expect(authorize(member, { kind: 'command', command: put('forge/builds/team/x/sha-' + '2'.repeat(64)) }, view).ok).toBe(true);
    expect(authorize(member, { kind: 'command', command: txn([tagKey(DEPS_CACHE_REPO_NAME, 'lock-1'), repoBlobKey(DEPS_CACHE_REPO_NAME, D1)]) }, view).ok).toBe(true);
    const y = authorize(member, { kind: 'command', command: txn([tagKey('team/y', 'v1')]) }, view);
    expect(y.ok).toBe(false);
    if (!y.ok) expect(y.error.message).toMatch(/only its own repository \(team\/x\), not team\/y/);
    expect(authorize(member, { kind: 'command', command: txn([repoBlobKey('team/y', D1)]) }, view).ok).toBe(false);
    expect(authorize(member, { kind: 'command', command: txn([tagKey('team/x', 'v1'), tagKey('team/y', 'v1')]) }, view).ok).toBe(false);
    expect(authorize(member, { kind: 'command', command: put('forge/builds/team/y/sha-1') }, view).ok).toBe(false);
    // a prefix of the repository name is not the repository
    expect(authorize(member, { kind: 'command', command: put('forge/builds/team/x2/sha-1') }, view).ok).toBe(false);
    expect(authorize(member, { kind: 'command', command: txn([tagKey('team/x2', 'v1')]) }, view).ok).toBe(false);
    // once the build task is stopped, nothing
    tasks[0]!.desired = 'stop';
    expect(authorize(member, { kind: 'command', command: txn([tagKey('team/x', 'v1')]) }, view).ok).toBe(false);
    tasks[0]!.desired = 'run';
  });
});

describe('authz: what a member holding a task may write of its app\'s synced workspace', () => {
  const view: AuthzView = { taskNodeId: () => undefined, runsBuild: () => false, hostsApp: (id, app) => id === 'n1' && app === 'svc', hostsTasks: (id) => id === 'n1' };
  const member = { kind: 'member' as const, nodeId: 'n1' };
  const put = (key: string): Command => ({ type: 'kv.put', key, value: '{}' });
  const txn = (keys: string[]): Command => ({ type: 'kv.txn', compares: [], ops: keys.map((key) => ({ op: 'put', key, value: '{}' })) }) as Command;
  it('the record and the repository omni-sync/<app> of an app whose task it holds; not another app\'s, not from another node', () => {
    expect(workspaceAppOfKey('sync/svc')).toBe('svc');
    expect(workspaceAppOfKey(tagKey('omni-sync/svc', 'ws-3'))).toBe('svc');
    expect(workspaceAppOfKey(repoBlobKey('omni-sync/svc', D1))).toBe('svc');
    expect(workspaceAppOfKey(tagKey('team/svc', 'v1'))).toBeUndefined();
    expect(authorize(member, { kind: 'command', command: put('sync/svc') }, view).ok).toBe(true);
    expect(authorize(member, { kind: 'command', command: txn([blobKey(D1), repoBlobKey('omni-sync/svc', D1), tagKey('omni-sync/svc', 'ws-2')]) }, view).ok).toBe(true);
    const other = authorize(member, { kind: 'command', command: put('sync/web') }, view);
    expect(other.ok).toBe(false);
    if (!other.ok) expect(other.error.message).toMatch(/workspace of web only while a task of it is placed there/);
    expect(authorize(member, { kind: 'command', command: txn([tagKey('omni-sync/web', 'ws-2')]) }, view).ok).toBe(false);
    expect(authorize(member, { kind: 'command', command: txn([tagKey('team/api', 'v1')]) }, view).ok).toBe(false);
    expect(authorize({ kind: 'member', nodeId: 'n2' }, { kind: 'command', command: put('sync/svc') }, view).ok).toBe(false);
    expect(authorize({ kind: 'member', nodeId: 'n2' }, { kind: 'command', command: txn([blobKey(D1)]) }, view).ok).toBe(false);
  });

  it('deletes: only an old revision tag ws-<n> of a workspace it holds a task of', () => {
    const del = (key: string): Command => ({ type: 'kv.txn', compares: [], ops: [{ op: 'delete', key }] }) as Command;
    expect(authorize(member, { kind: 'command', command: del(tagKey('omni-sync/svc', 'ws-2')) }, view).ok).toBe(true);
    expect(authorize(member, { kind: 'command', command: del(tagKey('omni-sync/web', 'ws-2')) }, view).ok).toBe(false); // no task of web here
    expect(authorize({ kind: 'member', nodeId: 'n2' }, { kind: 'command', command: del(tagKey('omni-sync/svc', 'ws-2')) }, view).ok).toBe(false);
    for (const key of ['sync/svc', tagKey('omni-sync/svc', 'latest'), repoBlobKey('omni-sync/svc', D1), blobKey(D1), tagKey('team/api', 'ws-1'), 'taskstatus/t1']) {
      expect(authorize(member, { kind: 'command', command: del(key) }, view).ok, key).toBe(false);
    }
  });
});

// ---- the driver on an in-process registry ----

function harness() {
  const state = new ClusterState();
  const apply = (cmd: Command) => {
    const r = state.apply(state.appliedIndex + 1, encodeCommand(cmd));
    if (!r.ok) throw new OmniError(r.error.code, r.error.message);
    return r.value;
  };
  apply({ type: 'token.add', token: { id: 'a1', hash: tokenHash(ADMIN), role: 'admin', name: 'admin' } });
  const callers: string[] = [];
  return { callers, cluster: { raft: { state, raft: undefined as never, isLeader: true }, readBarrier: async () => undefined, proposeOk: async (cmd: Command, caller: { kind: string }) => (callers.push(caller.kind), apply(cmd)) } };
}

let root: string;
let registry: Registry;
let client: RegistryClient;
let callers: string[];
let driver: ForgeDriver;
const records: [string, string][] = [];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'omni-forge-task-'));
  const h = harness();
  callers = h.callers;
  registry = await Registry.open({ cluster: h.cluster, log: silentLogger, dataDir: join(root, 'node'), store: { pieceSizeBytes: 64 * 1024, minFreeBytes: 0 } });
  registry.setFetcher(async (rec) => {
    throw new OmniError('UNAVAILABLE', `no peer holds ${rec.digest}`);
  });
  await registry.listen('127.0.0.1:0', await ApiTls.prepare({ dataDir: join(root, 'node'), apiHost: '127.0.0.1', addrs: () => [], nodeName: 'n1', flags: {}, log: silentLogger }));
  client = new RegistryClient(registry.server!.url, ADMIN);
  const rootfs = join(root, 'rootfs');
  await mkdir(join(rootfs, 'etc'), { recursive: true });
  await writeFile(join(rootfs, 'etc/os-release'), 'ID=omni-test\n');
  await importRootfs(client, rootfs, 'omni/node', '24', { architecture: 'amd64' });
  driver = new ForgeDriver({
    dataDir: join(root, 'node'),
    log: silentLogger,
    parts: () => ({
      registry: (signal) => new NodeBuildRegistry({ catalog: registry.catalog, store: registry.store, ensureLocal: (rec, s) => registry.ensureLocal(rec, s), caller: SELF, signal }),
      runner: () => new HostRunner(),
      writeRecord: async (k, v) => void records.push([k, v]),
    }),
  });
}, 60_000);
afterAll(async () => {
  await registry?.stop();
  await rm(root, { recursive: true, force: true });
});

/** What the CLI does before it submits: the source packed and uploaded (with the admin token). */
async function upload(src: string, repo: string, over: Partial<BuildTaskRequest> = {}): Promise<BuildTaskRequest> {
  const tgz = join(root, `src-${Math.random().toString(36).slice(2)}.tar.gz`);
  const blob = await packSource(src, tgz);
  await putBlob(client, repo, blob.digest, tgz);
  return { repo, sourceBlob: blob.digest, sourceDigest: blob.diffId, tags: [], rebuild: false, runner: 'host', maxSourceBytes: 256 * 1024 * 1024, ...over };
}

let seq = 0;
function taskConfig(req: BuildTaskRequest): TaskConfig {
  return { taskId: `t-${++seq}`, app: nameOf(req), version: 1, command: buildCommand(req), env: {}, ports: [], volumes: [], cpu: 1, memoryBytes: 1 << 30, labels: {} };
}

async function exited(taskId: string): Promise<TaskStatus> {
  for (let i = 0; i < 1200; i++) {
    const st = await driver.inspect(taskId);
    if (st?.state === 'exited') return st;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`task ${taskId} did not exit`);
}

async function logLines(taskId: string): Promise<string[]> {
  const out: string[] = [];
  for await (const l of driver.logs(taskId, { follow: false })) out.push(l);
  return out;
}

async function copyFixture(name: string): Promise<string> {
  const d = await mkdtemp(join(root, `src-${name}-`));
  await cp(fixture(name), d, { recursive: true });
  return d;
}

describe('resumable upload of a build\'s source (the CLI\'s registry client)', () => {
  it('an upload interrupted after some chunks sends only the rest when run again; a session the registry lost starts over', async () => {
    const file = join(root, 'big-source.bin');
    const bytes = randomBytes(1024 * 1024 + 123);
    await writeFile(file, bytes);
    const digest = 'sha256:' + createHash('sha256').update(bytes).digest('hex');
    const stateFile = join(root, 'uploads', 'state.json');
    let sent = 0;
    const interrupted = client.uploadBlobResumable('team/src', digest, file, {
      stateFile,
      chunkBytes: 64 * 1024,
      onBytes: (n) => {
        sent += n;
        if (sent >= 5 * 64 * 1024) throw new Error('interrupted');
      },
    });
    await expect(interrupted).rejects.toThrow('interrupted');
    expect(await client.hasBlob('team/src', digest)).toBe(false);
    const saved = JSON.parse(await readFile(stateFile, 'utf8')) as { location: string };
    expect(saved.location).toMatch(/^\/v2\/team\/src\/blobs\/uploads\//);
    let resent = 0;
    const r = await client.uploadBlobResumable('team/src', digest, file, { stateFile, chunkBytes: 64 * 1024, onBytes: (n) => (resent += n) });
    expect(r.resumedAtBytes).toBe(5 * 64 * 1024); // the fifth chunk had reached the registry before the interruption
    expect(resent).toBe(bytes.length); // the resumed offset is reported first, then only the rest is read and sent
    expect(await client.hasBlob('team/src', digest)).toBe(true);
    await expect(stat(stateFile)).rejects.toThrow(); // removed once the blob is in
    const back = join(root, 'big-source.back');
    await client.downloadBlob('team/src', digest, back);
    expect((await readFile(back)).equals(bytes)).toBe(true);
    // a state naming a session the registry does not have: a new session from the first byte
    const other = join(root, 'other-source.bin');
    const otherBytes = randomBytes(200 * 1024);
    await writeFile(other, otherBytes);
    const otherDigest = 'sha256:' + createHash('sha256').update(otherBytes).digest('hex');
    await writeFile(stateFile, JSON.stringify({ registry: registry.server!.url, repo: 'team/src', digest: otherDigest, size: otherBytes.length, location: '/v2/team/src/blobs/uploads/no-such-session' }));
    const fresh = await client.uploadBlobResumable('team/src', otherDigest, other, { stateFile, chunkBytes: 64 * 1024 });
    expect(fresh.resumedAtBytes).toBe(0);
    expect(await client.hasBlob('team/src', otherDigest)).toBe(true);
  });

  it('two uploads of the same blob at once (two builds of one source) both land: the second goes without the state file; a lock left by a dead process is taken over', async () => {
    const file = join(root, 'twice-source.bin');
    const bytes = randomBytes(600 * 1024);
    await writeFile(file, bytes);
    const digest = 'sha256:' + createHash('sha256').update(bytes).digest('hex');
    const stateFile = join(root, 'uploads', 'twice.json');
    const both = await Promise.all([0, 1].map(() => client.uploadBlobResumable('team/twice', digest, file, { stateFile, chunkBytes: 64 * 1024 })));
    expect(both.map((r) => r.resumedAtBytes)).toEqual([0, 0]);
    expect(await client.hasBlob('team/twice', digest)).toBe(true);
    await expect(stat(`${stateFile}.lock`)).rejects.toThrow(); // released
    // a process killed mid-upload leaves its lock: a pid that is no longer running
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    await writeFile(`${stateFile}.lock`, dead.stdout);
    const other = join(root, 'after-dead.bin');
    const otherBytes = randomBytes(100 * 1024);
    await writeFile(other, otherBytes);
    const otherDigest = 'sha256:' + createHash('sha256').update(otherBytes).digest('hex');
    await client.uploadBlobResumable('team/twice', otherDigest, other, { stateFile, chunkBytes: 64 * 1024 });
    expect(await client.hasBlob('team/twice', otherDigest)).toBe(true);
    await expect(stat(`${stateFile}.lock`)).rejects.toThrow();
  });

  it('the upload lock: never seen empty; a live holder keeps it; of many processes taking over a dead one at once, one gets it; an old unreadable one is taken over', async () => {
    const { lockStateFile } = await import('../../cli/omni/registry-client.js');
    const stateFile = join(root, 'locks', 'state.json');
    const lock = `${stateFile}.lock`;
    const release = await lockStateFile(stateFile);
    expect(release).toBeDefined();
    expect(await readFile(lock, 'utf8')).toBe(String(process.pid));
    expect(await lockStateFile(stateFile)).toBeUndefined(); // held by a live process (this one)
    await release!();
    // a dead holder's lock, taken over by 8 at once (10 rounds): exactly one holds it after
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    for (let round = 0; round < 10; round++) {
      await writeFile(lock, dead.stdout);
      const takers = await Promise.all(Array.from({ length: 8 }, () => lockStateFile(stateFile)));
      expect(takers.filter((r) => r !== undefined)).toHaveLength(1);
      expect(await readFile(lock, 'utf8')).toBe(String(process.pid));
      await takers.find((r) => r !== undefined)!();
    }
    // an empty lock (an older version killed between creating and writing it): held while fresh, taken over once old
    await writeFile(lock, '');
    expect(await lockStateFile(stateFile)).toBeUndefined();
    const old = new Date(Date.now() - 60_000);
    await utimes(lock, old, old);
    const again = await lockStateFile(stateFile);
    expect(again).toBeDefined();
    await again!();
    // nothing of the takeovers is left beside the state file
    expect((await readdir(join(root, 'locks'))).filter((n) => n.startsWith('state.json.lock'))).toEqual([]);
  });
});

describe('forge driver', () => {
  it('builds the uploaded source on the node with no token: the same digest as a build through /v2/, the result as its last log line, the build record written as the node', async () => {
    const src = await copyFixture('node-api');
    const req = await upload(src, 'team/node-side', { tags: ['v1'] });
    callers.length = 0;
    const cfg = taskConfig(req);
    const started = await driver.start(cfg);
    expect(started.state).toBe('running');
    // follow streams lines while it runs and ends when it exits
    const followed: string[] = [];
    for await (const l of driver.logs(cfg.taskId, { follow: true })) followed.push(l);
    const st = await exited(cfg.taskId);
    expect(st.exitCode).toBe(0);
    const lines = await logLines(cfg.taskId);
    expect(followed).toEqual(lines);
    expect(lines).toContain('--- fetch source');
    expect(lines).toContain('--- deps');
    const last = lines.at(-1)!;
    expect(last.startsWith(BUILD_RESULT_MARKER)).toBe(true);
    const r = JSON.parse(last.slice(BUILD_RESULT_MARKER.length)) as BuildResult;
    expect(r.sourceDigest).toBe(req.sourceDigest);
    expect(r.reused).toBe(false);
    expect(await client.resolveTag('team/node-side', 'v1')).toBe(r.digest);
    // every write of the build was the node's own (SELF), none an admin's
    expect(callers.length).toBeGreaterThan(0);
    expect(new Set(callers)).toEqual(new Set(['self']));
    expect(records.map(([k]) => k)).toContain(`forge/builds/team/node-side/sha-${req.sourceDigest.slice(7)}`);
    // the same source built through /v2/ (as omni build --local does) gives the same image
    const local = await new Forge(client, new HostRunner(), join(root, 'local-forge')).build({ dir: src, repo: 'team/local-side', tags: ['v1'] });
    expect(local.digest).toBe(r.digest);
    // a second build of the same request reuses the image
    const again = taskConfig(req);
    await driver.start(again);
    expect((await exited(again.taskId)).exitCode).toBe(0);
    const r2 = JSON.parse((await logLines(again.taskId)).at(-1)!.slice(BUILD_RESULT_MARKER.length)) as BuildResult;
    expect(r2.reused).toBe(true);
    expect(r2.digest).toBe(r.digest);
  }, 120_000);

  it('a failing step ends the task with exit 1; its log ends with the step, its exit and last lines', async () => {
    const src = await copyFixture('static-site');
    await mkdir(join(src, '.omni'));
    await writeFile(join(src, '.omni/build.yaml'), 'runtime: omni/node:24\nsteps:\n  - name: compile\n    run: "echo compiling; echo broken >&2; exit 7"\n');
    const req = await upload(src, 'team/fails');
    const cfg = taskConfig(req);
    await driver.start(cfg);
    const st = await exited(cfg.taskId);
    expect(st.exitCode).toBe(1);
    expect(st.reason).toBe("step 'compile' failed (exit status 7)");
    const lines = await logLines(cfg.taskId);
    expect(lines).toContain('[compile] compiling');
    const e = JSON.parse(lines.at(-1)!.slice(BUILD_ERROR_MARKER.length)) as { step: string; exit: string; tail: string[] };
    expect(lines.at(-1)!.startsWith(BUILD_ERROR_MARKER)).toBe(true);
    expect(e).toMatchObject({ step: 'compile', exit: 'exit status 7', tail: ['compiling', 'broken'] });
  }, 60_000);

  it('stop() cancels a build under way (its step process ends); the status and the log survive the driver (omnid restarting)', async () => {
    const src = await copyFixture('static-site');
    await mkdir(join(src, '.omni'));
    await writeFile(join(src, '.omni/build.yaml'), 'runtime: omni/node:24\nsteps:\n  - name: slow\n    run: "echo started; sleep 60; echo never"\n');
    const req = await upload(src, 'team/cancelled');
    const cfg = taskConfig(req);
    await driver.start(cfg);
    for (let i = 0; i < 300 && !(await logLines(cfg.taskId)).includes('[slow] started'); i++) await new Promise((r) => setTimeout(r, 100));
    expect(await logLines(cfg.taskId)).toContain('[slow] started');
    await driver.stop(cfg.taskId, 5000);
    const st = await driver.inspect(cfg.taskId);
    expect(st).toMatchObject({ state: 'exited', exitCode: null, reason: 'cancelled' });
    const lines = await logLines(cfg.taskId);
    expect(lines).not.toContain('[slow] never');
    expect(lines).toContain('build cancelled');
    // a new driver on the same data dir (omnid restarted) knows the task and its log
    const again = new ForgeDriver({ dataDir: join(root, 'node'), log: silentLogger, parts: () => undefined });
    expect((await again.recover()).find((t) => t.taskId === cfg.taskId)).toMatchObject({ state: 'exited', reason: 'cancelled' });
    const kept: string[] = [];
    for await (const l of again.logs(cfg.taskId, { follow: false, tail: 1 })) kept.push(l);
    expect(kept[0]!.startsWith(BUILD_ERROR_MARKER)).toBe(true);
    expect(await again.available()).toMatchObject({ ok: false });
    await again.destroy(cfg.taskId);
    expect(await again.inspect(cfg.taskId)).toBeUndefined();
  }, 60_000);

  it('a request that does not parse does not start', async () => {
    await expect(driver.start({ ...taskConfig(request()), command: ['forge-build', '--repo', 'x'] })).rejects.toThrow(/--source is required/);
  });
});
