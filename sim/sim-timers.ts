// Virtual timers for one simulated node: the real driver's setTimeout/setInterval become events
// in the simulator's queue, scaled by the node's clock rate (drift, a skewed clock).
import type { Clock, TimerHandle, Timers } from '../node/timers.js';

export class SimTimers implements Timers {
  private nextId = 1;
  private readonly live = new Set<number>();

  /** `later` runs fn after delayMs of virtual time (dropped if the node crashed meanwhile). */
  constructor(
    private readonly later: (delayMs: number, fn: () => void) => void,
    private readonly rate: () => number,
  ) {}

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const id = this.nextId++;
    this.live.add(id);
    this.later(ms * this.rate(), () => {
      if (this.live.delete(id)) fn();
    });
    return id;
  }

  clearTimeout(handle: TimerHandle | undefined): void {
    this.live.delete(handle as number);
  }

  setInterval(fn: () => void, ms: number): TimerHandle {
    const id = this.nextId++;
    this.live.add(id);
    const fire = (): void => {
      if (!this.live.has(id)) return;
      this.later(ms * this.rate(), fire);
      fn();
    };
    this.later(ms * this.rate(), fire);
    return id;
  }

  clearInterval(handle: TimerHandle | undefined): void {
    this.live.delete(handle as number);
  }
}

/** Virtual timers plus the virtual wall clock (the simulator's time, from 0 at the start). */
export class SimClock extends SimTimers implements Clock {
  constructor(
    later: (delayMs: number, fn: () => void) => void,
    rate: () => number,
    private readonly nowMs: () => number,
    private readonly monotonic: () => number,
  ) {
    super(later, rate);
  }

  now(): number {
    return this.nowMs();
  }

  monotonicMs(): number {
    return this.monotonic();
  }
}
