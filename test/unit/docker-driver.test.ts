// DockerDriver against a real engine (see test/support/docker.ts): an HTTP server in the busybox
// test image on a published port, labels, env, logs, stop (SIGTERM through docker-init), recover()
// from a new instance, and the error for an image that is not on the node.
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import Docker from 'dockerode';
import { afterAll, describe, expect, it } from 'vitest';
import { DockerDriver, DockerLogDemux, FrameDemux, LABEL_OWNER } from '../../node/apps/drivers/docker.js';
import type { TaskConfig, TaskStatus } from '../../node/apps/drivers/types.js';
import { dockerForTests } from '../support/docker.js';

const engine = await dockerForTests();
const skip = 'skip' in engine ? engine.skip : undefined;
if (skip) console.warn(`\n!!! SKIPPING the Docker driver tests: ${skip}\n!!! (set OMNI_REQUIRE_DOCKER=1 to make this an error)\n`);
const socketPath = 'socketPath' in engine ? engine.socketPath : '';
const image = 'image' in engine ? engine.image : '';
const owner = `test-${process.pid}-${randomBytes(3).toString('hex')}`;
const STOP_MS = 1_000;

function driver(): DockerDriver {
  return new DockerDriver({ socketPath, owner, nodeName: 'test-node' });
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '0.0.0.0', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function collect(it: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const l of it) out.push(l);
  return out;
}

let seq = 0;
function task(command: string[], extra: Partial<TaskConfig> = {}): TaskConfig {
  seq += 1;
  return { taskId: `dt-${process.pid}-${seq}`, app: 'web', version: 3, image, command, env: {}, ports: [], volumes: [], cpu: 0.5, memoryBytes: 64 * 1024 * 1024, labels: {}, ...extra };
}

const HTTPD = ['sh', '-c', 'mkdir -p /www && echo ok > /www/index.html && echo "started $OMNI_TASK_ID port $PORT" && echo warn >&2 && exec httpd -f -p "$PORT" -h /www'];

afterAll(async () => {
  if (skip) return;
  // every container this file made, whatever happened
  const docker = new Docker({ socketPath });
  for (const c of await docker.listContainers({ all: true, filters: { label: [`${LABEL_OWNER}=${owner}`] } })) {
    await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
  }
});

describe('DockerLogDemux', () => {
  it('splits multiplexed frames into lines per stream, across chunk boundaries', () => {
    const frame = (kind: number, text: string) => {
      const body = Buffer.from(text);
      const h = Buffer.alloc(8);
      h[0] = kind;
      h.writeUInt32BE(body.length, 4);
      return Buffer.concat([h, body]);
    };
    const all = Buffer.concat([frame(1, 'a1\na'), frame(2, 'e1\n'), frame(1, '2\n'), frame(1, 'tail')]);
    const d = new DockerLogDemux();
    const out = [...d.push(all.subarray(0, 5)), ...d.push(all.subarray(5, 17)), ...d.push(all.subarray(17)), ...d.end()];
    expect(out).toEqual(['a1', 'e1', 'a2', 'tail']);
  });
});

describe('FrameDemux (exec output)', () => {
  it('joins stdout and stderr payloads across chunk boundaries, keeping the last bytes', () => {
    const frame = (kind: number, text: string) => {
      const body = Buffer.from(text);
      const h = Buffer.alloc(8);
      h[0] = kind;
      h.writeUInt32BE(body.length, 4);
      return Buffer.concat([h, body]);
    };
    const all = Buffer.concat([frame(1, 'out1 '), frame(2, 'err '), frame(1, 'out2')]);
    const d = new FrameDemux(1000);
    for (let i = 0; i < all.length; i += 3) d.push(all.subarray(i, i + 3));
    expect(d.text()).toBe('out1 err out2');
    const small = new FrameDemux(4);
    small.push(all);
    expect(small.text()).toBe('out2');
  });
});

