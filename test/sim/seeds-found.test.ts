// Seeds of the 10,000-seed runs that once found a bug, kept as regressions (each replays with
// `npm run sim -- --seed N`): no safety violation, no liveness failure.
//   6902, 7522, 9062, 9562 — the leader's quota gate judged a large put against its key's
//   applied (large) value while a smaller write of the same key was still in flight, so the
//   state passed the quota once both applied (node/cluster/writes.ts, pendingKeys).
//   7752 — a bug of the simulator's liveness probe, not of Omni: writes committed again and again
//   after the heal, but with slow disks and applies each answer came after the probe's fixed
//   150 ms timeout; the probe now backs off as a real client does (clientAttemptTimeoutMs).
//   1022 — also the probe's: the cluster committed its write within 0.4 s of the heal, but the
//   probe's next six attempts went to n6 and n7, started and never added, which have no leader
//   and hold a write until its 10 s deadline; the probe now asks the configuration's members.
import { expect, it } from 'vitest';
import { describe as describeFailure, runSeeds } from './seeds.js';

it('seeds that once found a bug hold every invariant and stay live', async () => {
  const { failures } = await runSeeds([1022, 6902, 7522, 7752, 9062, 9562]);
  expect(failures.map(describeFailure)).toEqual([]);
});
