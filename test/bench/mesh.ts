// `npm run bench:mesh [-- --mib 128] [--rtts 2000] [--connects 200] [--streams 4]`: what the
// service mesh's proxy costs (issue 17, item 4). A 3-node loopback cluster; one app with an echo
// port and a sink port (a Node TCP server, process driver) pinned to n1, both published. Three
// paths to the same task, measured in the same run:
//   - direct:  the task's host port (no proxy: the baseline);
//   - local:   n1's published port — the node's proxy, replica on the same node (one more hop);
//   - tunnel:  n3's published port — n3's proxy, then /omni/tunnel over the cluster's libp2p
//              connection (private-network cipher + noise) to n1, then the task;
//   - socat:   Debian's `socat` relaying to the task's port (a plain userspace TCP proxy, no
//              encryption), when it is installed: a reference for "one userspace hop".
// For each: one-stream throughput (MIB written and counted by the sink), the aggregate of
// STREAMS streams at once, 1-byte echo round trips on an open connection (p50/p99), and new
// connection → first echoed byte (p50/p99); CPU time of all omnid processes per MiB for the
// streamed paths. Human lines first, one JSON object as the last line. Never asserted in tests.
import { parseArgs } from 'node:util';
import { connect, type Socket } from 'node:net';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { formCluster } from '../cluster/helpers.js';
import { waitFor } from '../../node/local-cluster.js';
import { cpuMsOf, percentile, round, log, freePorts } from './load.js';

const { values } = parseArgs({ options: { mib: { type: 'string' }, rtts: { type: 'string' }, connects: { type: 'string' }, streams: { type: 'string' }, help: { type: 'boolean' } } });
if (values.help) {
  process.stdout.write('usage: npm run bench:mesh [-- --mib 128 (per throughput run)] [--rtts 2000] [--connects 200] [--streams 4]\n');
  process.exit(0);
}
const MIB = Number(values.mib ?? 128);
const RTTS = Number(values.rtts ?? 2000);
const CONNECTS = Number(values.connects ?? 200);
const STREAMS = Number(values.streams ?? 4);
if (!(MIB >= 1 && RTTS >= 10 && CONNECTS >= 10 && STREAMS >= 1)) throw new Error('--mib ≥ 1, --rtts ≥ 10, --connects ≥ 10, --streams ≥ 1');

// echo: every byte back; sink: counts what it gets and, when the client half-closes, answers the count.
const SERVER = `
const net = require('net');
net.createServer((s) => s.pipe(s)).listen(Number(process.env.OMNI_PORT_ECHO), '127.0.0.1');
net.createServer({ allowHalfOpen: true }, (s) => { let n = 0; s.on('data', (b) => (n += b.length)); s.on('end', () => s.end(String(n))); }).listen(Number(process.env.OMNI_PORT_SINK), '127.0.0.1');
`;

const NODE_INDEX: Record<string, number> = { n1: 1, n2: 2, n3: 3 };
const PUBLISH_ECHO = 34_000 + Math.floor(Math.random() * 4000) * 2;
const PUBLISH_SINK = PUBLISH_ECHO + 1;
const OFFSET = (n: string) => NODE_INDEX[n] * 11;

function open(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, noDelay: true }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Writes `bytes` to the sink at `port`, half-closes and waits for its count. */
async function sinkOnce(port: number, bytes: number): Promise<void> {
  const s = await open(port);
  const chunk = Buffer.alloc(256 * 1024, 7);
  const answer = new Promise<string>((resolve, reject) => {
    let text = '';
    s.on('data', (b: Buffer) => (text += b.toString()));
    s.on('end', () => resolve(text));
    s.on('error', reject);
  });
  answer.catch(() => undefined); // awaited below; a reset while writing ends the writes first
  let left = bytes;
  try {
    while (left > 0) {
      const n = Math.min(left, chunk.length);
      left -= n;
      if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) await Promise.race([new Promise((r) => s.once('drain', r)), answer]);
    }
    s.end();
  } catch {
    // the answer says why
  }
  const got = Number(await answer.finally(() => s.destroy()));
  if (got !== bytes) throw new Error(`the sink counted ${got} bytes of ${bytes}`);
}