describe.skipIf(skip !== undefined)('DockerDriver (real engine)', () => {
  it('exec runs a command inside the container: exit code, output, timeout; files are mounted read-only', async () => {
    const d = driver();
    const { mkdtemp, writeFile, rm } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = await mkdtemp(join(tmpdir(), 'omni-docker-files-'));
    try {
      await writeFile(join(dir, 's'), 'secret-value');
      const cfg = task(['sh', '-c', 'echo inside > /tmp/only-here; exec sleep 1000'], { files: [{ hostPath: join(dir, 's'), target: '/run/secrets/s' }] });
      await d.start(cfg);
      const r = await waitFor('the file inside', async () => {
        const x = await d.exec(cfg.taskId, ['cat', '/tmp/only-here', '/run/secrets/s'], 5000);
        return x.exitCode === 0 ? x : undefined;
      });
      expect(r).toEqual({ exitCode: 0, output: 'inside\nsecret-value' });
      expect(await d.exec(cfg.taskId, ['sh', '-c', 'echo no >&2; exit 7'], 5000)).toEqual({ exitCode: 7, output: 'no\n' });
      expect((await d.exec(cfg.taskId, ['sh', '-c', 'echo x > /run/secrets/s'], 5000)).exitCode).not.toBe(0); // read-only
      expect((await d.exec(cfg.taskId, ['sleep', '5'], 300)).exitCode).toBeNull();
      // a timed-out exec is killed inside the container, children too (Docker leaves them running)
      expect((await d.exec(cfg.taskId, ['sh', '-c', 'sleep 77; sleep 78'], 300)).exitCode).toBeNull();
      const ps = async () => (await d.exec(cfg.taskId, ['ps', '-o', 'args'], 5000)).output;
      await waitFor('the timed-out check gone', async () => (/sleep 7[78]|sleep 5/.test(await ps()) ? undefined : true));
      expect(await ps()).toContain('sleep 1000');
      await d.stop(cfg.taskId, STOP_MS);
      await expect(d.exec(cfg.taskId, ['true'], 1000)).rejects.toThrow(/not running/);
      await d.destroy(cfg.taskId);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('is available', async () => {
    expect(await driver().available()).toEqual({ ok: true });
    expect(await new DockerDriver({ socketPath: '/nonexistent/docker.sock' }).available()).toMatchObject({ ok: false });
  });

  it('runs busybox httpd on a published port, with labels, env and logs; stops it with SIGTERM', async () => {
    const d = driver();
    const hostPort = await freePort();
    const cfg = task(HTTPD, {
      env: { GREETING: 'hi' },
      ports: [{ name: 'http', containerPort: 8080, hostPort }],
      labels: { team: 'a' },
    });
    const st = await d.start(cfg);
    expect(st).toMatchObject({ taskId: cfg.taskId, state: 'running', exitCode: null });

    // docker-proxy accepts before httpd listens: short timeouts and retries
    const body = await waitFor('HTTP 200', async () => {
      const res = await fetch(`http://127.0.0.1:${hostPort}/`, { signal: AbortSignal.timeout(1_000) });
      return res.status === 200 ? await res.text() : undefined;
    });
    expect(body).toBe('ok\n');

    const info = await new Docker({ socketPath }).getContainer(`omni-${cfg.taskId}`).inspect();
    expect(info.Config.Labels).toMatchObject({ 'omni.task': cfg.taskId, 'omni.app': 'web', 'omni.version': '3', 'omni.owner': owner, team: 'a' });
    expect(info.Config.Env).toEqual(expect.arrayContaining(['GREETING=hi', 'PORT=8080', 'OMNI_PORT_HTTP=8080', `OMNI_TASK_ID=${cfg.taskId}`]));
    expect(info.HostConfig).toMatchObject({ Init: true, Memory: 64 * 1024 * 1024, NanoCpus: 500_000_000, RestartPolicy: { Name: 'no' } });
    expect(info.HostConfig.PortBindings).toEqual({ '8080/tcp': [{ HostIp: '0.0.0.0', HostPort: String(hostPort) }] });

    const lines = await collect(d.logs(cfg.taskId, { follow: false }));
    expect(lines.sort()).toEqual([`started ${cfg.taskId} port 8080`, 'warn'].sort());
    expect(await collect(d.logs(cfg.taskId, { follow: false, sinceMs: Date.now() + 60_000 }))).toEqual([]);

    const stats = await d.stats(cfg.taskId);
    expect(stats?.memoryBytes).toBeGreaterThan(0);

    await d.stop(cfg.taskId, STOP_MS);
    const end = await d.inspect(cfg.taskId);
    // 143 = 128 + SIGTERM: docker-init passed SIGTERM on to httpd (no SIGKILL needed)
    expect(end).toMatchObject({ state: 'exited', exitCode: 143 });
    expect(end!.exitedAtMs).toBeGreaterThanOrEqual(end!.startedAtMs);
    await d.stop(cfg.taskId, STOP_MS); // idempotent
    expect(await collect(d.logs(cfg.taskId, { follow: false }))).toHaveLength(2); // logs kept after exit
    await d.destroy(cfg.taskId);
    expect(await d.inspect(cfg.taskId)).toBeUndefined();
    await d.destroy(cfg.taskId); // idempotent
  });

  it('reports the exit code, follows logs to the end, and mounts volumes', async () => {
    const d = driver();
    const { mkdtemp, readFile, rm } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const vol = await mkdtemp(join(tmpdir(), 'omni-docker-vol-'));
    try {
      const cfg = task(['sh', '-c', 'for i in 1 2 3; do echo line$i; sleep 0.1; done; echo saved > "$OMNI_VOLUME_DATA/f"; exit 5'], {
        volumes: [{ name: 'data', hostPath: vol, path: '/data' }],
      });
      await d.start(cfg);
      expect(await collect(d.logs(cfg.taskId, { follow: true }))).toEqual(['line1', 'line2', 'line3']);
      const st = await waitFor('exit', async () => {
        const s = await d.inspect(cfg.taskId);
        return s?.state === 'exited' ? s : undefined;
      });
      expect(st.exitCode).toBe(5);
      expect(await readFile(join(vol, 'f'), 'utf8')).toBe('saved\n');
      expect(await collect(d.logs(cfg.taskId, { follow: false, tail: 1 }))).toEqual(['line3']);
      await d.destroy(cfg.taskId);
    } finally {
      await rm(vol, { recursive: true, force: true });
    }
  });

  it("entrypoint replaces the image's ENTRYPOINT, command its arguments; [] runs without the image's", async () => {
    const d = driver();
    const docker = new Docker({ socketPath });
    // an image whose ENTRYPOINT would fail: busybox committed with ENTRYPOINT ["false"]
    const base = await docker.createContainer({ Image: image, Cmd: ['true'] });
    const withEntrypoint = `omni-test/entrypoint-false:${process.pid}`;
    await base.commit({ repo: withEntrypoint.split(':')[0], tag: String(process.pid), changes: 'ENTRYPOINT ["false"]' });
    await base.remove({ force: true });
    try {
      const replaced = task(['a', 'b'], { entrypoint: ['sh', '-c', 'echo "ep $0 $1"'] });
      const cleared = task(['echo', 'no entrypoint'], { image: withEntrypoint, entrypoint: [] });
      const kept = task(['x'], { image: withEntrypoint });
      for (const cfg of [replaced, cleared, kept]) await d.start(cfg);
      const exited = (cfg: TaskConfig) => waitFor(`${cfg.taskId} exits`, async () => {
        const s = await d.inspect(cfg.taskId);
        return s?.state === 'exited' ? s : undefined;
      });
      expect((await exited(replaced)).exitCode).toBe(0);
      expect(await collect(d.logs(replaced.taskId, { follow: false }))).toEqual(['ep a b']);
      expect((await exited(cleared)).exitCode).toBe(0);
      expect(await collect(d.logs(cleared.taskId, { follow: false }))).toEqual(['no entrypoint']);
      expect((await exited(kept)).exitCode).toBe(1); // the image's own ENTRYPOINT (false) ran
      for (const cfg of [replaced, cleared, kept]) await d.destroy(cfg.taskId);
    } finally {
      await docker.getImage(withEntrypoint).remove({ force: true }).catch(() => undefined);
    }
  });

  it('user, working directory, host name and stop signal reach the container', async () => {
    const d = driver();
    const cfg = task(['sh', '-c', 'echo "$(id -u):$(id -g) $(pwd) $(hostname)"; trap "echo got-int; exit 7" INT; while true; do sleep 0.1; done'], {
      user: '1234:5678',
      workingDir: '/tmp',
      hostname: 'web-one',
      stopSignal: 'SIGINT',
    });
    await d.start(cfg);
    await waitFor('its first line', async () => ((await collect(d.logs(cfg.taskId, { follow: false }))).length > 0 ? true : undefined));
    await d.stop(cfg.taskId, 10_000);
    const st = await d.inspect(cfg.taskId);
    expect(st?.exitCode).toBe(7); // SIGINT, trapped: not the default SIGTERM (exit 143) nor a kill (137)
    expect(await collect(d.logs(cfg.taskId, { follow: false }))).toEqual(['1234:5678 /tmp web-one', 'got-int']);
    await d.destroy(cfg.taskId);
  });

  it('shm size, ulimits, tmpfs, a read-only root and dropped capabilities reach the container', async () => {
    const d = driver();
    const script = [
      'echo shm=$(df -m /dev/shm | awk "NR==2 {print \\$2}")',
      'echo nofile=$(ulimit -n)',
      'grep -q " /scratch tmpfs " /proc/mounts && echo scratch=tmpfs',
      'touch /rootfile 2>/dev/null && echo root=rw || echo root=ro',
      'touch /scratch/x && echo scratch=rw',
      'grep CapEff /proc/self/status | tr -d "\\t"',
    ].join('; ');
    const cfg = task(['sh', '-c', script], { shmSizeMB: 128, ulimits: { nofile: { soft: 1234, hard: 2345 } }, tmpfs: [{ path: '/scratch', sizeMB: 16 }], readOnly: true, capDrop: ['ALL'] });
    await d.start(cfg);
    await waitFor('exit', async () => ((await d.inspect(cfg.taskId))?.state === 'exited' ? true : undefined));
    expect(await collect(d.logs(cfg.taskId, { follow: false }))).toEqual(['shm=128', 'nofile=1234', 'scratch=tmpfs', 'root=ro', 'scratch=rw', 'CapEff:0000000000000000']);
    await d.destroy(cfg.taskId);
  });

  it('a task given GPUs asks the engine for those devices (NVIDIA toolkit): started on a GPU host, else a clear refusal', async () => {
    const d = driver();
    const cfg = task(['true'], { gpus: [0] });
    const started = await d.start(cfg).then(
      () => true,
      (err: Error) => {
        expect(err.message).toMatch(/nvidia|device driver|gpu/i);
        return false;
      },
    );
    if (started) expect((await d.inspect(cfg.taskId))?.gpus ?? [0]).toEqual([0]);
    await d.destroy(cfg.taskId);
  });

    it('a synced workspace (workDir) is bind-mounted at /workspace, the working directory of an image without a WORKDIR', async () => {
    const d = driver();
    const { mkdtemp, readFile, rm, writeFile } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const ws = await mkdtemp(join(tmpdir(), 'omni-docker-ws-'));
    try {
      await writeFile(join(ws, 'in.txt'), 'synced\n');
      const cfg = task(['sh', '-c', 'cat in.txt > out.txt && pwd > pwd.txt && echo "$OMNI_WORKSPACE" > ws.txt'], { workDir: ws });
      await d.start(cfg);
      const st = await waitFor('exit', async () => {
        const s = await d.inspect(cfg.taskId);
        return s?.state === 'exited' ? s : undefined;
      });
      expect(st.exitCode).toBe(0);
      expect(await readFile(join(ws, 'out.txt'), 'utf8')).toBe('synced\n');
      expect(await readFile(join(ws, 'pwd.txt'), 'utf8')).toBe('/workspace\n');
      expect(await readFile(join(ws, 'ws.txt'), 'utf8')).toBe('/workspace\n');
      await d.destroy(cfg.taskId);
    } finally {
      await rm(ws, { recursive: true, force: true });
    }
  });

  it('recover() from a new instance finds its running containers (and not other owners\')', async () => {
    const a = driver();
    const cfg = task(['sh', '-c', 'echo up; exec sleep 1000']);
    await a.start(cfg);
    const b = driver(); // the agent restarted
    const found = (await b.recover()).filter((s) => s.taskId === cfg.taskId);
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ state: 'running' } satisfies Partial<TaskStatus>);
    await expect(b.start(cfg)).rejects.toMatchObject({ code: 'CONFLICT' }); // no duplicate
    const other = new DockerDriver({ socketPath, owner: `${owner}-other` });
    expect((await other.recover()).map((s) => s.taskId)).not.toContain(cfg.taskId);
    expect(await other.inspect(cfg.taskId)).toBeUndefined();

    const ac = new AbortController();
    const seen: string[] = [];
    for await (const l of b.logs(cfg.taskId, { follow: true, signal: ac.signal })) {
      seen.push(l);
      ac.abort();
    }
    expect(seen).toEqual(['up']);
    await b.stop(cfg.taskId, STOP_MS);
    expect(await b.inspect(cfg.taskId)).toMatchObject({ state: 'exited' });
    await b.destroy(cfg.taskId);
    expect((await b.recover()).map((s) => s.taskId)).not.toContain(cfg.taskId);
  });

  it('fails clearly for an image that is not on the node, and for a failing start', async () => {
    const d = driver();
    const missing = task(['true'], { image: 'omni-test/not-here:9' });
    await expect(d.start(missing)).rejects.toMatchObject({
      code: 'IMAGE_NOT_FOUND',
      message: "image omni-test/not-here:9 is not present on node test-node; push it to the cluster's registry or load it with docker load / docker import",
    });
    // the host port is taken: the engine refuses to start the container
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '0.0.0.0', r));
    try {
      const hostPort = (busy.address() as { port: number }).port;
      const clash = task(HTTPD, { ports: [{ name: 'http', containerPort: 8080, hostPort }] });
      await expect(d.start(clash)).rejects.toMatchObject({ code: 'START_FAILED' });
      expect(await d.inspect(clash.taskId)).toBeUndefined(); // no container left behind
    } finally {
      busy.close();
    }
    // a command that does not exist: docker-init starts, cannot exec it, and exits 127
    const bad = task(['/no/such/binary']);
    await d.start(bad);
    const st = await waitFor('exit', async () => {
      const s = await d.inspect(bad.taskId);
      return s?.state === 'exited' ? s : undefined;
    });
    expect(st.exitCode).toBe(127);
    expect((await collect(d.logs(bad.taskId, { follow: false }))).join('\n')).toMatch(/\/no\/such\/binary/);
    await d.destroy(bad.taskId);
  });
});
