// `npm run bench:snapshot-stream`: MB/s of a Raft snapshot streamed on /omni/raft/snapshot/1.0.0
// between two libp2p hosts on 127.0.0.1 (pnet + noise + yamux, as omnid runs them), from an
// in-memory source into a sink that only counts (and checks the order of) what arrives. Also the
// raw libp2p stream rate on the same hosts (one stream, 1 MiB writes, no framing): the ceiling
// the snapshot stream works under. Both hosts share one process (one core): MB per CPU-second
// is the figure that a loaded machine disturbs least.
// Prints a table, then one JSON object as the last line. Never asserted in tests.
//
//   SNAPSHOT_BENCH_MB=256 (default)   SNAPSHOT_BENCH_VALUE_BYTES=4096 (default)   SNAPSHOT_BENCH_WINDOW (chunks)
import { randomBytes } from 'node:crypto';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { createHost } from '../../node/p2p/host.js';
import { SnapshotStream, type SnapshotSink } from '../../node/raft/snapshot-stream.js';
import { silentLogger } from '../../node/logger.js';
import { encodeRaftMessage } from '../../protocol/codec.js';
import { EMPTY_BYTES, MessageType, emptyMessage } from '../../protocol/raft/types.js';
import { MemorySource, makeRows } from '../support/snapshot-memory.js';
import { compareKeys } from '../../protocol/raft/snapshot-wire.js';
import { cpuMs, rawStream } from './raw-stream.js';

/** Keeps nothing but the count, last key and write sizes: measures the transfer, not a store. */
class CountingSink implements SnapshotSink {
  rows = 0;
  writes = 0;
  outOfOrder = 0;
  private last: Uint8Array | undefined;
  async resumeAfter(): Promise<Uint8Array | undefined> {
    return this.rows > 0 ? this.last : undefined;
  }
  async write(_from: string, _id: string, rows: [Uint8Array, Uint8Array][]): Promise<void> {
    for (const [k] of rows) {
      if (this.last && compareKeys(k, this.last) <= 0) this.outOfOrder++;
      this.last = k;
    }
    this.rows += rows.length;
    this.writes++;
  }
  async complete(): Promise<void> {}
  async abort(): Promise<void> {
    this.rows = 0;
    this.last = undefined;
  }
}

const TOTAL_MB = Number(process.env.SNAPSHOT_BENCH_MB ?? 256);
const VALUE_BYTES = Number(process.env.SNAPSHOT_BENCH_VALUE_BYTES ?? 4096);
const WINDOW_CHUNKS = process.env.SNAPSHOT_BENCH_WINDOW ? Number(process.env.SNAPSHOT_BENCH_WINDOW) : undefined;
const MB = 1024 * 1024;

async function main(): Promise<void> {
  const networkKey = randomBytes(32);
  const host = async () => createHost({ privateKey: await generateKeyPair('Ed25519'), networkKey, listen: ['/ip4/127.0.0.1/tcp/0'] });
  const [a, b] = await Promise.all([host(), host()]);
  await a.dial(b.getMultiaddrs()[0]);
  const rowCount = Math.ceil((TOTAL_MB * MB) / VALUE_BYTES);
  const rows = makeRows(rowCount, VALUE_BYTES);
  const bytes = rows.reduce((n, [k, v]) => n + k.length + v.length, 0);

  const sender = new SnapshotStream({ host: a, log: silentLogger, windowChunks: WINDOW_CHUNKS });
  const receiver = new SnapshotStream({ host: b, log: silentLogger });
  const sink = new CountingSink();
  await receiver.handle(() => undefined, sink);
  const header = encodeRaftMessage({
    ...emptyMessage(MessageType.Snap, a.peerId.toString(), b.peerId.toString(), 1),
    snapshot: { meta: { index: 1, term: 1, conf: { voters: [a.peerId.toString()], learners: [] } }, data: EMPTY_BYTES },
  });

  const rawBytes = Math.min(bytes, 256 * MB);
  const raw = await rawStream(a, b, rawBytes);
  const cpu0 = cpuMs();
  const t0 = performance.now();
  const result = await sender.sendSnapshot(b.peerId, header, new MemorySource('bench', rows), AbortSignal.timeout(30 * 60_000));
  const seconds = (performance.now() - t0) / 1000;
  const cpuSeconds = (cpuMs() - cpu0) / 1000;
  if (result !== 'finish') throw new Error(`transfer failed: ${result}`);
  if (sink.rows !== rowCount || sink.outOfOrder > 0) throw new Error(`${sink.rows} of ${rowCount} rows arrived, ${sink.outOfOrder} out of order`);

  await sender.stop();
  await receiver.stop();
  await Promise.all([a.stop(), b.stop()]);

  const snapshotMBps = bytes / MB / seconds;
  const figures = {
    snapshotMB: Math.round(bytes / MB),
    rows: rowCount,
    valueBytes: VALUE_BYTES,
    seconds: Math.round(seconds * 100) / 100,
    snapshotMBps: Math.round(snapshotMBps * 10) / 10,
    cpuSecondsBothHosts: Math.round(cpuSeconds * 100) / 100,
    snapshotMBPerCpuSecond: Math.round(bytes / MB / cpuSeconds),
    rawStreamMBps: Math.round(raw.MBps * 10) / 10,
    rawStreamMBPerCpuSecond: Math.round(rawBytes / MB / raw.cpuSeconds),
    chunks: sink.writes,
  };
  console.log(`snapshot stream, two libp2p hosts on loopback (pnet + noise + yamux), one process`);
  console.log(`  ${figures.snapshotMB} MB in ${figures.rows} rows of ${VALUE_BYTES} B: ${figures.seconds} s, ${figures.snapshotMBps} MB/s (${figures.chunks} chunks, ${figures.cpuSecondsBothHosts} CPU-s for both hosts, ${figures.snapshotMBPerCpuSecond} MB per CPU-s)`);
  console.log(`  raw libp2p stream on the same hosts: ${figures.rawStreamMBps} MB/s, ${figures.rawStreamMBPerCpuSecond} MB per CPU-s`);
  console.log(JSON.stringify(figures));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
