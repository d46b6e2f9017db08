// ProcessDriver against real processes: ports and env, logs and exit codes after exit, stop
// (graceful and forced, whole process group), log rotation, recover() from a new driver instance —
// including one whose task was started by another (exited) Node process, as after an agent
// restart, and one whose task ended while no driver ran — and what a task costs beyond itself.
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProcessDriver, canUnshare } from '../../node/apps/drivers/process.js';
import type { TaskConfig, TaskStatus } from '../../node/apps/drivers/types.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const STOP_MS = 500;
/** The goal of issue 10: what omnid adds per process task stays under 5 MB of RSS. */
const PER_TASK_RSS_GOAL_KB = 5 * 1024;

// An HTTP server on $PORT that answers with its env; says "bye" and exits 0 on SIGTERM.
const SERVER = `
const http = require('node:http');
const s = http.createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ port: process.env.PORT, web: process.env.OMNI_PORT_WEB, task: process.env.OMNI_TASK_ID,
    vol: process.env.OMNI_VOLUME_DATA, msg: process.env.MSG, cwd: process.cwd() }));
});
s.listen(Number(process.env.PORT), '127.0.0.1', () => console.log('listening on ' + process.env.PORT));
process.on('SIGTERM', () => { console.log('bye'); process.exit(0); });
`;

let dataDir: string;
const drivers: ProcessDriver[] = [];

function driver(): ProcessDriver {
  const d = new ProcessDriver(dataDir);
  drivers.push(d);
  return d;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function exited(d: ProcessDriver, taskId: string): Promise<TaskStatus> {
  return waitFor(`${taskId} to exit`, async () => {
    const s = await d.inspect(taskId);
    return s?.state === 'exited' ? s : undefined;
  });
}

async function collect(it: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const l of it) out.push(l);
  return out;
}

let seq = 0;
function task(command: string[], extra: Partial<TaskConfig> = {}): TaskConfig {
  seq += 1;
  return { taskId: `pt-${process.pid}-${seq}`, app: 'app', version: 1, command, env: {}, ports: [], volumes: [], cpu: 0, memoryBytes: 0, labels: {}, ...extra };
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Starts a task from another Node process that then exits: as if omnid stopped right after. */
async function startElsewhere(cfg: TaskConfig): Promise<void> {
  const script = join(dataDir, 'start-task.mts');
  const driverUrl = new URL('../../node/apps/drivers/process.ts', import.meta.url).href;
  await writeFile(
    script,
    `import { ProcessDriver } from ${JSON.stringify(driverUrl)};\n` +
      `const st = await new ProcessDriver(process.argv[2]).start(JSON.parse(process.argv[3]));\n` +
      `console.log(JSON.stringify(st));\n`,
  );
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', script, dataDir, JSON.stringify(cfg)], { cwd: ROOT, timeout: 30_000 });
  expect(JSON.parse(stdout.trim())).toMatchObject({ taskId: cfg.taskId, state: 'running' });
}

function procStatus(pid: number): { pgrp: number; rssKb: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rss = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { pgrp: Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]), rssKb: Number(rss?.[1] ?? 0) };
}

/** Live members of a process group. */
function groupOf(pgid: number): number[] {
  const out: number[] = [];
  for (const n of readdirSync('/proc')) {
    if (!/^\d+$/.test(n)) continue;
    try {
      if (procStatus(Number(n)).pgrp === pgid && pidAlive(Number(n))) out.push(Number(n));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'omni-process-driver-'));
});

afterAll(async () => {
  const d = new ProcessDriver(dataDir);
  for (const s of await d.recover()) await d.destroy(s.taskId);
  await rm(dataDir, { recursive: true, force: true });
});

