// The write loads of bench:state: a fixed set of keys written once each by `concurrency`
// workers (spread round-robin over the endpoints, retried until acknowledged), and an open-ended
// load that runs until told to stop. Values are slices of one random ASCII pool, so no two
// neighbouring values are alike and LevelDB's block compression gains nothing.
import { randomBytes } from 'node:crypto';
import { percentile, round, log } from './load.js';

export type Put = (endpoint: string, key: string, value: string, timeoutMs: number) => Promise<void>;

/** A write refused in a way that retrying cannot fix (e.g. a quota): ends the benchmark. */
export class FatalWriteError extends Error {}

const POOL = randomBytes(3 * 1024 * 1024).toString('base64'); // 4 MiB of [A-Za-z0-9+/]
const MAX_ATTEMPTS = 60;

/** A value of `bytes` ASCII chars (at most 3 MiB), different for each i. */
export function valueOf(i: number, bytes: number): string {
  const span = POOL.length - bytes;
  const off = Number((BigInt(i) * 2_654_435_761n) % BigInt(span));
  return POOL.slice(off, off + bytes);
}

export interface WriteStats {
  writes: number;
  elapsedMs: number;
  writesPerS: number;
  mibPerS: number;
  p50Ms: number;
  p99Ms: number;
  /** Failed attempts that were retried, by reason. */
  retries: Record<string, number>;
}

interface Options {
  endpoints: () => string[];
  concurrency: number;
  put: Put;
  timeoutMs: number;
  valueBytes: number;
  label: string;
  /** Progress line every this many ms (0: none). */
  progressMs?: number;
  /** Extra text for the progress line (e.g. RSS so far). */
  progressNote?: () => string;
}

async function putWithRetry(o: Options, w: number, key: string, value: string, retries: Record<string, number>): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    const eps = o.endpoints();
    const ep = eps[(w + attempt - 1) % eps.length];
    try {
      await o.put(ep, key, value, o.timeoutMs);
      return;
    } catch (err) {
      if (err instanceof FatalWriteError) throw err;
      const reason = (err as Error).message.slice(0, 80);
      retries[reason] = (retries[reason] ?? 0) + 1;
      if (attempt >= MAX_ATTEMPTS) throw new Error(`${o.label}: ${key} not written after ${attempt} attempts: ${reason}`);
      await new Promise((r) => setTimeout(r, Math.min(2000, 25 * 2 ** Math.min(attempt, 7))));
    }
  }
}

function stats(o: Options, latencies: number[], startedAt: number, retries: Record<string, number>): WriteStats {
  const elapsedMs = performance.now() - startedAt;
  latencies.sort((a, b) => a - b);
  const writesPerS = latencies.length / (elapsedMs / 1000);
  return {
    writes: latencies.length,
    elapsedMs: Math.round(elapsedMs),
    writesPerS: round(writesPerS, 1),
    mibPerS: round((writesPerS * o.valueBytes) / 1048576, 2),
    p50Ms: round(percentile(latencies, 0.5)),
    p99Ms: round(percentile(latencies, 0.99)),
    retries,
  };
}

function progress(o: Options, latencies: number[], startedAt: number, total?: number): NodeJS.Timeout | undefined {
  if (!o.progressMs) return undefined;
  return setInterval(() => {
    const s = (performance.now() - startedAt) / 1000;
    log(`${o.label}: ${latencies.length}${total ? `/${total}` : ''} writes in ${Math.round(s)} s (${Math.round(latencies.length / s)}/s)${o.progressNote ? `; ${o.progressNote()}` : ''}`);
  }, o.progressMs);
}

/** Writes keys 0..count-1 (`keyOf(i)`) once each, `o.valueBytes` chars per value. */
export async function writeKeys(o: Options, count: number, keyOf: (i: number) => string): Promise<WriteStats> {
  const latencies: number[] = [];
  const retries: Record<string, number> = {};
  let next = 0;
  const startedAt = performance.now();
  const timer = progress(o, latencies, startedAt, count);
  try {
    await Promise.all(
      Array.from({ length: o.concurrency }, async (_, w) => {
        for (let i = next++; i < count; i = next++) {
          const t = performance.now();
          await putWithRetry(o, w, keyOf(i), valueOf(i, o.valueBytes), retries);
          latencies.push(performance.now() - t);
        }
      }),
    );
  } finally {
    clearInterval(timer);
  }
  return stats(o, latencies, startedAt, retries);
}

/** Writes new keys until `stop()` is called; resolves with what was written meanwhile. */
export function writeUntilStopped(o: Options, keyOf: (i: number) => string): { stop: () => Promise<WriteStats> } {
  const latencies: number[] = [];
  const retries: Record<string, number> = {};
  let next = 0;
  let stopping = false;
  const startedAt = performance.now();
  let endedAt = 0;
  const timer = progress(o, latencies, startedAt);
  const done = Promise.all(
    Array.from({ length: o.concurrency }, async (_, w) => {
      while (!stopping) {
        const i = next++;
        const t = performance.now();
        await putWithRetry(o, w, keyOf(i), valueOf(i, o.valueBytes), retries);
        if (!stopping) latencies.push(performance.now() - t);
      }
    }),
  );
  // A failure surfaces at stop(); meanwhile it must not be an unhandled rejection.
  done.catch(() => undefined);
  return {
    stop: async () => {
      stopping = true;
      endedAt = performance.now();
      clearInterval(timer);
      await done;
      const s = stats(o, latencies, startedAt, retries);
      const elapsedMs = endedAt - startedAt;
      return { ...s, elapsedMs: Math.round(elapsedMs), writesPerS: round(s.writes / (elapsedMs / 1000), 1), mibPerS: round((s.writes * o.valueBytes) / 1048576 / (elapsedMs / 1000), 2) };
    },
  };
}
