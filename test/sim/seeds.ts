// Shared helpers for the simulator tests: run a range of seeds and describe failures.

import { runSeed, type SimBug, type SimResult } from '../../sim/simulation.js';

export async function runSeeds(seeds: Iterable<number>): Promise<{ failures: SimResult[]; ops: number; checkTimeouts: number }> {
  const failures: SimResult[] = [];
  let ops = 0;
  let checkTimeouts = 0;
  for (const seed of seeds) {
    const r = await runSeed(seed);
    ops += r.ops;
    if (r.checkTimedOut) checkTimeouts++;
    if (!r.ok) failures.push(r);
  }
  return { failures, ops, checkTimeouts };
}

export function runRange(from: number, count: number): Promise<{ failures: SimResult[]; ops: number; checkTimeouts: number }> {
  return runSeeds(Array.from({ length: count }, (_, i) => from + i));
}

export async function firstCatch(bug: SimBug, maxSeeds: number): Promise<SimResult | undefined> {
  const bugs = new Set([bug]);
  for (let seed = 1; seed <= maxSeeds; seed++) {
    const r = await runSeed(seed, bugs);
    if (r.violation) return r;
  }
  return undefined;
}

export function describe(r: SimResult): string {
  return `seed ${r.seed}: ${r.violation ?? r.livenessFailure}\n${r.trace.slice(-60).join('\n')}\nreplay: npm run sim -- --seed ${r.seed}`;
}
