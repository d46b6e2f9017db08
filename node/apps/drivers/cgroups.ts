// A process task's own cgroup, for hard CPU and memory limits (`resources.limit: true`):
// <root>/omni/<task> under cgroup v2, or <memory>/omni/<task> and <cpu>/omni/<task> under v1.
// omnid makes it and writes the limits (protocol/apps/cgroup-limits.ts); the task's command joins
// it before it is exec'd (node/apps/drivers/process-wrapper.sh writes its pid into the
// cgroup.procs files the driver names), so every process it forks is counted, and the wrapper
// itself stays outside (an OOM kill takes the command, not the shell that records its status).
// Needs root and a writable cgroup file system; TaskCgroups.open() says why not otherwise.
import { readFileSync } from 'node:fs';
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cgroupLayout, limitFiles, oomKills, type CgroupLayout, type HardLimits } from '../../../protocol/apps/cgroup-limits.js';

const GROUP = 'omni';
/** How long remove() waits for the processes it killed to leave the cgroup. */
const KILL_WAIT_MS = 2000;
const KILL_POLL_MS = 20;

export class TaskCgroups {
  private v2Ready: Promise<void> | undefined;

  private constructor(readonly layout: CgroupLayout) {}

  /** The host's cgroups if this process can make them (root, Linux, memory and cpu controllers). */
  static open(): TaskCgroups | { reason: string } {
    if (process.platform !== 'linux') return { reason: 'cgroups are Linux only' };
    if (process.getuid?.() !== 0) return { reason: 'making cgroups needs root' };
    let mounts: string;
    try {
      mounts = readFileSync('/proc/self/mounts', 'utf8');
    } catch (e) {
      return { reason: `cannot read /proc/self/mounts: ${(e as Error).message}` };
    }
    const r = cgroupLayout(mounts, (root) => {
      try {
        return readFileSync(join(root, 'cgroup.controllers'), 'utf8');
      } catch {
        return undefined;
      }
    });
    return r.ok ? new TaskCgroups(r.layout) : { reason: r.reason };
  }

  /** The task's cgroup directory per controller (v2: one directory for both). */
  dirs(taskId: string): { memory: string; cpu: string } {
    if (this.layout.kind === 'v2') {
      const d = join(this.layout.root, GROUP, taskId);
      return { memory: d, cpu: d };
    }
    return { memory: join(this.layout.memory, GROUP, taskId), cpu: join(this.layout.cpu, GROUP, taskId) };
  }

  /**
   * A fresh cgroup for the task's run with `limits` written (an older one of the task is removed
   * first, so its OOM count starts at 0); returns the cgroup.procs files the command joins.
   */
  async create(taskId: string, limits: HardLimits): Promise<string[]> {
    await this.remove(taskId);
    if (this.layout.kind === 'v2') await this.enableV2Controllers();
    const dirs = this.dirs(taskId);
    const unique = [...new Set([dirs.memory, dirs.cpu])];
    for (const d of unique) await mkdir(d, { recursive: true });
    for (const f of limitFiles(this.layout.kind, limits)) {
      const path = join(dirs[f.controller], f.file);
      try {
        await writeFile(path, f.value);
      } catch (e) {
        if (f.optional && (e as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw new Error(`cannot write ${f.value} to ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
    }
    return unique.map((d) => join(d, 'cgroup.procs'));
  }

  /** Whether the kernel's OOM killer killed a process of the task's cgroup. */
  async oomKilled(taskId: string): Promise<boolean> {
    const file = join(this.dirs(taskId).memory, this.layout.kind === 'v2' ? 'memory.events' : 'memory.oom_control');
    return oomKills(await readFile(file, 'utf8').catch(() => '')) > 0;
  }

  /** Pids of the processes in the task's cgroup (every hierarchy it has); empty when it has none. */
  async pids(taskId: string): Promise<number[]> {
    const dirs = this.dirs(taskId);
    const pids = new Set<number>();
    for (const d of new Set([dirs.memory, dirs.cpu])) {
      const text = await readFile(join(d, 'cgroup.procs'), 'utf8').catch(() => '');
      for (const line of text.split('\n')) if (/^\d+$/.test(line) && Number(line) > 1) pids.add(Number(line));
    }
    return [...pids];
  }

  /**
   * SIGKILLs every process left in the task's cgroup — also those that left the task's process
   * group (setsid, a daemonising command): a cgroup is inherited by every fork and cannot be left
   * without root — and waits up to `waitMs` for it to be empty. v2 uses `cgroup.kill` (atomic);
   * v1 signals each listed pid. Resolves whether it is empty.
   */
  async killAll(taskId: string, waitMs = KILL_WAIT_MS): Promise<boolean> {
    let pids = await this.pids(taskId);
    if (pids.length === 0) return true;
    const deadline = Date.now() + waitMs;
    for (;;) {
      if (this.layout.kind === 'v2') await writeFile(join(this.dirs(taskId).memory, 'cgroup.kill'), '1').catch(() => this.signal(pids, 'SIGKILL'));
      else this.signal(pids, 'SIGKILL');
      await new Promise((r) => setTimeout(r, KILL_POLL_MS));
      pids = await this.pids(taskId);
      if (pids.length === 0) return true;
      if (Date.now() >= deadline) return false;
    }
  }

  /** Sends `sig` to each pid (one that is gone meanwhile is skipped). */
  signal(pids: number[], sig: NodeJS.Signals): void {
    for (const pid of pids) {
      try {
        process.kill(pid, sig);
      } catch {
        // gone meanwhile
      }
    }
  }

  /**
   * Removes the task's cgroup (a no-op when there is none). A process still in it — one that left
   * the task's process group — is killed first, so nothing of the task outlives it and the next
   * run of the task gets a fresh cgroup with its limits; throws (EBUSY) only when one survives.
   */
  async remove(taskId: string): Promise<void> {
    const dirs = this.dirs(taskId);
    await this.killAll(taskId);
    for (const d of new Set([dirs.memory, dirs.cpu])) {
      try {
        await rmdir(d);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
  }

  /** v2: a child's controllers must be enabled in each ancestor's cgroup.subtree_control. */
  private enableV2Controllers(): Promise<void> {
    if (this.layout.kind !== 'v2') return Promise.resolve();
    const root = this.layout.root;
    this.v2Ready ??= (async () => {
      await mkdir(join(root, GROUP), { recursive: true });
      for (const d of [root, join(root, GROUP)]) {
        const have = (await readFile(join(d, 'cgroup.subtree_control'), 'utf8').catch(() => '')).split(/\s+/);
        if (have.includes('memory') && have.includes('cpu')) continue;
        await writeFile(join(d, 'cgroup.subtree_control'), '+memory +cpu');
      }
    })().catch((e: Error) => {
      this.v2Ready = undefined;
      throw new Error(`cannot enable the memory and cpu controllers under ${root}: ${(e as NodeJS.ErrnoException).code ?? e.message}`);
    });
    return this.v2Ready;
  }
}