describe('ProcessDriver', () => {
  it('runs a server on its port with the task env, and stops it with SIGTERM', async () => {
    const d = driver();
    expect(await d.available()).toEqual({ ok: true });
    const port = await freePort();
    const cfg = task(['sh', '-c', 'echo starting; exec "$0" -e "$1"', process.execPath, SERVER], {
      env: { MSG: 'hello' },
      ports: [{ name: 'web', containerPort: port, hostPort: port }],
      volumes: [{ name: 'data', hostPath: '/tmp/omni-vol-x', path: '/data' }],
    });
    const st = await d.start(cfg);
    expect(st).toMatchObject({ taskId: cfg.taskId, state: 'running', exitCode: null });

    const body = await waitFor('HTTP 200', async () => {
      const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(1000) });
      return res.status === 200 ? ((await res.json()) as Record<string, string>) : undefined;
    });
    expect(body).toEqual({
      port: String(port),
      web: String(port),
      task: cfg.taskId,
      vol: '/tmp/omni-vol-x',
      msg: 'hello',
      cwd: join(dataDir, 'tasks', cfg.taskId, 'work'),
    });
    const stats = await d.stats(cfg.taskId);
    expect(stats?.memoryBytes).toBeGreaterThan(0);
    expect(stats?.cpuPercent).toBeGreaterThanOrEqual(0);

    await d.stop(cfg.taskId, 5_000);
    const end = await d.inspect(cfg.taskId);
    expect(end).toMatchObject({ state: 'exited', exitCode: 0 });
    expect(end!.exitedAtMs).toBeGreaterThanOrEqual(st.startedAtMs);
    expect(await collect(d.logs(cfg.taskId, { follow: false }))).toEqual(['starting', `listening on ${port}`, 'bye']);
    await d.stop(cfg.taskId, STOP_MS); // idempotent
  });

  it('keeps logs and the exit code after the task exits; tail and sinceMs filter', async () => {
    const d = driver();
    const cfg = task(['sh', '-c', 'echo out1; echo err1 >&2; sleep 0.3; echo out2; printf partial; exit 3']);
    await d.start(cfg);
    const st = await exited(d, cfg.taskId);
    expect(st.exitCode).toBe(3);
    expect(st.reason).toBeUndefined();
    const all = await collect(d.logs(cfg.taskId, { follow: false }));
    expect(all.sort()).toEqual(['err1', 'out1', 'out2', 'partial']);
    expect(await collect(d.logs(cfg.taskId, { follow: false, tail: 1 }))).toEqual(['partial']);
    expect(await collect(d.logs(cfg.taskId, { follow: false, tail: 0 }))).toEqual([]);
    expect(await collect(d.logs(cfg.taskId, { follow: false, sinceMs: Date.now() + 60_000 }))).toEqual([]);
    // follow on an exited task returns what there is and ends
    expect((await collect(d.logs(cfg.taskId, { follow: true }))).length).toBe(4);
    const raw = await readFile(join(dataDir, 'tasks', cfg.taskId, 'output.log'), 'utf8');
    expect(raw).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z O out1\n/);
  });

  it('a task given GPUs sees only those (CUDA_VISIBLE_DEVICES); a new driver instance reads them back from a running task', async () => {
    const d = driver();
    const cfg = task(['sh', '-c', 'echo "gpus=$$CUDA_VISIBLE_DEVICES"; exec sleep 30'], { gpus: [1, 3] });
    const st = await d.start(cfg);
    expect(st.state).toBe('running');
    await waitFor('the line', async () => ((await collect(d.logs(cfg.taskId, { follow: false }))).includes('gpus=1,3') ? true : undefined));
    expect((await driver().inspect(cfg.taskId))?.gpus).toEqual([1, 3]);
    await d.stop(cfg.taskId, STOP_MS);
    await d.destroy(cfg.taskId);
  });

    it.runIf(canUnshare())("a task on a network sees the network's hosts file as /etc/hosts, live, and the host's stays untouched", async () => {
    const d = driver();
    const hosts = join(dataDir, 'hosts-net1');
    await writeFile(hosts, '127.0.0.1\tlocalhost\n127.77.0.9\tapi\n');
    const before = readFileSync('/etc/hosts', 'utf8');
    const cfg = task(['sh', '-c', 'cat /etc/hosts; sleep 1; cat /etc/hosts'], { hostsFile: hosts });
    await d.start(cfg);
    await sleep(300);
    await writeFile(hosts, '127.0.0.1\tlocalhost\n127.77.0.9\tapi\n127.77.0.10\tweb\n'); // in place, as the mesh does
    const st = await exited(d, cfg.taskId);
    expect(st.exitCode).toBe(0);
    const lines = await collect(d.logs(cfg.taskId, { follow: false }));
    expect(lines).toEqual(['127.0.0.1\tlocalhost', '127.77.0.9\tapi', '127.0.0.1\tlocalhost', '127.77.0.9\tapi', '127.77.0.10\tweb']);
    expect(readFileSync('/etc/hosts', 'utf8')).toBe(before);
  });

  it('follows output until the task exits, and stops following on abort', async () => {
    const d = driver();
    const cfg = task(['sh', '-c', 'for i in 1 2 3 4 5; do echo line$i; sleep 0.1; done']);
    await d.start(cfg);
    expect(await collect(d.logs(cfg.taskId, { follow: true }))).toEqual(['line1', 'line2', 'line3', 'line4', 'line5']);
    expect((await d.inspect(cfg.taskId))?.exitCode).toBe(0);

    const forever = task(['sh', '-c', 'echo up; exec sleep 1000']);
    await d.start(forever);
    const ac = new AbortController();
    const seen: string[] = [];
    for await (const l of d.logs(forever.taskId, { follow: true, signal: ac.signal })) {
      seen.push(l);
      ac.abort();
    }
    expect(seen).toEqual(['up']);
    await d.stop(forever.taskId, STOP_MS);
    expect((await d.inspect(forever.taskId))?.reason).toBe('signal SIGTERM');
  });

  it('SIGKILLs a task that ignores SIGTERM after the timeout, with its whole process group', async () => {
    const d = driver();
    const cfg = task(['sh', '-c', 'trap "" TERM; sleep 1000 & echo $! > child.pid; while :; do sleep 0.05; done']);
    await d.start(cfg);
    const childPidFile = join(dataDir, 'tasks', cfg.taskId, 'work', 'child.pid');
    const childPid = await waitFor('child pid', async () => (existsSync(childPidFile) ? Number(readFileSync(childPidFile, 'utf8')) || undefined : undefined));
    expect(pidAlive(childPid)).toBe(true);
    await d.stop(cfg.taskId, 300);
    const st = await d.inspect(cfg.taskId);
    expect(st).toMatchObject({ state: 'exited', exitCode: null });
    expect(st!.reason).toMatch(/SIGKILL|killed/);
    expect(pidAlive(childPid)).toBe(false);
  });

  it("expands $PORT, ${OMNI_PORT_<NAME>} and the task's env in argv ($$ is a literal $; unknown names stay)", async () => {
    const d = driver();
    const cfg = task([process.execPath, '-e', 'console.log(JSON.stringify(process.argv.slice(1)))', 'port', '$PORT', 'admin=${OMNI_PORT_ADMIN}', '$MODE', '$$PORT', '$NOT_SET'], {
      env: { MODE: 'prod' },
      ports: [{ name: 'http', containerPort: 20101, hostPort: 20101 }, { name: 'admin', containerPort: 20102, hostPort: 20102 }],
    });
    await d.start(cfg);
    expect(await exited(d, cfg.taskId)).toMatchObject({ exitCode: 0 });
    const [line] = await collect(d.logs(cfg.taskId, { follow: false }));
    expect(JSON.parse(line)).toEqual(['port', '20101', 'admin=20102', 'prod', '$PORT', '$NOT_SET']);
    await d.destroy(cfg.taskId);
  });

  it('rejects a command that cannot start, and a second start of a running task', async () => {
    const d = driver();
    const bad = task(['/nonexistent/omni-no-such-binary']);
    await expect(d.start(bad)).rejects.toMatchObject({ code: 'START_FAILED' });
    expect(await d.inspect(bad.taskId)).toMatchObject({ state: 'exited', exitCode: 127 });
    expect((await collect(d.logs(bad.taskId, { follow: false })))[0]).toMatch(/cannot start/);

    const cfg = task(['sleep', '1000']);
    await d.start(cfg);
    await expect(d.start(cfg)).rejects.toMatchObject({ code: 'CONFLICT' });
    await expect(d.start({ ...cfg, taskId: 'Bad/Id' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await d.destroy(cfg.taskId); // stops it first
    expect(await d.inspect(cfg.taskId)).toBeUndefined();
    expect(existsSync(join(dataDir, 'tasks', cfg.taskId))).toBe(false);
    await d.destroy(cfg.taskId); // idempotent
  });

  it('rotates output.log at its size limit', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-process-rot-'));
    try {
      const d = new ProcessDriver(dir, { logMaxBytes: 4096 });
      const cfg = task(['sh', '-c', 'i=0; while [ $i -lt 400 ]; do echo "line $i"; i=$((i+1)); done']);
      await d.start(cfg);
      await exited(d, cfg.taskId);
      const base = join(dir, 'tasks', cfg.taskId, 'output.log');
      expect(existsSync(`${base}.1`)).toBe(true);
      expect(readFileSync(base).length).toBeLessThanOrEqual(4096);
      const lines = await collect(d.logs(cfg.taskId, { follow: false }));
      expect(lines.at(-1)).toBe('line 399');
      // what is kept is a contiguous suffix of the output
      const first = Number(lines[0].split(' ')[1]);
      expect(lines).toEqual(Array.from({ length: 400 - first }, (_, i) => `line ${first + i}`));
      await d.destroy(cfg.taskId);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('recover() from a new driver instance re-attaches to a running task and sees its later exit code', async () => {
    const a = driver();
    const cfg = task(['sh', '-c', 'echo begin; sleep 1; echo end; exit 7']);
    await a.start(cfg);
    const b = driver(); // the agent restarted
    const found = (await b.recover()).filter((s) => s.taskId === cfg.taskId);
    expect(found).toHaveLength(1);
    expect(found[0].state).toBe('running');
    await expect(b.start(cfg)).rejects.toMatchObject({ code: 'CONFLICT' }); // no duplicate
    expect(await collect(b.logs(cfg.taskId, { follow: true }))).toEqual(['begin', 'end']);
    expect(await exited(b, cfg.taskId)).toMatchObject({ exitCode: 7 });
    expect((await b.recover()).filter((s) => s.taskId === cfg.taskId)).toEqual([await b.inspect(cfg.taskId)]);
  });

  it('survives the exit of the Node process that started the task (agent restart)', async () => {
    const cfg = task(['sh', '-c', 'echo from-before; sleep 1.5; exit 9']);
    await startElsewhere(cfg);

    const d = driver();
    const mine = (await d.recover()).filter((s) => s.taskId === cfg.taskId);
    expect(mine).toHaveLength(1);
    expect(mine[0].state).toBe('running');
    expect(await exited(d, cfg.taskId)).toMatchObject({ exitCode: 9 });
    expect(await collect(d.logs(cfg.taskId, { follow: false }))).toEqual(['from-before']);
  });

  it('knows the exit code and last output of a task that ended while no driver ran (omnid down)', async () => {
    // its last words are written after the starting process is gone, then it exits at once
    const cfg = task(['sh', '-c', 'sleep 1; echo last words; echo to stderr >&2; touch ended; exit 5']);
    await startElsewhere(cfg);
    const marker = join(dataDir, 'tasks', cfg.taskId, 'work', 'ended');
    await waitFor('the task to end', async () => (existsSync(marker) ? true : undefined));
    await new Promise((r) => setTimeout(r, 300)); // let its shell exit too

    const d = driver(); // omnid is back
    const mine = (await d.recover()).filter((s) => s.taskId === cfg.taskId);
    expect(mine).toEqual([expect.objectContaining({ state: 'exited', exitCode: 5 })]);
    expect((await collect(d.logs(cfg.taskId, { follow: false }))).sort()).toEqual(['last words', 'to stderr']);
  });

  it('stop() kills the whole process group, and keeps the exit status the command had', async () => {
    const d = driver();
    // the command ends on SIGTERM; the child it leaves behind ignores SIGTERM (and holds its stdout)
    const cfg = task(['sh', '-c', 'sh -c \'trap "" TERM; echo $$$$ > child.pid; exec sleep 1000\' & sleep 1000 & wait']);
    await d.start(cfg);
    const childPidFile = join(dataDir, 'tasks', cfg.taskId, 'work', 'child.pid');
    const childPid = await waitFor('child pid', async () => (existsSync(childPidFile) ? Number(readFileSync(childPidFile, 'utf8')) || undefined : undefined));
    const pgid = procStatus(childPid).pgrp;
    expect(groupOf(pgid).length).toBeGreaterThanOrEqual(3); // wrapper, sh, its sleep, the child
    await d.stop(cfg.taskId, 300);
    expect(groupOf(pgid)).toEqual([]);
    expect(pidAlive(childPid)).toBe(false);
    expect(await d.inspect(cfg.taskId)).toMatchObject({ state: 'exited', exitCode: null, reason: 'signal SIGTERM' });
  });

  it('the wrapper never runs the command unless the driver, having recorded it, says go', async () => {
    // as if omnid died between spawning the wrapper and writing state.json: nobody could ever stop that run
    const dir = await mkdtemp(join(tmpdir(), 'omni-wrapper-'));
    let child: ChildProcess | undefined;
    try {
      await mkdir(join(dir, 'work'));
      await promisify(execFile)('mkfifo', ['out.pipe', 'err.pipe', 'ack.pipe'].map((n) => join(dir, n)));
      const script = fileURLToPath(new URL('../../node/apps/drivers/process-wrapper.sh', import.meta.url));
      const sh = spawn('/bin/sh', [script, dir, '/usr/bin/env', 'touch', 'ran'], { cwd: join(dir, 'work'), stdio: ['pipe', 'pipe', 'ignore'] });
      child = sh;
      const ok = await new Promise<string>((r) => sh.stdout.once('data', (c: Buffer) => r(c.toString())));
      expect(ok).toBe('ok\n');
      sh.stdin.end(); // the driver is gone: no "go"
      const code = await new Promise<number | string | null>((r) => {
        sh.once('exit', r);
        setTimeout(() => r('still running'), 10_000);
      });
      expect(existsSync(join(dir, 'work', 'ran'))).toBe(false);
      expect(existsSync(join(dir, 'exit.code'))).toBe(false);
      expect(code).toBe(125);
    } finally {
      child?.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('costs a task one small process beyond its own (under 5 MB RSS, not a Node supervisor)', async () => {
    const d = driver();
    const cfg = task(['sh', '-c', 'echo $$$$ > task.pid; exec sleep 1000']);
    await d.start(cfg);
    const pidFile = join(dataDir, 'tasks', cfg.taskId, 'work', 'task.pid');
    const taskPid = await waitFor('task pid', async () => (existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8')) || undefined : undefined));
    const leader = procStatus(taskPid).pgrp;
    expect(leader).not.toBe(taskPid);
    expect(groupOf(leader).sort()).toEqual([leader, taskPid].sort()); // nothing else runs for it
    expect(procStatus(leader).rssKb).toBeLessThan(PER_TASK_RSS_GOAL_KB);
    await d.stop(cfg.taskId, STOP_MS);
  });
});
