// Hard CPU and memory limits for process tasks (resources.limit: true): the pure part
// (protocol/apps/cgroup-limits.ts: where the controllers are, what to write, OOM counts) and the
// process driver against the host's real cgroups (node/apps/drivers/cgroups.ts): a task that
// allocates past its memory is killed by the OOM killer and reported so, a busy one is throttled
// to its CPU quota, the command is in the task's cgroup (its wrapper is not), and destroy removes it;
// a child that left the task's process group (setsid) is stopped with it and never outlives it.
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cgroupLayout, cpuQuotaUs, limitFiles, oomKills } from '../../protocol/apps/cgroup-limits.js';
import { ProcessDriver } from '../../node/apps/drivers/process.js';
import { TaskCgroups } from '../../node/apps/drivers/cgroups.js';
import type { TaskConfig, TaskStatus } from '../../node/apps/drivers/types.js';

const HYBRID = `sysfs /sys sysfs rw 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
`;
const V2 = `proc /proc proc rw 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0
`;

describe('cgroup limits (pure)', () => {
  it('finds v1 controllers (also beside an empty unified mount), else a v2 hierarchy that offers memory and cpu; says why not otherwise', () => {
    expect(cgroupLayout(HYBRID, () => '')).toEqual({ ok: true, layout: { kind: 'v1', memory: '/sys/fs/cgroup/memory', cpu: '/sys/fs/cgroup/cpu' } });
    const combined = 'cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n';
    expect(cgroupLayout(combined, () => '')).toMatchObject({ ok: true, layout: { cpu: '/sys/fs/cgroup/cpu,cpuacct' } });
    expect(cgroupLayout(V2, (root) => (root === '/sys/fs/cgroup' ? 'cpuset cpu io memory pids\n' : undefined))).toEqual({ ok: true, layout: { kind: 'v2', root: '/sys/fs/cgroup' } });
    expect(cgroupLayout(V2, () => 'cpuset io pids')).toMatchObject({ ok: false, reason: expect.stringContaining('memory and cpu') });
    expect(cgroupLayout('proc /proc proc rw 0 0\n', () => undefined)).toMatchObject({ ok: false, reason: 'no cgroup file system is mounted' });
    expect(cgroupLayout('cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n', () => undefined)).toMatchObject({ ok: false, reason: expect.stringContaining('not the cpu one') });
  });

  it('writes the memory limit (no swap) and a CPU quota per 100 ms, for each version; nothing for 0', () => {
    expect(limitFiles('v2', { cpu: 0.5, memoryBytes: 64 * 1024 * 1024 })).toEqual([
      { controller: 'memory', file: 'memory.max', value: String(64 * 1024 * 1024) },
      { controller: 'memory', file: 'memory.swap.max', value: '0', optional: true },
      { controller: 'cpu', file: 'cpu.max', value: '50000 100000' },
    ]);
    expect(limitFiles('v1', { cpu: 2, memoryBytes: 1000 }).map((f) => `${f.file}=${f.value}`)).toEqual(['memory.limit_in_bytes=1000', 'memory.memsw.limit_in_bytes=1000', 'cpu.cfs_period_us=100000', 'cpu.cfs_quota_us=200000']);
    expect(limitFiles('v1', { cpu: 0, memoryBytes: 0 })).toEqual([]);
    expect(cpuQuotaUs(0.001)).toBe(1000); // the kernel's minimum
  });

  it('reads the OOM kill count of v2 memory.events and v1 memory.oom_control', () => {
    expect(oomKills('low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n')).toBe(1);
    expect(oomKills('oom_kill_disable 0\nunder_oom 0\noom_kill 2\n')).toBe(2);
    expect(oomKills('oom_kill_disable 0\nunder_oom 0\n')).toBe(0);
  });
});

const cgroups = TaskCgroups.open();
const noCgroups = cgroups instanceof TaskCgroups ? undefined : cgroups.reason;
if (noCgroups) console.warn(`SKIPPED: process tasks' hard limits against real cgroups: ${noCgroups}`);

