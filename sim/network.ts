// A seeded, lossy network between simulated endpoints (nodes and clients).
// Every send draws from the seeded RNG: drop, delay (reordering falls out of random delays),
// duplicate. Partitions block directed links, so they can be symmetric or asymmetric.

import type { Rng } from '../protocol/rng.js';

export interface NetworkKnobs {
  dropRate: number;
  duplicateRate: number;
  minDelayMs: number;
  maxDelayMs: number;
  /** Occasionally a message is held much longer (e.g. a retransmission after a stall). */
  longDelayRate: number;
  longDelayMs: number;
}

export const CALM_NETWORK: NetworkKnobs = {
  dropRate: 0,
  duplicateRate: 0,
  minDelayMs: 1,
  maxDelayMs: 5,
  longDelayRate: 0,
  longDelayMs: 0,
};

export class SimNetwork {
  private blocked = new Set<string>();
  knobs: NetworkKnobs;
  sent = 0;
  dropped = 0;

  constructor(
    private readonly rng: Rng,
    knobs: NetworkKnobs,
  ) {
    this.knobs = knobs;
  }

  /** Delivery delays (ms) for one send: [] if dropped, two values if duplicated. */
  plan(from: string, to: string): number[] {
    this.sent++;
    if (this.isBlocked(from, to) || this.rng.next() < this.knobs.dropRate) {
      this.dropped++;
      return [];
    }
    const out = [this.delay()];
    if (this.rng.next() < this.knobs.duplicateRate) out.push(this.delay());
    return out;
  }

  private delay(): number {
    const k = this.knobs;
    let d = k.minDelayMs + this.rng.next() * (k.maxDelayMs - k.minDelayMs);
    if (this.rng.next() < k.longDelayRate) d += this.rng.next() * k.longDelayMs;
    return d;
  }

  isBlocked(from: string, to: string): boolean {
    return this.blocked.has(`${from}>${to}`);
  }

  block(from: string, to: string): void {
    this.blocked.add(`${from}>${to}`);
  }

  /** Cuts every link between group a and group b (both directions). */
  split(a: string[], b: string[]): void {
    for (const x of a) for (const y of b) {
      this.block(x, y);
      this.block(y, x);
    }
  }

  /** Whether any link is cut now. */
  get partitioned(): boolean {
    return this.blocked.size > 0;
  }

  heal(): void {
    this.blocked.clear();
  }

  describePartition(): string {
    return this.blocked.size === 0 ? 'none' : [...this.blocked].sort().join(' ');
  }
}
