// The exclusive lease as a file that a task's supervisor outside omnid reads: the process
// wrapper (process-wrapper.sh) and the docker watchdog (lease-watchdog.sh) kill an exclusive
// task once the time in it has passed, so the task stops on time even when omnid is down,
// stopped or frozen. The time is on the host's boot clock (/proc/uptime, centiseconds), the
// one clock both a shell and omnid can read; a missing or unreadable file counts as lapsed.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../files.js';

export const LEASE_FILE_NAME = 'exclusive-lease';

export function leaseFilePath(dataDir: string): string {
  return join(dataDir, LEASE_FILE_NAME);
}

/** Centiseconds since boot (/proc/uptime), or undefined where there is none (not Linux). */
export function uptimeCs(): number | undefined {
  try {
    const m = /^(\d+)\.(\d\d)/.exec(readFileSync('/proc/uptime', 'utf8'));
    return m ? Number(m[1]) * 100 + Number(m[2]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Writes the deadline: `untilMonotonicMs` (performance.now() scale) plus `graceMs` (the agent
 * stops the tasks itself at the lease's end; the supervisor is the backstop), as boot-clock
 * centiseconds. Atomic (a reader never sees half a number). Returns the value written.
 */
export async function writeLeaseFile(dataDir: string, untilMonotonicMs: number, graceMs: number, nowMonotonicMs = performance.now()): Promise<number | undefined> {
  const now = uptimeCs();
  if (now === undefined) return undefined;
  const deadlineCs = now + Math.max(0, Math.floor((untilMonotonicMs + graceMs - nowMonotonicMs) / 10));
  await writeFileAtomic(leaseFilePath(dataDir), `${deadlineCs}\n`, 0o644);
  return deadlineCs;
}
