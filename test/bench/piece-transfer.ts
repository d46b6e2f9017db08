// Diagnostic (not part of npm test): what copying blobs between two nodes costs, both ways omnid
// makes a copy — pulled (BlobFetcher on the receiver asking PieceService on the holder for pieces)
// and pushed (PieceService.push: the holder streams the blob, the receiver hashes and writes it),
// over libp2p with pnet + noise + yamux as omnid runs them, both stores on disk — against a raw
// libp2p stream on the same hosts. Both hosts share one process (one core): MB per CPU-second is
// the figure a loaded machine disturbs least.
//   PIECES_BENCH_BLOBS=16 PIECES_BENCH_BLOB_MB=8 PIECES_BENCH_PARALLEL=8
//   PIECES_BENCH_PROFILE=FILE: a V8 CPU profile of the pulled copies alone (not the set-up) written
//   there; PIECES_BENCH_PROFILE_PUSH=1: of the pushed copies instead
//   node --import tsx test/bench/piece-transfer.ts
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { createHost } from '../../node/p2p/host.js';
import { silentLogger } from '../../node/logger.js';
import { BlobHasher, BlobStore } from '../../node/registry/blob-store.js';
import { BlobFetcher } from '../../node/registry/blob-fetcher.js';
import { DATA_FRAME_BYTES, PieceService } from '../../node/registry/piece-transfer.js';
import { pieceSizeFor } from '../../protocol/registry/pieces.js';
import { cpuMs, rawStream } from './raw-stream.js';
import type { BlobRecord } from '../../protocol/registry/records.js';

const BLOBS = Number(process.env.PIECES_BENCH_BLOBS ?? 16);
const BLOB_MB = Number(process.env.PIECES_BENCH_BLOB_MB ?? 8);
const PARALLEL = Number(process.env.PIECES_BENCH_PARALLEL ?? 8);
const MB = 1024 * 1024;
async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'omni-pieces-bench-'));
  const networkKey = randomBytes(32);
  const host = async () => createHost({ privateKey: await generateKeyPair('Ed25519'), networkKey, listen: ['/ip4/127.0.0.1/tcp/0'] });
  const [a, b] = await Promise.all([host(), host()]);
  try {
    await a.dial(b.getMultiaddrs()[0]);
    const storeA = await BlobStore.open({ dir: join(work, 'a'), log: silentLogger, minFreeBytes: 0 });
    const storeB = await BlobStore.open({ dir: join(work, 'b'), log: silentLogger, minFreeBytes: 0 });
    const serviceA = new PieceService(a, { authorize: () => undefined, store: storeA, log: silentLogger });
    const serviceB = new PieceService(b, { authorize: () => undefined, store: storeB, log: silentLogger, replicate: async () => undefined });
    await Promise.all([serviceA.start(), serviceB.start()]);
    const holder = a.peerId.toString();
    const fetcher = new BlobFetcher({ store: storeB, source: serviceB, holders: () => [holder], members: () => [holder], learned: () => undefined, log: silentLogger });
    const records: BlobRecord[] = [];
    for (let i = 0; i < BLOBS; i++) {
      const bytes = randomBytes(BLOB_MB * MB);
      const h = new BlobHasher(pieceSizeFor(bytes.length));
      h.update(bytes);
      const info = h.result();
      await storeA.commitBytes(info.digest, bytes, info);
      records.push({ digest: info.digest, sizeBytes: info.sizeBytes, pieceSizeBytes: info.pieceSizeBytes, pieces: info.pieces, createdAtMs: Date.now() });
    }
    const total = BLOBS * BLOB_MB;
    const raw = await rawStream(a, b, total * MB);
    const profile = process.env.PIECES_BENCH_PROFILE;
    const session = profile ? new Session() : undefined;
    if (session) {
      session.connect();
      await session.post('Profiler.enable');
    }
    const timed = async (copy: () => Promise<void>) => {
      const cpu0 = cpuMs();
      const t0 = performance.now();
      await copy();
      const seconds = (performance.now() - t0) / 1000;
      const cpuSeconds = (cpuMs() - cpu0) / 1000;
      for (const r of records) {
        if (!storeB.has(r.digest)) throw new Error(`${r.digest} did not arrive`);
        await storeB.delete(r.digest);
      }
      return { seconds, cpuSeconds };
    };
    const inParallel = async (each: (r: BlobRecord) => Promise<void>) => {
      let next = 0;
      await Promise.all(
        Array.from({ length: PARALLEL }, async () => {
          while (next < records.length) await each(records[next++]);
        }),
      );
    };
    const profilePush = process.env.PIECES_BENCH_PROFILE_PUSH === '1';
    if (session && profilePush) await session.post('Profiler.start');
    const pushed = await timed(() => inParallel((r) => serviceA.push(b.peerId.toString(), r.digest, { record: r, read: () => storeA.readUnverified(r.digest, 4 * DATA_FRAME_BYTES) }, AbortSignal.timeout(60_000))));
    if (session && !profilePush) await session.post('Profiler.start');
    const pulled = await timed(() => inParallel(async (r) => void (await fetcher.fetch(r))));
    const { seconds, cpuSeconds } = pulled;
    if (session && profile) {
      const { profile: p } = await session.post('Profiler.stop');
      await writeFile(profile, JSON.stringify(p));
      session.disconnect();
    }
    fetcher.stop();
    await Promise.all([serviceA.stop(), serviceB.stop()]);
    const out = {
      blobs: BLOBS,
      blobMB: BLOB_MB,
      parallel: PARALLEL,
      seconds: Math.round(seconds * 100) / 100,
      MBps: Math.round((total / seconds) * 10) / 10,
      MBPerCpuSecond: Math.round(total / cpuSeconds),
      pushSeconds: Math.round(pushed.seconds * 100) / 100,
      pushMBps: Math.round((total / pushed.seconds) * 10) / 10,
      pushMBPerCpuSecond: Math.round(total / pushed.cpuSeconds),
      rawMBps: Math.round(raw.MBps * 10) / 10,
      rawMBPerCpuSecond: Math.round(total / raw.cpuSeconds),
    };
    console.log(`pieces: ${total} MB in ${BLOBS} blobs of ${BLOB_MB} MB, ${PARALLEL} at once: ${out.seconds} s, ${out.MBps} MB/s, ${out.MBPerCpuSecond} MB per CPU-s pulled; pushed ${out.pushSeconds} s, ${out.pushMBps} MB/s, ${out.pushMBPerCpuSecond} MB per CPU-s; raw stream ${out.rawMBps} MB/s, ${out.rawMBPerCpuSecond} MB per CPU-s`);
    console.log(JSON.stringify(out));
  } finally {
    await Promise.all([a.stop(), b.stop()]);
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