interface Throughput {
  mibPerS: number;
  mibPerS_streams: number;
  mibPerCpuS?: number;
}

async function throughput(port: number, pids: () => number[]): Promise<Throughput> {
  await sinkOnce(port, 4 * 1024 * 1024); // warm-up (the tunnel's connection, the JIT)
  const bytes = MIB * 1024 * 1024;
  const cpu0 = cpuMsOf(pids());
  let t0 = performance.now();
  await sinkOnce(port, bytes);
  const one = bytes / 1024 / 1024 / ((performance.now() - t0) / 1000);
  const cpuMs = cpuMsOf(pids()) - cpu0;
  t0 = performance.now();
  await Promise.all(Array.from({ length: STREAMS }, () => sinkOnce(port, Math.ceil(bytes / STREAMS))));
  const many = bytes / 1024 / 1024 / ((performance.now() - t0) / 1000);
  return { mibPerS: round(one), mibPerS_streams: round(many), ...(pids().length > 0 && cpuMs > 0 ? { mibPerCpuS: round(MIB / (cpuMs / 1000)) } : {}) };
}

/** Sends one byte and waits for it back, RTTS times on one connection: ms per round trip, sorted. */
async function roundTrips(port: number): Promise<number[]> {
  const s = await open(port);
  const one = Buffer.from([1]);
  const next = () => new Promise<void>((resolve) => s.once('data', () => resolve()));
  const out: number[] = [];
  for (let i = 0; i < RTTS + 100; i++) {
    const t0 = performance.now();
    const back = next();
    s.write(one);
    await back;
    if (i >= 100) out.push(performance.now() - t0);
  }
  s.destroy();
  return out.sort((a, b) => a - b);
}

/** A new connection, one byte there and back, closed: ms each, sorted. */
async function connects(port: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < CONNECTS + 10; i++) {
    const t0 = performance.now();
    const s = await open(port);
    const back = new Promise<void>((resolve, reject) => {
      s.once('data', () => resolve());
      s.once('error', reject);
    });
    s.write(Buffer.from([1]));
    await back;
    if (i >= 10) out.push(performance.now() - t0);
    s.destroy();
  }
  return out.sort((a, b) => a - b);
}

interface PathFigures extends Throughput {
  rttP50Ms: number;
  rttP99Ms: number;
  connectP50Ms: number;
  connectP99Ms: number;
}

async function measure(label: string, echoPort: number, sinkPort: number, pids: () => number[]): Promise<PathFigures> {
  const t = await throughput(sinkPort, pids);
  const rtt = await roundTrips(echoPort);
  const conn = await connects(echoPort);
  const f: PathFigures = { ...t, rttP50Ms: round(percentile(rtt, 0.5), 3), rttP99Ms: round(percentile(rtt, 0.99), 3), connectP50Ms: round(percentile(conn, 0.5), 2), connectP99Ms: round(percentile(conn, 0.99), 2) };
  log(
    `${label.padEnd(8)} ${String(f.mibPerS).padStart(7)} MiB/s one stream, ${String(f.mibPerS_streams).padStart(7)} MiB/s ${STREAMS} streams` +
      `${f.mibPerCpuS !== undefined ? `, ${f.mibPerCpuS} MiB per omnid CPU-s` : ''}; echo round trip p50 ${f.rttP50Ms} ms p99 ${f.rttP99Ms} ms; connect+echo p50 ${f.connectP50Ms} ms p99 ${f.connectP99Ms} ms`,
  );
  return f;
}

function socatAvailable(): boolean {
  return spawnSync('socat', ['-V'], { stdio: 'ignore' }).status === 0;
}

/** A socat relay, added to `started` at once (stopped at the end even if it never listens). */
async function socatRelay(listen: number, to: number, started: ChildProcess[]): Promise<void> {
  const p = spawn('socat', [`TCP-LISTEN:${listen},bind=127.0.0.1,reuseaddr,fork`, `TCP:127.0.0.1:${to}`], { stdio: 'ignore' });
  started.push(p);
  await waitFor('socat listens', async () => (await open(listen).then((s) => (s.destroy(), true)).catch(() => false)) || undefined, 10_000, 50);
}

