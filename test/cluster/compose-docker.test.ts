// Compose with the docker driver (issue 17) on a loopback cluster: a service's healthcheck runs
// inside its container (docker exec) — the check looks for a file that exists only in the
// container, so it can pass nowhere else — and its secrets and configs are read-only files
// (/run/secrets/NAME, a config at its target), not environment variables; a process service gets
// its secret as a file in its task directory, its path in OMNI_SECRET_FILE_<NAME>. A check that
// never passes fails `up` with its health log (what the check printed, in the container).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import Docker from 'dockerode';
import type { LocalCluster } from '../../node/local-cluster.js';
import { dockerForTests, TEST_IMAGE } from '../support/docker.js';
import { formCluster, waitFor } from './helpers.js';

const run = promisify(execFile);
const docker = await dockerForTests();
const noDocker = 'skip' in docker ? docker.skip : undefined;
if (noDocker) console.warn(`!!! SKIPPING compose with the docker driver: ${noDocker}`);

const TAG = randomBytes(4).toString('hex');
// Made by the container's command 1 s after it starts, inside the container only.
const MARK = `/tmp/omni-inside-${TAG}`;
const SECRET = `s3cret-${TAG}`;

const stack = (dir: string) => `
name: boxes
services:
  box:
    image: ${TEST_IMAGE}
    # entrypoint + command, as Compose runs them: the mark appears only if both reach the engine
    entrypoint: ["sh", "-c"]
    command: ["sleep 1; touch ${MARK}; exec sleep 100000"]
    healthcheck:
      test: ["CMD", "test", "-f", "${MARK}"]
      interval: 300ms
      retries: 2
      start_period: 20s
    secrets: [token, {source: token, target: /etc/token-copy, mode: 0400}]
    configs: [{source: app_conf, target: /etc/app/app.conf}, inline]
  after:
    x-omni-driver: process
    command: ["sh", "-c", "cat \\"$$OMNI_SECRET_FILE_TOKEN\\" > ${dir}/after.secret; env > ${dir}/after.env; exec sleep 100000"]
    secrets: [token]
    depends_on:
      box: {condition: service_healthy}
secrets:
  token: {file: ./token.txt}
configs:
  app_conf: {file: ./app.conf}
  inline: {content: "inline-config"}
`;

