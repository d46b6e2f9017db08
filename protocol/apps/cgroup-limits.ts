// Hard CPU and memory limits for process tasks (node/apps/drivers/cgroups.ts applies them): where
// the host's cgroup controllers are mounted, and what to write into a task's cgroup. Pure.
//
// cgroup v2 (one unified hierarchy): memory.max, memory.swap.max = 0 (no escape into swap),
// cpu.max "QUOTA PERIOD". cgroup v1 (and the "hybrid" layout, v1 controllers beside an empty
// unified mount): memory.limit_in_bytes (+ memory.memsw.limit_in_bytes where swap is accounted),
// cpu.cfs_quota_us / cpu.cfs_period_us. CPU is a quota per 100 ms period, as Docker's --cpus.

export type CgroupLayout =
  /** The unified hierarchy at `root`, with the memory and cpu controllers. */
  | { kind: 'v2'; root: string }
  /** v1 hierarchies: the memory controller's mount point and the cpu controller's. */
  | { kind: 'v1'; memory: string; cpu: string };

/** The CFS period every quota is counted in (Docker's, the kernel's default). */
export const CPU_PERIOD_US = 100_000;
/** The smallest quota the kernel takes (1 ms per period). */
const MIN_CPU_QUOTA_US = 1000;

/**
 * The layout from /proc/self/mounts: v1 when a v1 hierarchy holds the memory controller (the
 * controllers of a hybrid host live there), else v2 when a cgroup2 file system is mounted and
 * `v2Controllers(root)` lists memory and cpu; undefined with the reason otherwise.
 */
export function cgroupLayout(mounts: string, v2Controllers: (root: string) => string | undefined): { ok: true; layout: CgroupLayout } | { ok: false; reason: string } {
  let memory: string | undefined;
  let cpu: string | undefined;
  let unified: string | undefined;
  for (const line of mounts.split('\n')) {
    const [, dir, type, options] = line.split(' ');
    if (!dir || !type) continue;
    const path = dir.replace(/\\040/g, ' ');
    if (type === 'cgroup2') unified ??= path;
    else if (type === 'cgroup') {
      const opts = (options ?? '').split(',');
      if (opts.includes('memory')) memory ??= path;
      if (opts.includes('cpu')) cpu ??= path;
    }
  }
  if (memory && cpu) return { ok: true, layout: { kind: 'v1', memory, cpu } };
  if (memory || cpu) return { ok: false, reason: `cgroup v1 has ${memory ? 'the memory' : 'the cpu'} controller mounted but not the ${memory ? 'cpu' : 'memory'} one` };
  if (!unified) return { ok: false, reason: 'no cgroup file system is mounted' };
  const controllers = (v2Controllers(unified) ?? '').trim().split(/\s+/);
  if (!controllers.includes('memory') || !controllers.includes('cpu')) return { ok: false, reason: `the cgroup v2 hierarchy at ${unified} does not offer the memory and cpu controllers (it has: ${controllers.join(' ') || 'none'})` };
  return { ok: true, layout: { kind: 'v2', root: unified } };
}

export interface HardLimits {
  /** Cores (fractional); 0: no CPU limit. */
  cpu: number;
  /** Bytes; 0: no memory limit. */
  memoryBytes: number;
}

/** One file to write in a task's cgroup: which hierarchy (v2: the only one), the file, the value. */
export interface LimitFile {
  controller: 'memory' | 'cpu';
  file: string;
  value: string;
  /** Absent on some kernels (swap accounting off): skipped when missing. */
  optional?: true;
}

export function cpuQuotaUs(cores: number): number {
  return Math.max(MIN_CPU_QUOTA_US, Math.round(cores * CPU_PERIOD_US));
}

/** What to write for `limits`, in order (v1: the memory+swap limit after the memory one, which it must not be below). */
export function limitFiles(kind: CgroupLayout['kind'], limits: HardLimits): LimitFile[] {
  const out: LimitFile[] = [];
  if (limits.memoryBytes > 0) {
    const bytes = String(Math.floor(limits.memoryBytes));
    if (kind === 'v2') out.push({ controller: 'memory', file: 'memory.max', value: bytes }, { controller: 'memory', file: 'memory.swap.max', value: '0', optional: true });
    else out.push({ controller: 'memory', file: 'memory.limit_in_bytes', value: bytes }, { controller: 'memory', file: 'memory.memsw.limit_in_bytes', value: bytes, optional: true });
  }
  if (limits.cpu > 0) {
    const quota = cpuQuotaUs(limits.cpu);
    if (kind === 'v2') out.push({ controller: 'cpu', file: 'cpu.max', value: `${quota} ${CPU_PERIOD_US}` });
    else out.push({ controller: 'cpu', file: 'cpu.cfs_period_us', value: String(CPU_PERIOD_US) }, { controller: 'cpu', file: 'cpu.cfs_quota_us', value: String(quota) });
  }
  return out;
}

/**
 * How many times the kernel's OOM killer killed in the cgroup: v2 `memory.events` and v1
 * `memory.oom_control` (kernels since 4.13) both carry an `oom_kill N` line. 0 when absent.
 */
export function oomKills(text: string): number {
  const m = /^oom_kill (\d+)$/m.exec(text);
  return m ? Number(m[1]) : 0;
}