describe.skipIf(noCgroups !== undefined)('process driver: hard limits in the task cgroup', () => {
  let dataDir: string;
  let seq = 0;
  const d = () => new ProcessDriver(dataDir);
  const task = (command: string[], extra: Partial<TaskConfig>): TaskConfig => ({ taskId: `lim-${process.pid}-${++seq}`, app: 'app', version: 1, command, env: {}, ports: [], volumes: [], cpu: 0, memoryBytes: 0, labels: {}, ...extra });
  const exited = async (drv: ProcessDriver, id: string): Promise<TaskStatus> => {
    for (let i = 0; i < 600; i++) {
      const s = await drv.inspect(id);
      if (s?.state === 'exited') return s;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${id} did not exit`);
  };
  const logs = async (drv: ProcessDriver, id: string) => {
    const out: string[] = [];
    for await (const l of drv.logs(id, { follow: false })) out.push(l);
    return out;
  };
  const cg = cgroups as TaskCgroups;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'omni-process-limits-'));
  });
  afterAll(async () => {
    const drv = d();
    for (const s of await drv.recover()) await drv.destroy(s.taskId);
    await rm(dataDir, { recursive: true, force: true });
  });

  it('a task past its memory limit is killed by the OOM killer and reported as out of memory; its wrapper records it', async () => {
    const drv = d();
    const cfg = task([process.execPath, '-e', "console.log('allocating'); const b = Buffer.alloc(400 * 1024 * 1024, 1); console.log('survived', b.length)"], { hardLimits: true, memoryBytes: 96 * 1024 * 1024, cpu: 1 });
    await drv.start(cfg);
    const st = await exited(drv, cfg.taskId);
    expect(st).toMatchObject({ exitCode: null, reason: 'out of memory: killed at its limit of 96 MiB (resources.memory)' });
    expect(await logs(drv, cfg.taskId)).not.toContain('survived 419430400');
    expect(await cg.oomKilled(cfg.taskId)).toBe(true);
    await drv.destroy(cfg.taskId);
    expect(existsSync(cg.dirs(cfg.taskId).memory)).toBe(false);
  });

  it('the command runs in the task cgroup with its CPU quota and is throttled; the wrapper stays outside; without limit: no cgroup', async () => {
    const drv = d();
    // a busy loop of ~1 s of wall time, then where it ran
    const busy = "const t = Date.now(); while (Date.now() - t < 1000); console.log(require('fs').readFileSync('/proc/self/cgroup', 'utf8').trim().split('\\n').join(' '))";
    const cfg = task([process.execPath, '-e', busy], { hardLimits: true, cpu: 0.2, memoryBytes: 256 * 1024 * 1024 });
    await drv.start(cfg);
    const state = JSON.parse(await readFile(join(dataDir, 'tasks', cfg.taskId, 'state.json'), 'utf8')) as { pid: number; limits: unknown };
    expect(state.limits).toEqual({ cpu: 0.2, memoryBytes: 256 * 1024 * 1024 });
    // the wrapper (the pid the driver records) is not in the task's cgroup
    expect(readFileSync(`/proc/${state.pid}/cgroup`, 'utf8')).not.toContain(`/omni/${cfg.taskId}`);
    expect((await exited(drv, cfg.taskId)).exitCode).toBe(0);
    const [line] = await logs(drv, cfg.taskId);
    const dirs = cg.dirs(cfg.taskId);
    const inGroup = line.split(' ').filter((l) => l.endsWith(`/omni/${cfg.taskId}`));
    expect(inGroup.length).toBeGreaterThanOrEqual(1); // v2: one line; v1: the memory and cpu hierarchies
    if (cg.layout.kind === 'v1') {
      expect(readFileSync(join(dirs.cpu, 'cpu.cfs_quota_us'), 'utf8').trim()).toBe('20000');
      expect(readFileSync(join(dirs.memory, 'memory.limit_in_bytes'), 'utf8').trim()).toBe(String(256 * 1024 * 1024));
    } else {
      expect(readFileSync(join(dirs.cpu, 'cpu.max'), 'utf8').trim()).toBe('20000 100000');
    }
    // the kernel held it to its quota: periods in which it was throttled
    expect(Number(/nr_throttled (\d+)/.exec(readFileSync(join(dirs.cpu, 'cpu.stat'), 'utf8'))?.[1] ?? 0)).toBeGreaterThan(0);
    await drv.destroy(cfg.taskId);
    expect(existsSync(dirs.cpu)).toBe(false);

    const free = task([process.execPath, '-e', "console.log(require('fs').readFileSync('/proc/self/cgroup', 'utf8'))"], { cpu: 0.2, memoryBytes: 256 * 1024 * 1024 });
    await drv.start(free);
    expect((await exited(drv, free.taskId)).exitCode).toBe(0);
    expect((await logs(drv, free.taskId)).join('\n')).not.toContain('/omni/');
    expect(existsSync(cg.dirs(free.taskId).memory)).toBe(false);
    await drv.destroy(free.taskId);
  });
});

describe.skipIf(noCgroups !== undefined)('process driver: processes that leave the task group are still the task', () => {
  let dataDir: string;
  let seq = 0;
  const cg = cgroups as TaskCgroups;
  const task = (command: string[]): TaskConfig => ({ taskId: `stray-${process.pid}-${++seq}`, app: 'app', version: 1, command, env: {}, ports: [], volumes: [], cpu: 0.5, memoryBytes: 128 * 1024 * 1024, hardLimits: true, labels: {} });
  /** A pid that is gone, or a zombie waiting for its reaper. */
  const dead = (pid: number) => {
    try {
      return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.startsWith('Z') ?? true;
    } catch {
      return true;
    }
  };
  const waitFor = async (what: string, ok: () => boolean | Promise<boolean>) => {
    for (let i = 0; i < 200; i++) {
      if (await ok()) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`timed out waiting for ${what}`);
  };
  /** A command that starts a `setsid` child (its own session and process group) writing its pid to `file` (`$$$$`: the driver expands `$$` to `$`). */
  const straying = (file: string, thenExit: boolean) => ['/bin/sh', '-c', `setsid /bin/sh -c 'echo $$$$ > ${file}; exec sleep 1000' & ${thenExit ? 'exit 0' : 'exec sleep 1000'}`];
  const strays: number[] = [];

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'omni-process-strays-'));
  });
  afterAll(async () => {
    const drv = new ProcessDriver(dataDir);
    for (const s of await drv.recover()) await drv.destroy(s.taskId);
    // a failed run of this test leaves no sleep behind
    for (const pid of strays) if (!dead(pid)) process.kill(pid, 'SIGKILL');
    await rm(dataDir, { recursive: true, force: true });
  });

  it('stop ends a child that left the process group (it is in the task cgroup), and destroy removes the cgroup', async () => {
    const drv = new ProcessDriver(dataDir);
    const file = join(dataDir, 'stray-1.pid');
    const cfg = task(straying(file, false));
    await drv.start(cfg);
    await waitFor('the stray pid', () => existsSync(file) && readFileSync(file, 'utf8').trim() !== '');
    const stray = Number(readFileSync(file, 'utf8').trim());
    strays.push(stray);
    expect(dead(stray)).toBe(false);
    expect(await cg.pids(cfg.taskId)).toContain(stray);
    await drv.stop(cfg.taskId, 1000);
    await waitFor('the stray to end', () => dead(stray));
    await drv.destroy(cfg.taskId);
    expect(existsSync(cg.dirs(cfg.taskId).memory)).toBe(false);
  });

  it('a run that exited leaving a stray behind: restarting the task in place kills it and the new run has its limits', async () => {
    const drv = new ProcessDriver(dataDir);
    const file = join(dataDir, 'stray-2.pid');
    const cfg = task(straying(file, true));
    await drv.start(cfg);
    await waitFor('the stray pid', () => existsSync(file) && readFileSync(file, 'utf8').trim() !== '');
    const stray = Number(readFileSync(file, 'utf8').trim());
    strays.push(stray);
    await waitFor('the run to exit', async () => (await drv.inspect(cfg.taskId))?.state === 'exited');
    expect(dead(stray)).toBe(false); // the run is over, its stray is not
    // the same task started again (a restart in place): a fresh cgroup, the stray gone
    const again = { ...cfg, command: ['/bin/sh', '-c', 'exec sleep 1000'] };
    await drv.start(again);
    await waitFor('the stray to end', () => dead(stray));
    const dirs = cg.dirs(cfg.taskId);
    const limitFile = cg.layout.kind === 'v1' ? join(dirs.memory, 'memory.limit_in_bytes') : join(dirs.memory, 'memory.max');
    expect(readFileSync(limitFile, 'utf8').trim()).toBe(String(128 * 1024 * 1024));
    await waitFor('the new run in the cgroup', async () => (await cg.pids(cfg.taskId)).length === 1);
    await drv.destroy(cfg.taskId);
    expect(existsSync(dirs.memory)).toBe(false);
  });
});

describe('asking for hard limits', () => {
  it('resources.limit true is kept by the spec (false too; absent stays absent); omni run --limit needs --cpu or --memory', async () => {
    const { validateAppSpec } = await import('../../protocol/apps/spec.js');
    const res = (r: unknown) => (validateAppSpec({ name: 'w', command: ['true'], resources: r }) as { spec: { resources: { limit?: boolean } } }).spec.resources;
    expect(res({ cpu: 0.5, memory: '256M', limit: true })).toEqual({ cpu: 0.5, memoryMB: 256, gpus: 0, limit: true });
    expect(res({ limit: false }).limit).toBe(false);
    expect(res({ cpu: 1 }).limit).toBeUndefined();
    expect(validateAppSpec({ name: 'w', command: ['true'], resources: { limit: 'yes' } }).ok).toBe(false);
    const { run } = await import('../../cli/omni/run.js');
    await expect(run(['--name', 'w', '--limit', '--', 'true'])).rejects.toThrow(/--limit needs both --cpu and --memory/);
    await expect(run(['--name', 'w', '--limit', '--memory', '1G', '--', 'true'])).rejects.toThrow(/--limit needs both/);
  });
});