log(`bench:mesh: ${MIB} MiB per throughput run, ${STREAMS} streams, ${RTTS} round trips, ${CONNECTS} connections per path`);
const c = await formCluster(['n1', 'n2', 'n3'], {
  nodeFlags: (n) => ['--vip-range', `127.78.${NODE_INDEX[n] * 16}.0/20`, '--publish-host', '127.0.0.1', '--publish-port-offset', String(OFFSET(n)), '--docker-vip-range', 'off'],
});
const socats: ChildProcess[] = [];
try {
  const client = c.client('n1');
  const created = await client.raw('POST', '/v1/apps', {
    name: 'meshbench',
    command: [process.execPath, '-e', SERVER],
    ports: [
      { name: 'echo', port: 8080, publish: PUBLISH_ECHO },
      { name: 'sink', port: 8081, publish: PUBLISH_SINK },
    ],
    network: { name: 'bench' },
    constraints: ['node.name==n1'],
    healthCheck: { type: 'tcp', port: 'echo', intervalMs: 300, timeoutMs: 1000, retries: 2 },
  });
  if (created.status !== 201) throw new Error(`creating the app: ${created.status} ${JSON.stringify(created.body)}`);
  type App = { tasks: { desired: string; state: string; health: string; hostPorts: number[]; node: string }[] };
  const task = await waitFor(
    'the task serves',
    async () => (await client.get<App>('/v1/apps/meshbench')).tasks.find((t) => t.desired === 'run' && t.state === 'running' && t.health === 'healthy'),
    60_000,
    200,
  );
  client.close();
  // The published ports answer on n1 and n3 once their proxies have seen the task serving.
  for (const n of ['n1', 'n3']) await waitFor(`${n}'s proxy answers`, async () => (await sinkOnce(PUBLISH_SINK + OFFSET(n), 16).then(() => true).catch(() => false)) || undefined, 30_000, 200);
  const omnids = () => c.running().map((n) => n.proc.pid!).filter((p) => p > 0);
  const [echoPort, sinkPort] = task.hostPorts;
  const direct = await measure('direct', echoPort, sinkPort, () => []);
  const local = await measure('local', PUBLISH_ECHO + OFFSET('n1'), PUBLISH_SINK + OFFSET('n1'), omnids);
  const tunnel = await measure('tunnel', PUBLISH_ECHO + OFFSET('n3'), PUBLISH_SINK + OFFSET('n3'), omnids);
  let socat: PathFigures | undefined;
  if (socatAvailable()) {
    const [se, ss] = await freePorts(2);
    await socatRelay(se, echoPort, socats);
    await socatRelay(ss, sinkPort, socats);
    socat = await measure('socat', se, ss, () => []);
  } else log('socat: not installed (apt-get install -y socat): no plain userspace proxy reference in this run');
  const ratio = (a: number, b: number) => (b > 0 ? round(a / b, 2) : null);
  log(`tunnel/direct throughput ${ratio(tunnel.mibPerS, direct.mibPerS)}, local/direct ${ratio(local.mibPerS, direct.mibPerS)}${socat ? `, socat/direct ${ratio(socat.mibPerS, direct.mibPerS)}` : ''}`);
  const flat = (prefix: string, f: PathFigures) => Object.fromEntries(Object.entries(f).map(([k, v]) => [`${prefix}_${k.replace(/[A-Z]/g, (m) => `_${m.toLowerCase()}`)}`, v]));
  console.log(
    JSON.stringify({
      mib: MIB,
      streams: STREAMS,
      ...flat('direct', direct),
      ...flat('local', local),
      ...flat('tunnel', tunnel),
      ...(socat ? flat('socat', socat) : {}),
      tunnel_vs_direct_throughput: ratio(tunnel.mibPerS, direct.mibPerS),
      local_vs_direct_throughput: ratio(local.mibPerS, direct.mibPerS),
    }),
  );
} finally {
  for (const p of socats) p.kill();
  await c.destroy();
}
