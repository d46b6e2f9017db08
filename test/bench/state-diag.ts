// Diagnostic for bench:state (not a benchmark of record): write latency of a 3-node omnid
// cluster on loopback by value size and by target (leader only / followers only), c=16 for a
// few seconds each. Shows whether a write waits for something (a tick, a timer) rather than
// for CPU or disk. Usage: node --import tsx test/bench/state-diag.ts [--duration-ms 4000] [--sizes 16,64,65,256,1024]
import { parseArgs } from 'node:util';
import { LocalCluster, waitFor } from '../../node/local-cluster.js';
import type { StatusView } from '../../cli/omni/status.js';
import { Http, log } from './load.js';
import { writeUntilStopped } from './state-load.js';

const { values } = parseArgs({ options: { 'duration-ms': { type: 'string' }, sizes: { type: 'string' }, concurrency: { type: 'string' }, flags: { type: 'string' } } });
const DURATION_MS = Number(values['duration-ms'] ?? 4000);
const SIZES = (values.sizes ?? '16,64,65,256,1024').split(',').map(Number);
const CONCURRENCY = Number(values.concurrency ?? 16);

const c = await LocalCluster.create({ flags: values.flags ? values.flags.split(' ') : [] });
const http = new Http();
const auth = () => ({ authorization: `Bearer ${c.adminToken}` });
const status = async (name: string): Promise<StatusView> => JSON.parse((await http.call(`${c.nodes.get(name)!.apiUrl}/v1/status`, 'GET', undefined, auth())).body) as StatusView;
process.once('SIGINT', () => void c.destroy().then(() => process.exit(130)));
try {
  await c.init('d1');
  await c.join('d2');
  await c.join('d3');
  await waitFor('formed', async () => {
    const s = await status('d3');
    return s.voters.length === 3 && s.rootRetired && s.health === 'healthy' && s.leader;
  }, 60_000, 50);
  const leader = (await status('d1')).leader!;
  const followers = ['d1', 'd2', 'd3'].filter((n) => n !== leader);
  const put = async (ep: string, key: string, value: string, timeoutMs: number) => {
    const r = await http.call(`${ep}/v1/kv/${encodeURIComponent(key)}`, 'PUT', { value }, auth(), timeoutMs);
    if (r.status !== 200) throw new Error(`HTTP ${r.status} ${r.body.slice(0, 100)}`);
  };
  console.log(`leader ${leader}; c=${CONCURRENCY}; ${DURATION_MS} ms each`);
  for (const target of ['leader', 'followers'] as const) {
    const eps = (target === 'leader' ? [leader] : followers).map((n) => c.nodes.get(n)!.apiUrl);
    for (const size of SIZES) {
      const w = writeUntilStopped({ endpoints: () => eps, concurrency: CONCURRENCY, put, timeoutMs: 10_000, valueBytes: size, label: `${target} ${size}` }, (i) => `diag/${target}/${size}/${i}`);
      await new Promise((r) => setTimeout(r, DURATION_MS));
      const s = await w.stop();
      console.log(`${target.padEnd(9)} value ${String(size).padStart(5)} chars: ${String(s.writesPerS).padStart(7)} writes/s  p50 ${s.p50Ms} ms  p99 ${s.p99Ms} ms`);
    }
  }
} catch (err) {
  for (const n of c.nodes.values()) log(`--- ${n.name}:\n${n.lines.slice(-15).join('\n')}`);
  throw err;
} finally {
  http.close();
  await c.destroy();
}
