// Diagnostic for the snapshot transfer path (not a benchmark of record): a state shaped like
// bench:state's (1 MiB values, and 1 KiB values each with its metadata row) in a real LevelDB
// (RaftStorage), streamed from a view on /omni/raft/snapshot/1.0.0 between two libp2p hosts on
// loopback into a second store's staging rows, then installed. Both ends in this process: prints
// the time and CPU of each step and this process's RSS (anonymous / file-backed) as it goes.
// Usage: node --import tsx test/bench/snapshot-xfer-diag.ts [--mib 256] [--keep DIR (reuse a filled source)] [--cpu-prof via node flags]
import { parseArgs } from 'node:util';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { createHost } from '../../node/p2p/host.js';
import { SnapshotStream } from '../../node/raft/snapshot-stream.js';
import { RaftStorage } from '../../node/raft/raft-storage.js';
import { silentLogger } from '../../node/logger.js';
import { encodeRaftMessage } from '../../protocol/codec.js';
import { EMPTY_BYTES, MessageType, emptyMessage } from '../../protocol/raft/types.js';
import { memOf } from './rss.js';

const { values } = parseArgs({ options: { mib: { type: 'string' }, keep: { type: 'string' } } });
const MIB = 1024 * 1024;
const TOTAL = Number(values.mib ?? 256) * MIB;
const cpuS = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const mem = async () => {
  const m = (await memOf(process.pid))!;
  return `rss ${Math.round(m.rssKb / 1024)} MiB (anon ${Math.round(m.anonKb / 1024)}, file ${Math.round(m.fileKb / 1024)}); heap ${Math.round(process.memoryUsage().heapUsed / MIB)} MiB, external ${Math.round(process.memoryUsage().external / MIB)} MiB, arrayBuffers ${Math.round(process.memoryUsage().arrayBuffers / MIB)} MiB`;
};
async function step<T>(what: string, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  const c0 = cpuS();
  const r = await fn();
  console.log(`${what}: ${((performance.now() - t0) / 1000).toFixed(1)} s, ${(cpuS() - c0).toFixed(1)} CPU-s; ${await mem()}`);
  return r;
}

function* rows(): Generator<[string, string]> {
  const big = randomBytes(MIB / 2).toString('hex');
  const small = randomBytes(512).toString('hex');
  const bigCount = Math.round(TOTAL / 2 / MIB);
  const smallCount = Math.round(TOTAL / 2 / 1024);
  const all: [string, string][] = [];
  for (let i = 0; i < bigCount; i++) {
    const k = `state/big/${String(i).padStart(7, '0')}`;
    all.push([`k/${k}`, JSON.stringify({ key: k, version: 1, createIndex: i + 10, modIndex: i + 10, size: MIB, sha256: 'f'.repeat(64) })]);
    all.push([`v/${k}`, big]);
  }
  for (let i = 0; i < smallCount; i++) {
    const k = `state/small/${String(i).padStart(8, '0')}`;
    all.push([`k/${k}`, JSON.stringify({ key: k, version: 1, createIndex: i + 1000, modIndex: i + 1000, size: 1024, sha256: 'f'.repeat(64) })]);
    all.push([`v/${k}`, small]);
  }
  all.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  yield* all;
}

const base = values.keep ?? mkdtempSync(join(tmpdir(), 'omni-xfer-diag-'));
const fill = !existsSync(join(base, 'src'));
console.log(`data in ${base}; ${await mem()}`);
const src = await RaftStorage.open(join(base, 'src'));
if (fill) await step(`filled the source (${TOTAL / MIB} MiB)`, () => src.replaceState(rows(), 1000));
rmSync(join(base, 'dst'), { recursive: true, force: true });
const dst = await RaftStorage.open(join(base, 'dst'));
const networkKey = randomBytes(32);
const host = async () => createHost({ privateKey: await generateKeyPair('Ed25519'), networkKey, listen: ['/ip4/127.0.0.1/tcp/0'] });
const [a, b] = await Promise.all([host(), host()]);
await a.dial(b.getMultiaddrs()[0]);
const sender = new SnapshotStream({ host: a, log: silentLogger });
const receiver = new SnapshotStream({ host: b, log: silentLogger });
let completed: { from: string; id: string } | undefined;
await receiver.handle((from, _h, id) => (completed = { from, id }), dst.snapshotSink());
const header = encodeRaftMessage({
  ...emptyMessage(MessageType.Snap, a.peerId.toString(), b.peerId.toString(), 1),
  snapshot: { meta: { index: 1000, term: 1, conf: { voters: [a.peerId.toString()], learners: [] } }, data: EMPTY_BYTES },
});
const timer = setInterval(() => void mem().then((m) => console.log(`  … ${m}`)), 5000);
const view = await src.openStateView('diag');
const result = await step('streamed', () => sender.sendSnapshot(b.peerId, header, view, AbortSignal.timeout(60 * 60_000)));
clearInterval(timer);
await view.close();
if (result !== 'finish' || !completed) throw new Error(`transfer: ${result}`);
await step('installed', () => dst.installStagedState(completed!.from, completed!.id));
await step('loaded the state rows (no values)', async () => (await dst.loadState())?.rows.length);
await sender.stop();
await receiver.stop();
await Promise.all([a.stop(), b.stop()]);
await src.close();
await dst.close();
if (!values.keep) rmSync(base, { recursive: true, force: true });
