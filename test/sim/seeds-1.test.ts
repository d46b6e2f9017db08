// Simulator seeds 1..150 (of the 300 that `npm test` runs): no safety violation,
// no liveness failure, every client history linearizable.

import { expect, it } from 'vitest';
import { describe as describeFailure, runRange } from './seeds.js';

it('seeds 1..150 hold every invariant and stay live', async () => {
  const { failures, ops } = await runRange(1, 150);
  expect(failures.map(describeFailure)).toEqual([]);
  expect(ops).toBeGreaterThan(150 * 20); // the clients really did work
});
