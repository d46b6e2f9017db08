// Garbage collection on a schedule, and the catch-up of a node that missed a run.
//
// - The leader runs a garbage collection every `omnid --registry-gc-every` (default 6 h; off: never)
//   with the saved policy (grace period, retention: node/registry/gc.ts), counted from the last
//   real run the cluster recorded (registry/gc-last), whoever ran it: a new leader does not run
//   again at once, and a manual run postpones the next scheduled one. With no run recorded yet,
//   the interval counts from when this node became leader. A failed run is tried again after a
//   tenth of the interval (at least a minute).
// - Every node checks, a few seconds after it starts and then every minute, whether a run was
//   recorded after the last one it swept after; if so (it was down, or cut off, during that run) it
//   sweeps its own copies with that run's options.
import type { Logger } from '../logger.js';
import { LEADER_DUTY } from '../cluster/caller.js';
import { gcDue } from '../../protocol/registry/gc.js';
import { effectiveGcOptions, type RegistryGc } from './gc.js';

export const DEFAULT_GC_EVERY_MS = 6 * 60 * 60 * 1000;
/** How often the leader looks whether a run is due (shorter for short intervals). */
const MAX_CHECK_MS = 60_000;
/** The first catch-up check after start, and how often after that (and after a failed one). */
const CATCH_UP_FIRST_MS = 3_000;
const CATCH_UP_EVERY_MS = 60_000;
const CATCH_UP_RETRY_MS = 5_000;

export interface GcScheduleDeps {
  gc: RegistryGc;
  isLeader(): boolean;
  log: Logger;
  /** Interval between runs (0: no scheduled runs; catch-up still happens). */
  everyMs: number;
}

export interface GcScheduleStatus {
  everyMs: number;
  /** When the next run is due (undefined: off, or not the leader). */
  nextAtMs?: number;
  lastError?: string;
}

export class GcSchedule {
  private checkTimer: NodeJS.Timeout | undefined;
  private catchUpTimer: NodeJS.Timeout | undefined;
  private leaderSinceMs: number | undefined;
  private lastAttemptMs: number | undefined;
  private lastError: string | undefined;
  private stopped = false;

  constructor(private readonly d: GcScheduleDeps) {}

  start(): void {
    if (this.d.everyMs > 0) {
      this.checkTimer = setInterval(() => void this.check(), Math.max(1000, Math.min(MAX_CHECK_MS, Math.floor(this.d.everyMs / 4))));
      this.checkTimer.unref();
    }
    this.scheduleCatchUp(CATCH_UP_FIRST_MS);
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.checkTimer);
    clearTimeout(this.catchUpTimer);
  }

  /** The schedule as the leader sees it (undefined off the leader). */
  status(nowMs = Date.now()): GcScheduleStatus | undefined {
    if (!this.d.isLeader()) return undefined;
    if (this.d.everyMs <= 0) return { everyMs: 0 };
    const next = this.nextAtMs(nowMs);
    return { everyMs: this.d.everyMs, ...(next !== undefined ? { nextAtMs: next } : {}), ...(this.lastError ? { lastError: this.lastError } : {}) };
  }

  private nextAtMs(nowMs: number): number | undefined {
    return gcDue({ nowMs, everyMs: this.d.everyMs, lastRunAtMs: this.d.gc.lastRun()?.atMs, leaderSinceMs: this.leaderSinceMs ?? nowMs, lastAttemptMs: this.lastAttemptMs }).nextAtMs;
  }

  /** One look at the schedule (exposed for tests): runs a garbage collection when one is due. */
  async check(nowMs = Date.now()): Promise<boolean> {
    if (!this.d.isLeader()) {
      this.leaderSinceMs = undefined;
      this.lastAttemptMs = undefined;
      return false;
    }
    this.leaderSinceMs ??= nowMs;
    const due = gcDue({ nowMs, everyMs: this.d.everyMs, lastRunAtMs: this.d.gc.lastRun()?.atMs, leaderSinceMs: this.leaderSinceMs, lastAttemptMs: this.lastAttemptMs });
    if (!due.due || this.d.gc.busy) return false;
    this.lastAttemptMs = nowMs;
    try {
      const o = effectiveGcOptions({ dryRun: false }, this.d.gc.policy());
      const r = await this.d.gc.run(o, LEADER_DUTY, true);
      const failed = r.nodes.filter((n) => n.error);
      this.lastError = failed.length ? `sweep failed on ${failed.map((n) => n.node).join(', ')}` : undefined;
      return true;
    } catch (err) {
      this.lastError = (err as Error).message.slice(0, 300);
      this.d.log.warn(`registry gc: the scheduled run failed: ${this.lastError}`);
      return false;
    }
  }

  private scheduleCatchUp(ms: number): void {
    if (this.stopped) return;
    this.catchUpTimer = setTimeout(() => {
      this.d.gc.catchUp().then(
        () => this.scheduleCatchUp(CATCH_UP_EVERY_MS),
        (err: Error) => {
          this.d.log.debug(`registry gc: catch-up sweep not done yet: ${err.message}`);
          this.scheduleCatchUp(CATCH_UP_RETRY_MS);
        },
      );
    }, ms);
    this.catchUpTimer.unref();
  }
}
