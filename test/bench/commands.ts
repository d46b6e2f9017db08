// Encode + decode cost and size of typical cluster commands (issue 12: commands in protobuf).
//   node --import tsx test/bench/commands.ts [path to protocol/cluster/commands.ts]
// Prints, per command: encoded bytes, and microseconds per encodeCommand + decodeCommand
// (median of 7 runs; the host is shared, so the figures are noisy).
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const target = resolve(process.argv[2] ?? new URL('../../protocol/cluster/commands.ts', import.meta.url).pathname);
const mod = (await import(pathToFileURL(target).href)) as typeof import('../../protocol/cluster/commands.js');
const { encodeCommand, decodeCommand } = mod;
type Command = import('../../protocol/cluster/commands.js').Command;

/** A task plan as the orchestrator writes it: app record, 3 task records, sched guards. */
function taskPlan(): Command {
  const now = 1_764_000_000_000;
  const app = {
    name: 'web', version: 3, previousVersion: 2, latestVersion: 3, state: 'running',
    deploy: { status: 'deploying', fromVersion: 2, startedAtMs: now, message: 'rolling update 2 → 3' },
    pending: '', events: Array.from({ length: 8 }, (_, i) => ({ atMs: now + i, message: `placed task web-${i} on node-${i % 3} ("zone": "eu-1")` })),
  };
  const ops: ({ op: 'put'; key: string; value: string } | { op: 'delete'; key: string })[] = [{ op: 'put', key: 'apps/web', value: JSON.stringify(app) }];
  const compares: { key: string; version: number }[] = [{ key: 'apps/web', version: 7 }];
  for (let i = 0; i < 3; i++) {
    const task = { id: `web-3-${i}-a1b2c3d4`, app: 'web', version: 3, nodeId: `12D3KooWNode${i}AbCdEfGhIjKlMnOpQrStUvWxYz`, hostPorts: [20000 + i], desired: 'run', createdAtMs: now, stopReason: '' };
    ops.push({ op: 'put', key: `tasks/${task.id}`, value: JSON.stringify(task) });
    ops.push({ op: 'put', key: `sched/nodes/${task.nodeId}`, value: String(now) });
    compares.push({ key: `sched/nodes/${task.nodeId}`, version: 41 + i });
  }
  ops.push({ op: 'delete', key: 'tasks/web-2-0-deadbeef' });
  ops.push({ op: 'delete', key: 'taskstatus/web-2-0-deadbeef' });
  return { type: 'kv.txn', compares, ops };
}

const kvPut1k: Command = { type: 'kv.put', key: 'config/service/web', value: JSON.stringify({ blob: 'x'.repeat(1000) }).slice(0, 1024) };
const nodeStatus: Command = { type: 'node.status', id: '12D3KooWNode1AbCdEfGhIjKlMnOpQrStUvWxYz', status: 'down', reason: 'heartbeat lost' };

function bench(name: string, c: Command): void {
  const bytes = encodeCommand(c);
  const check = decodeCommand(bytes);
  if (!check.ok) throw new Error(`${name}: ${check.error.message}`);
  const n = 20_000;
  const runs: number[] = [];
  for (let r = 0; r < 7; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) {
      const d = decodeCommand(encodeCommand(c));
      if (!d.ok) throw new Error('decode failed');
    }
    runs.push(Number(process.hrtime.bigint() - t0) / 1000 / n);
  }
  runs.sort((a, b) => a - b);
  const dec: number[] = [];
  for (let r = 0; r < 7; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) if (!decodeCommand(bytes).ok) throw new Error('decode failed');
    dec.push(Number(process.hrtime.bigint() - t0) / 1000 / n);
  }
  dec.sort((a, b) => a - b);
  console.log(`${name.padEnd(28)} ${String(bytes.byteLength).padStart(6)} bytes   encode+decode ${runs[3].toFixed(2)} µs (min ${runs[0].toFixed(2)})   decode ${dec[3].toFixed(2)} µs (min ${dec[0].toFixed(2)})`);
}

console.log(`commands from ${target}`);
bench('kv.txn task plan (3 tasks)', taskPlan());
bench('kv.put 1 KiB', kvPut1k);
bench('node.status', nodeStatus);
