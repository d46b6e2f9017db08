// Diagnostic for bench:state (not a benchmark of record): the cost of a node's kv state without
// a cluster. Writes --keys kv records (1 KiB values, spilled to `v/` rows as omnid does) into a
// RaftStorage data dir through ClusterState and saveState, then loads it back the way a start does
// (RaftStorage.streamState into ClusterState.rowsReader) and prints the time of each
// step and the heap the loaded state holds (after a full GC; run with --expose-gc).
// Usage: node --expose-gc --import tsx test/bench/state-load-diag.ts [--keys 524288] [--dir DIR (kept; reused when it exists)] [--load-only]
import { parseArgs } from 'node:util';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RaftStorage } from '../../node/raft/raft-storage.js';
import { ClusterState, encodeCommand } from '../../protocol/cluster/state.js';
import { DEFAULT_STATE_OPTIONS } from '../../node/raft/raft-node.js';

const { values } = parseArgs({ options: { keys: { type: 'string' }, dir: { type: 'string' }, 'load-only': { type: 'boolean' }, rounds: { type: 'string' } } });
const KEYS = Number(values.keys ?? 524_288);
const dir = values.dir ?? mkdtempSync(join(tmpdir(), 'omni-state-load-diag-'));
const gc = (globalThis as { gc?: () => void }).gc;
const heapMib = () => {
  gc?.();
  gc?.();
  const m = process.memoryUsage();
  return `heapUsed ${(m.heapUsed / 2 ** 20).toFixed(1)} MiB, external ${(m.external / 2 ** 20).toFixed(1)} MiB, arrayBuffers ${(m.arrayBuffers / 2 ** 20).toFixed(1)} MiB, rss ${(m.rss / 2 ** 20).toFixed(1)} MiB`;
};

if (!values['load-only'] && !existsSync(join(dir, 'CURRENT'))) {
  const storage = await RaftStorage.open(dir);
  const s = new ClusterState(DEFAULT_STATE_OPTIONS);
  const value = 'x'.repeat(1000);
  const t0 = performance.now();
  let index = 0;
  for (let i = 0; i < KEYS; i++) {
    s.apply(++index, encodeCommand({ type: 'kv.put', key: `state/small/${String(i).padStart(8, '0')}`, value: `${i}${value}` }));
    if (i % 2000 === 1999 || i === KEYS - 1) await storage.saveState(s.takeChangedRows(), s.appliedIndex, false);
  }
  await storage.close();
  console.log(`wrote ${KEYS} keys in ${Math.round(performance.now() - t0)} ms to ${dir}`);
}

console.log(`before load: ${heapMib()}`);
for (let round = 0; round < Number(values.rounds ?? 1); round++) {
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const storage = await RaftStorage.open(dir);
  const t1 = performance.now();
  const stored = await storage.streamState();
  const reader = ClusterState.rowsReader(stored!.appliedIndex, DEFAULT_STATE_OPTIONS);
  let rows = 0;
  for await (const batch of stored!.batches) {
    rows += batch.length;
    reader.add(batch);
  }
  const state = reader.finish();
  const t3 = performance.now();
  const cpu = process.cpuUsage(cpu0);
  console.log(`open ${Math.round(t1 - t0)} ms, read ${rows} rows into ${state.kvCount()} kv records in ${Math.round(t3 - t1)} ms (CPU ${Math.round((cpu.user + cpu.system) / 1000)} ms)`);
  if (state.hasChangedRows) {
    // Rows of an older format: converted as RaftNode.open does.
    const rows = state.takeChangedRows();
    await storage.saveState(rows, state.appliedIndex, true);
    console.log(`converted: ${rows.size} rows written or deleted in ${Math.round(performance.now() - t3)} ms`);
  }
  console.log(`state loaded: ${heapMib()}`);
  await storage.close();
  (globalThis as { keep?: unknown }).keep = state;
}
if (!values.dir) rmSync(dir, { recursive: true, force: true });
