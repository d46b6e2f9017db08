// omni stats (GET /v1/apps/NAME/stats): a sample of CPU and memory of an app's running tasks,
// taken by the node that runs each one through its driver (docker: the engine's stats; process:
// /proc of the task's process group). Each node samples its own tasks concurrently, each within a
// timeout; the node answering the API asks the others over RPC (node/daemon.ts).
import type { TaskDriver } from './drivers/types.js';

/** One task's sample; `error` when it could not be taken, neither figure when the task is not running. */
export interface TaskStatsSample {
  task: string;
  cpuPercent?: number;
  memoryBytes?: number;
  error?: string;
}

/** The driver's sample may take ~1 s (docker's stats wait between two readings). */
export const TASK_STATS_TIMEOUT_MS = 5000;
/** Tasks sampled per node and request (an app's tasks on one node; beyond that, not sampled). */
export const MAX_SAMPLED_TASKS = 256;

/** Samples `tasks` concurrently; never rejects (a failure is that task's `error`). */
export async function sampleTasks(tasks: { id: string; driver: TaskDriver }[], timeoutMs = TASK_STATS_TIMEOUT_MS): Promise<TaskStatsSample[]> {
  return Promise.all(
    tasks.slice(0, MAX_SAMPLED_TASKS).map(async ({ id, driver }): Promise<TaskStatsSample> => {
      let timer: NodeJS.Timeout | undefined;
      try {
        const s = await Promise.race([
          driver.stats(id),
          new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no sample within ${timeoutMs} ms`)), timeoutMs))),
        ]);
        if (!s) return { task: id };
        return { task: id, cpuPercent: Math.round(s.cpuPercent * 10) / 10, memoryBytes: Math.round(s.memoryBytes) };
      } catch (err) {
        return { task: id, error: (err as Error).message.slice(0, 300) };
      } finally {
        clearTimeout(timer);
      }
    }),
  );
}

/** An RPC answer from another node, checked: a list of samples (anything else is dropped). */
export function parseSamples(body: unknown): TaskStatsSample[] {
  if (!Array.isArray(body)) throw new Error('task-stats: expected a list');
  const num = (x: unknown) => (typeof x === 'number' && Number.isFinite(x) && x >= 0 ? x : undefined);
  return body.slice(0, MAX_SAMPLED_TASKS).flatMap((s): TaskStatsSample[] => {
    if (s === null || typeof s !== 'object' || typeof (s as { task?: unknown }).task !== 'string') return [];
    const { task, cpuPercent, memoryBytes, error } = s as Record<string, unknown>;
    const out: TaskStatsSample = { task: (task as string).slice(0, 200) };
    if (num(cpuPercent) !== undefined) out.cpuPercent = num(cpuPercent);
    if (num(memoryBytes) !== undefined) out.memoryBytes = num(memoryBytes);
    if (typeof error === 'string') out.error = error.slice(0, 300);
    return [out];
  });
}
