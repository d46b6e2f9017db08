// `npm run bench:raft`: committed proposals per CPU-second of the Raft core in an in-memory
// 3- and 5-node cluster (no disk, no network), and simulator seeds per second.
// Prints a table, then one JSON object as the last line. Never asserted in tests.

import { MemoryCluster } from '../../sim/memory-cluster.js';
import { runSeed } from '../../sim/simulation.js';

function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

function commitsPerCpuSecond(nodes: number, proposals: number, batch: number): number {
  const ids = Array.from({ length: nodes }, (_, i) => `n${i + 1}`);
  const cluster = new MemoryCluster(ids, { seed: 1, maxInflightMsgs: 256 });
  const leader = cluster.electLeader();
  const payload = new TextEncoder().encode('x'.repeat(64));
  const startCommit = leader.log.committed;
  const t0 = cpuMs();
  for (let sent = 0; sent < proposals; sent += batch) {
    for (let i = 0; i < batch; i++) {
      const r = leader.propose(payload);
      if (!r.ok) throw new Error(`proposal refused: ${r.code}`);
    }
    cluster.stabilize();
    // keep the log bounded like a real node would
    if (leader.log.applied - leader.log.snapshot.meta.index > 50_000) for (const id of ids) cluster.compact(id);
  }
  const elapsedMs = cpuMs() - t0;
  const committed = leader.log.committed - startCommit;
  if (committed < proposals) throw new Error(`only ${committed} of ${proposals} committed`);
  return Math.round((committed / elapsedMs) * 1000);
}

async function simSeedsPerSecond(seeds: number): Promise<{ perS: number; virtualS: number }> {
  const t0 = Date.now();
  let virtualMs = 0;
  for (let s = 1; s <= seeds; s++) virtualMs += (await runSeed(100_000 + s)).virtualMs;
  const wallS = (Date.now() - t0) / 1000;
  return { perS: Math.round((seeds / wallS) * 10) / 10, virtualS: Math.round(virtualMs / 1000) };
}

const proposals = Number(process.env.BENCH_PROPOSALS ?? 200_000);
const batch = 64;
const c3 = commitsPerCpuSecond(3, proposals, batch);
const c5 = commitsPerCpuSecond(5, proposals, batch);
const c3unbatched = commitsPerCpuSecond(3, Math.min(proposals, 50_000), 1);
const sim = await simSeedsPerSecond(Number(process.env.BENCH_SEEDS ?? 200));

console.log('Raft core, in memory (no disk, no network), 64-byte proposals:');
console.log(`  3 nodes, batches of ${batch}:  ${c3.toLocaleString('en')} commits per CPU-second`);
console.log(`  5 nodes, batches of ${batch}:  ${c5.toLocaleString('en')} commits per CPU-second`);
console.log(`  3 nodes, one at a time:    ${c3unbatched.toLocaleString('en')} commits per CPU-second`);
console.log(`Simulator: ${sim.perS} seeds/s (${sim.virtualS} virtual seconds simulated)`);
console.log(
  JSON.stringify({
    commits_per_cpu_s_3: c3,
    commits_per_cpu_s_5: c5,
    commits_per_cpu_s_3_unbatched: c3unbatched,
    sim_seeds_per_s: sim.perS,
  }),
);