describe.skipIf(noDocker !== undefined)('compose with the docker driver: healthcheck in the container, secrets and configs as files', () => {
  let c: LocalCluster;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let engine: Docker;
  const omni = async (args: string[]) => run(resolve('bin/omni'), args, { env, cwd: dir, timeout: 300_000, maxBuffer: 16 * 1024 * 1024 }).catch((e: { code: number; stdout: string; stderr: string }) => e);

  beforeAll(async () => {
    if (noDocker) return;
    engine = new Docker({ socketPath: (docker as { socketPath: string }).socketPath });
    dir = await mkdtemp(join(tmpdir(), 'omni-compose-docker-'));
    await writeFile(join(dir, 'compose.yaml'), stack(dir));
    await writeFile(join(dir, 'token.txt'), SECRET);
    await writeFile(join(dir, 'app.conf'), 'a=1\n');
    c = await formCluster(['d1', 'd2', 'd3']);
    env = { ...process.env, OMNI_ADDR: c.nodes.get('d1')!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' };
  }, 180_000);
  afterAll(async () => {
    await c?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const containerOf = async (app: string) => {
    const list = await engine.listContainers({ filters: { label: [`omni.app=${app}`] } });
    expect(list.length, `containers of ${app}`).toBe(1);
    return engine.getContainer(list[0].Id);
  };
  const execIn = async (ct: Docker.Container, cmd: string[]) => {
    const x = await ct.exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true });
    const stream = await x.start({ hijack: true, stdin: false });
    const chunks: Buffer[] = [];
    await new Promise<void>((r) => (stream.on('data', (b: Buffer) => chunks.push(b)), stream.on('end', () => r())));
    const raw = Buffer.concat(chunks);
    let out = '';
    for (let i = 0; i + 8 <= raw.length; ) {
      const n = raw.readUInt32BE(i + 4);
      out += raw.subarray(i + 8, i + 8 + n).toString();
      i += 8 + n;
    }
    return { code: (await x.inspect()).ExitCode, out };
  };

  it('up: box gets healthy by a check that passes only inside its container; then after starts', async () => {
    expect(existsSync(MARK)).toBe(false); // the node has no such file: a check run here would fail
    const r = await omni(['compose', 'up', '--timeout', '120']);
    expect(r.stdout + ('stderr' in r ? r.stderr : '')).toMatch(/boxes is healthy/);
    const app = await c.client('d2').get<{ spec: { env: Record<string, string>; healthCheck: { inContainer?: boolean } }; tasks: { state: string; health: string }[] }>('/v1/apps/boxes-box');
    expect(app.spec.healthCheck.inContainer).toBe(true);
    expect(app.tasks.some((t) => t.state === 'running' && t.health === 'healthy')).toBe(true);
    expect(JSON.stringify(app.spec.env ?? {})).not.toContain(SECRET);
  }, 300_000);

  it('secrets at /run/secrets/NAME and their target, configs at their target or /NAME, read-only, not in env', async () => {
    const ct = await containerOf('boxes-box');
    expect(await execIn(ct, ['cat', '/run/secrets/token'])).toEqual({ code: 0, out: SECRET });
    expect(await execIn(ct, ['cat', '/etc/token-copy'])).toEqual({ code: 0, out: SECRET });
    expect(await execIn(ct, ['cat', '/etc/app/app.conf'])).toEqual({ code: 0, out: 'a=1\n' });
    expect(await execIn(ct, ['cat', '/inline'])).toEqual({ code: 0, out: 'inline-config' });
    expect((await execIn(ct, ['stat', '-c', '%a', '/etc/token-copy'])).out.trim()).toBe('400');
    expect((await execIn(ct, ['stat', '-c', '%a', '/run/secrets/token'])).out.trim()).toBe('444');
    // read-only mounts: even root in the container cannot change them
    expect((await execIn(ct, ['sh', '-c', 'echo x > /run/secrets/token'])).code).not.toBe(0);
    const info = await ct.inspect();
    expect((info.Config.Env ?? []).join('\n')).not.toContain(SECRET);
    // the process service: the file's path in env, never the value
    const got = await waitFor('after wrote its secret', async () => (await readFile(join(dir, 'after.secret'), 'utf8').catch(() => '')) || undefined, 30_000, 300);
    expect(got).toBe(SECRET);
    const afterEnv = await readFile(join(dir, 'after.env'), 'utf8');
    expect(afterEnv).toMatch(/^OMNI_SECRET_FILE_TOKEN=\/.*\/task-files\/.*\/secrets\/token$/m);
    expect(afterEnv).not.toContain(SECRET);
    // nothing logged the value: the nodes' output (the last lines each)
    for (const n of ['d1', 'd2', 'd3']) {
      const lines = c.nodes.get(n)!.lines;
      expect(lines.length, `${n}'s log`).toBeGreaterThan(0);
      expect(lines.join('\n'), `${n}'s log`).not.toContain(SECRET);
    }
    // sealed before they enter the replicated state: neither the API's answer nor any file of a
    // node's Raft log, snapshots or state holds the value, in clear or in base64
    const spec = (await c.client('d3').get<{ spec: { files: { kind: string; data: string; sealed?: string; sha256?: string }[] } }>('/v1/apps/boxes-box')).spec;
    expect(spec.files.filter((f) => f.kind === 'secret').every((f) => f.data === '' && /^v1\./.test(f.sealed ?? '') && /^[0-9a-f]{64}$/.test(f.sha256 ?? ''))).toBe(true);
    const b64 = Buffer.from(SECRET).toString('base64');
    expect(JSON.stringify(spec)).not.toContain(b64);
    for (const n of ['d1', 'd2', 'd3']) {
      for (const f of await readdir(join(c.dataDir(n), 'raft'), { recursive: true, withFileTypes: true })) {
        if (!f.isFile()) continue;
        const bytes = await readFile(join(f.parentPath, f.name));
        expect(bytes.includes(SECRET) || bytes.includes(b64), `${n}: ${f.name}`).toBe(false);
      }
    }
    const cfg = await omni(['compose', 'config']);
    expect(cfg.stdout).toMatch(/secret, \d+ bytes, not shown/);
    expect(cfg.stdout).not.toContain(SECRET);
  }, 120_000);

  it('a check that never passes in the container fails up with its health log', async () => {
    const f = join(dir, 'bad.yaml');
    await writeFile(f, `services:\n  sick:\n    image: ${TEST_IMAGE}\n    command: ["sleep", "100000"]\n    healthcheck:\n      test: ["CMD-SHELL", "echo inside-says-no-${TAG} from $$(hostname); exit 3"]\n      interval: 300ms\n  app:\n    x-omni-driver: process\n    command: ["sleep", "100000"]\n    depends_on:\n      sick: {condition: service_healthy}\n`);
    const e = (await omni(['compose', '-f', f, '-p', 'sick', 'up', '--timeout', '8'])) as { code?: number; stdout: string };
    expect(e.code).toBe(1);
    expect(e.stdout).toMatch(/sick did not become healthy within 8 s/);
    expect(e.stdout).toMatch(new RegExp(`health check: command exited with code 3 \\(in the container\\): inside-says-no-${TAG} from [0-9a-f]{12}`));
    expect(e.stdout).toMatch(/not started: app/);
    await omni(['compose', '-f', f, '-p', 'sick', 'down']);
  }, 120_000);
});
