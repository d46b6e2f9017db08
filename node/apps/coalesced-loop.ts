// A background round that runs every intervalMs and on demand (kick), never two at once, at
// most once per minGapMs however often it is kicked: the shape of the agent's and the
// orchestrator's loops, which are kicked after every applied Raft entry.

import { REAL_CLOCK, type Clock, type TimerHandle } from '../timers.js';

export class CoalescedLoop {
  private timer: TimerHandle | undefined;
  private deferred: TimerHandle | undefined;
  private busy = false;
  private again = false;
  private lastRoundMs = 0;
  private stopped = false;

  constructor(
    private readonly round: () => Promise<void>,
    private readonly opts: { intervalMs: number; minGapMs: number; onError: (err: Error) => void; enabled?: () => boolean; clock?: Clock },
  ) {
    this.clock = opts.clock ?? REAL_CLOCK;
  }

  private readonly clock: Clock;

  start(): void {
    this.timer = this.clock.setInterval(() => this.kick(), this.opts.intervalMs);
    this.kick();
  }

  stop(): void {
    this.stopped = true;
    this.clock.clearInterval(this.timer);
    this.clock.clearTimeout(this.deferred);
  }

  /** Runs a round soon; kicks during a round or within minGapMs coalesce into one. */
  kick(): void {
    if (this.stopped || (this.opts.enabled && !this.opts.enabled())) return;
    const wait = this.lastRoundMs + this.opts.minGapMs - this.clock.now();
    if (wait > 0) {
      this.deferred ??= this.clock.setTimeout(() => ((this.deferred = undefined), this.kick()), wait);
      return;
    }
    if (this.busy) {
      this.again = true;
      return;
    }
    this.busy = true;
    this.lastRoundMs = this.clock.now();
    void this.round()
      .catch((err: Error) => this.opts.onError(err))
      .finally(() => {
        this.busy = false;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  /** Asks for another round right after the current one. */
  requestAgain(): void {
    this.again = true;
  }
}
