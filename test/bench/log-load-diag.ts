// Diagnostic (not a benchmark of record): the cost of loading a node's Raft log at start.
// Writes 64 MiB of kv.put entries with VALUE_BYTES values into a RaftStorage data dir (unless
// `skip` is given: reuse DIR), then opens it and times RaftStorage.load().
// Usage: node --import tsx test/bench/log-load-diag.ts DIR VALUE_BYTES [skip]
import { RaftStorage } from '../../node/raft/raft-storage.js';
import { EntryType } from '../../protocol/raft/types.js';
import { encodeCommand } from '../../protocol/cluster/state.js';
const dir = process.argv[2]; const vb = Number(process.argv[3]); const total = 64 * 2 ** 20;
if (!process.argv[4]) {
  const s = await RaftStorage.open(dir);
  await s.load();
  const n = Math.floor(total / vb); let idx = 0;
  for (let b = 0; b < n; b += 64) {
    const es = [];
    for (let i = 0; i < 64 && b + i < n; i++) es.push({ term: 1, index: ++idx, type: EntryType.Normal, data: encodeCommand({ type: 'kv.put', key: `k/${idx}`, value: 'x'.repeat(vb) }) });
    await s.save({ entries: es }, false);
  }
  await s.close();
}
const t0 = performance.now(); const c0 = process.cpuUsage();
const s2 = await RaftStorage.open(dir); const t1 = performance.now();
const p = await s2.load(); const t2 = performance.now(); const c = process.cpuUsage(c0);
console.log(`vb ${vb}: open ${Math.round(t1 - t0)} ms, load ${p.entries.length} entries ${Math.round(t2 - t1)} ms, cpu ${Math.round((c.user + c.system) / 1000)} ms, rss ${Math.round(process.memoryUsage().rss / 2 ** 20)} MiB`);
await s2.close();
