// For the benchmarks that compare a transfer with the libp2p stream under it
// (bench:snapshot-stream, test/bench/piece-transfer.ts): CPU time of this process, and a raw
// libp2p stream between two hosts (1 MiB writes, no framing) — the ceiling such a transfer works under.
import { randomBytes } from 'node:crypto';
import type { OmniHost } from '../../node/p2p/host.js';

const RAW_PROTOCOL = '/omni/bench/raw/1.0.0';
const MB = 1024 * 1024;

/** User + system CPU ms of this process. */
export function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** `bytes` sent from a to b on a raw libp2p stream: MB/s and the CPU seconds of this process (both hosts in it). */
export async function rawStream(a: OmniHost, b: OmniHost, bytes: number): Promise<{ MBps: number; cpuSeconds: number }> {
  let received = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  await b.handle(RAW_PROTOCOL, async (stream) => {
    for await (const chunk of stream) {
      received += chunk.byteLength;
      if (received >= bytes) break;
    }
    done();
    await stream.close().catch(() => undefined);
  });
  const stream = await a.dialProtocol(b.peerId, RAW_PROTOCOL);
  const block = randomBytes(MB);
  const cpu0 = cpuMs();
  const t0 = performance.now();
  for (let sent = 0; sent < bytes; sent += MB) if (!stream.send(block)) await stream.onDrain();
  await finished;
  const seconds = (performance.now() - t0) / 1000;
  const cpuSeconds = (cpuMs() - cpu0) / 1000;
  stream.abort(new Error('bench done'));
  await b.unhandle(RAW_PROTOCOL);
  return { MBps: bytes / MB / seconds, cpuSeconds };
}
