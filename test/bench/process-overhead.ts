// `npm run bench:process-overhead`: what each process task costs beyond the task itself.
// Starts N (BENCH_TASKS, default 20) `sleep 1000` tasks through the ProcessDriver, then sums
// the memory of the processes the driver added per task: every process of a task's process
// group except the task's own (found from /proc: a task's process runs in <taskDir>/work, and the
// rest of its group — the group leader — is the driver's supervisor/wrapper). Also shows the
// growth of this (driver) process's RSS, which holds the log pumps. Prints figures, then one
// JSON line. Asserts nothing. Linux only (/proc).
import { readdirSync, readlinkSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ProcessDriver } from '../../node/apps/drivers/process.js';
import type { TaskConfig } from '../../node/apps/drivers/types.js';
import { procKeyNumbers, procStatFields } from './load.js';

const TASKS = Number(process.env.BENCH_TASKS ?? 20);
/** Let the supervisors finish starting up (a Node one keeps growing for a moment). */
const SETTLE_MS = 1500;

interface Mem {
  rssKb: number;
  anonKb: number;
}

function memOf(pid: number | 'self'): Mem {
  const kb = procKeyNumbers(`/proc/${pid}/status`);
  return { rssKb: kb.get('VmRSS') ?? 0, anonKb: kb.get('RssAnon') ?? 0 };
}

function pgrpOf(pid: number): number | undefined {
  try {
    return Number(procStatFields(pid)[2]);
  } catch {
    return undefined;
  }
}

function pids(): number[] {
  return readdirSync('/proc').filter((n) => /^\d+$/.test(n)).map(Number);
}

/** The task processes (cwd in the task's work dir) and the other members of their groups. */
function classify(workDirs: Set<string>): { task: number[]; overhead: number[] } {
  const all = pids();
  const taskPids = new Set<number>();
  const groups = new Set<number>();
  for (const pid of all) {
    let cwd: string;
    try {
      cwd = readlinkSync(`/proc/${pid}/cwd`);
    } catch {
      continue;
    }
    if (!workDirs.has(cwd)) continue;
    const g = pgrpOf(pid);
    if (g === undefined) continue;
    groups.add(g);
    // the group leader is the driver's, whatever its cwd; the rest run the task's command
    if (pid !== g) taskPids.add(pid);
  }
  const overhead = all.filter((pid) => !taskPids.has(pid) && groups.has(pgrpOf(pid) ?? -1));
  return { task: [...taskPids], overhead };
}

function sum(list: number[]): Mem {
  const out = { rssKb: 0, anonKb: 0 };
  for (const pid of list) {
    try {
      const m = memOf(pid);
      out.rssKb += m.rssKb;
      out.anonKb += m.anonKb;
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

const dataDir = await mkdtemp(join(tmpdir(), 'omni-bench-process-'));
const d = new ProcessDriver(dataDir);
const selfBefore = memOf('self');
const ids: string[] = [];
try {
  for (let i = 0; i < TASKS; i++) {
    const cfg: TaskConfig = { taskId: `bench-${i}`, app: 'bench', version: 1, command: ['sleep', '1000'], env: {}, ports: [], volumes: [], cpu: 0, memoryBytes: 0, labels: {} };
    await d.start(cfg);
    ids.push(cfg.taskId);
  }
  await sleep(SETTLE_MS);
  const workDirs = new Set(ids.map((id) => join(dataDir, 'tasks', id, 'work')));
  const { task, overhead } = classify(workDirs);
  const sup = sum(overhead);
  const tasks = sum(task);
  const selfAfter = memOf('self');
  const perTaskKb = Math.round(sup.rssKb / TASKS);
  const perTaskAnonKb = Math.round(sup.anonKb / TASKS);
  const driverGrowthKb = selfAfter.rssKb - selfBefore.rssKb;
  console.log(`${TASKS} process tasks (sleep 1000): ${task.length} task processes using ${tasks.rssKb} kB RSS`);
  console.log(`supervisor processes: ${overhead.length}, ${sup.rssKb} kB RSS (${sup.anonKb} kB anonymous) in all`);
  console.log(`per task: ${perTaskKb} kB RSS, ${perTaskAnonKb} kB anonymous (goal < 5120 kB RSS)`);
  console.log(`driver process RSS growth while starting them: ${driverGrowthKb} kB (${Math.round(driverGrowthKb / TASKS)} kB per task; noisy)`);
  console.log(
    JSON.stringify({
      tasks: TASKS,
      supervisor_processes: overhead.length,
      supervisor_rss_kb_total: sup.rssKb,
      supervisor_rss_kb_per_task: perTaskKb,
      supervisor_anon_kb_per_task: perTaskAnonKb,
      driver_rss_growth_kb: driverGrowthKb,
    }),
  );
} finally {
  for (const id of ids) await d.destroy(id).catch(() => undefined);
  await rm(dataDir, { recursive: true, force: true });
}
