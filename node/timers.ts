// The timers a component runs on. Production passes the process's own; the simulator passes
// virtual ones driven by its event queue, so the same code runs under simulated time.

/** Whatever a Timers implementation returns to identify a timer. */
export type TimerHandle = unknown;

export interface Timers {
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle | undefined): void;
  setInterval(fn: () => void, ms: number): TimerHandle;
  clearInterval(handle: TimerHandle | undefined): void;
}

export const REAL_TIMERS: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout | undefined),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (h) => clearInterval(h as NodeJS.Timeout | undefined),
};

/** Timers and the wall clock: what a component that plans by time needs. */
export interface Clock extends Timers {
  /** Milliseconds since the epoch (Date.now() in production, virtual in the simulator); can step. */
  now(): number;
  /** Milliseconds on a clock that never steps (performance.now()): for durations and deadlines. */
  monotonicMs(): number;
}

export const REAL_CLOCK: Clock = { ...REAL_TIMERS, now: () => Date.now(), monotonicMs: () => performance.now() };
