// Seeds of the 10,000-seed runs that once found a bug, kept as regressions (each replays with
// `npm run sim -- --seed N`): no safety violation, no liveness failure.
//   6902, 7522, 9062, 9562 — the leader's quota gate judged a large put against its key's
//   applied (large) value while a smaller write of the same key was still in flight, so the
//   state passed the quota once both applied (node/cluster/writes.ts, pendingKeys).
import { expect, it } from 'vitest';
import { runSeed } from '../../sim/simulation.js';
import { describe as describeFailure } from './seeds.js';

it('seeds that once found a bug hold every invariant and stay live', async () => {
  const failures = [];
  for (const seed of [6902, 7522, 9062, 9562]) {
    const r = await runSeed(seed);
    if (!r.ok) failures.push(r);
  }
  expect(failures.map(describeFailure)).toEqual([]);
});
