// Raft snapshots streamed on /omni/raft/snapshot/1.0.0 between two real libp2p hosts on 127.0.0.1:
// every row arrives once and in order with the header; a cut connection resumes after the last
// row the receiver holds; a hostile stream (bad checksum, wrong count, oversize frame, spoofed
// header) is refused and its partial rows dropped; a heartbeat on /omni/raft/1.0.0 gets through
// while a transfer is in progress.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { Stream } from '@libp2p/interface';
import { createHost, type OmniHost } from '../../node/p2p/host.js';
import { SNAPSHOT_PROTOCOL, SnapshotStream, type SnapshotStreamOptions } from '../../node/raft/snapshot-stream.js';
import { RaftTransport } from '../../node/raft/raft-transport.js';
import { readFrames, sendFrame } from '../../node/p2p/framed-stream.js';
import { createLogger, silentLogger as quiet } from '../../node/logger.js';

const silentLogger = process.env.SNAPSHOT_TEST_LOG ? createLogger('snap', 'debug') : quiet;
import { encodeRaftMessage } from '../../protocol/codec.js';
import { EMPTY_BYTES, MessageType, emptyMessage, type Message } from '../../protocol/raft/types.js';
import {
  MAX_SNAPSHOT_FRAME_BYTES,
  MAX_SNAPSHOT_REPLY_FRAME_BYTES,
  SNAPSHOT_CHUNK_TARGET_BYTES,
  decodeSnapshotFrame,
  encodeSnapshotFrame,
  type SnapshotFrame,
} from '../../protocol/raft/snapshot-wire.js';
import { MemorySink, MemorySource, makeRows, type Row } from '../support/snapshot-memory.js';

const ROWS = 20_000;
const VALUE_BYTES = 2_500; // 20k rows ≈ 50 MB

function snapHeader(from: string, to: string): Uint8Array {
  return encodeRaftMessage({
    ...emptyMessage(MessageType.Snap, from, to, 3),
    snapshot: { meta: { index: 1234, term: 3, conf: { voters: [from, to], learners: [] } }, data: EMPTY_BYTES },
  });
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  return a !== undefined && b !== undefined && Buffer.from(a).equals(Buffer.from(b));
}

function expectAllRows(got: Row[], want: Row[]): void {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    if (!sameBytes(got[i][0], want[i][0]) || !sameBytes(got[i][1], want[i][1])) throw new Error(`row ${i} differs`);
  }
}

describe('snapshot stream between two libp2p hosts', () => {
  const networkKey = randomBytes(32);
  let a: OmniHost;
  let b: OmniHost;
  let data: Row[];
  const cleanups: (() => Promise<void>)[] = [];

  const host = async () => createHost({ privateKey: await generateKeyPair('Ed25519'), networkKey, listen: ['/ip4/127.0.0.1/tcp/0'] });

  beforeAll(async () => {
    [a, b] = await Promise.all([host(), host()]);
    await a.dial(b.getMultiaddrs()[0]);
    data = makeRows(ROWS, VALUE_BYTES);
  });
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  /** A sender on a and a receiver on b, stopped after the test. */
  async function pair(opts: Partial<SnapshotStreamOptions> = {}) {
    const sender = new SnapshotStream({ host: a, log: silentLogger, backoffMinMs: 20, backoffMaxMs: 200, ...opts });
    const receiver = new SnapshotStream({ host: b, log: silentLogger, ...opts });
    const sink = new MemorySink();
    const completions: { from: string; header: Uint8Array }[] = [];
    await receiver.handle((from, header) => completions.push({ from, header }), sink);
    cleanups.push(async () => {
      await sender.stop();
      await receiver.stop();
    });
    return { sender, receiver, sink, completions };
  }

  it('delivers every row once, in key order, in chunks of at most 1 MiB, then hands back the header', async () => {
    const { sender, sink, completions } = await pair();
    const source = new MemorySource('snap-1', data);
    const header = snapHeader(a.peerId.toString(), b.peerId.toString());

    const result = await sender.sendSnapshot(b.peerId, header, source, AbortSignal.timeout(100_000));

    expect(result).toBe('finish');
    const got = sink.transfer(a.peerId.toString(), 'snap-1');
    expectAllRows(got.rows, data);
    expect(got.duplicates).toBe(0);
    expect(sink.completed).toEqual([{ from: a.peerId.toString(), id: 'snap-1', rowCount: ROWS }]);
    expect(completions).toHaveLength(1);
    expect(completions[0].from).toBe(a.peerId.toString());
    expect(sameBytes(completions[0].header, header)).toBe(true);
    expect(sink.writeBytes.length).toBeGreaterThan(40);
    expect(Math.max(...sink.writeBytes)).toBeLessThanOrEqual(SNAPSHOT_CHUNK_TARGET_BYTES);
    expect(source.reads).toEqual([undefined]);
    expect(sink.aborted).toEqual([]);

    // The same view offered again (a retry whose done was lost) is answered done at once, and
    // its header handed to Raft again; the sink is not asked for anything.
    const again = new MemorySource('snap-1', data);
    const calls = sink.calls.length;
    expect(await sender.sendSnapshot(b.peerId, header, again, AbortSignal.timeout(30_000))).toBe('finish');
    expect(again.reads).toEqual([]);
    expect(sink.calls.length).toBe(calls);
    expect(completions).toHaveLength(2);
  });

  it('resumes after the last row the receiver holds when the connection is cut, whether or not its ack got back', async () => {
    const { sender, receiver, sink, completions } = await pair();
    const source = new MemorySource('snap-2', data);
    const cut = () => Promise.all(b.getConnections(a.peerId).map((c) => c.abort(new Error('cut by the test'))));
    const durableAtCut: Uint8Array[] = [];
    sink.onWrite = async (n, rowsSoFar) => {
      const rows = sink.transfer(a.peerId.toString(), 'snap-2').rows;
      if (n === 10) {
        // Cut while this write is still pending: the rows become durable, their ack is lost.
        durableAtCut.push(rows[rowsSoFar - 1][0]);
        await cut();
      } else if (n === 30) {
        // Cut right after the write resolved and its ack went out.
        durableAtCut.push(rows[rowsSoFar - 1][0]);
        setTimeout(() => void cut(), 0);
      }
    };

    const result = await sender.sendSnapshot(b.peerId, snapHeader(a.peerId.toString(), b.peerId.toString()), source, AbortSignal.timeout(100_000));

    expect(result).toBe('finish');
    const got = sink.transfer(a.peerId.toString(), 'snap-2');
    expect(got.duplicates).toBe(0);
    expectAllRows(got.rows, data);
    expect(completions).toHaveLength(1);
    // The source was read three times: from the start, then after each durable key at a cut.
    expect(source.reads).toHaveLength(3);
    expect(source.reads[0]).toBeUndefined();
    expect(sameBytes(source.reads[1], durableAtCut[0])).toBe(true);
    // The second cut may land after more writes went through: the resume key is then later, but
    // always the key the receiver reported as durable.
    expect(sameBytes(source.reads[2], sink.resumeAnswers[2])).toBe(true);
    expect(Buffer.compare(Buffer.from(source.reads[2]!), Buffer.from(durableAtCut[1]))).toBeGreaterThanOrEqual(0);
    expect(sender.stats.resumedSends).toBe(2);
    expect(receiver.stats.resumedReceives).toBe(2);
    expect(sink.aborted).toEqual([]);
  });

  /** Opens a raw snapshot stream from a to b, as a hostile or buggy sender would. */
  async function rawStream(): Promise<{ stream: Stream; send: (f: SnapshotFrame) => Promise<void>; next: () => Promise<SnapshotFrame | 'closed'> }> {
    const stream = await a.dialProtocol(b.peerId, SNAPSHOT_PROTOCOL);
    const frames = readFrames(stream, MAX_SNAPSHOT_REPLY_FRAME_BYTES)[Symbol.asyncIterator]();
    cleanups.push(async () => stream.abort(new Error('test done')));
    return {
      stream,
      send: (f) => sendFrame(stream, encodeSnapshotFrame(f)),
      next: async () => {
        try {
          const r = await frames.next();
          return r.done ? 'closed' : decodeSnapshotFrame(r.value, MAX_SNAPSHOT_REPLY_FRAME_BYTES);
        } catch {
          return 'closed';
        }
      },
    };
  }

  it('refuses a bad checksum, a wrong row count, rows out of order, a spoofed header and an oversize frame', async () => {
    const { receiver, sink, completions } = await pair();
    const from = a.peerId.toString();
    const header = snapHeader(from, b.peerId.toString());
    const rows = data.slice(0, 10);

    // Offers `id`, sends the first ten rows (acked), and returns the stream for the rest.
    const started = async (id: string) => {
      const s = await rawStream();
      await s.send({ kind: 'offer', id, header });
      expect(await s.next()).toMatchObject({ kind: 'accept', resume: false });
      await s.send({ kind: 'begin', resume: false });
      await s.send({ kind: 'chunk', seq: 0, rows });
      expect(await s.next()).toEqual({ kind: 'ack', seq: 0 });
      expect(sink.transfer(from, id).rows).toHaveLength(10);
      return s;
    };

    let s = await started('bad-sum');
    await s.send({ kind: 'end', rowCount: 10, checksum: new Uint8Array(32).fill(7) });
    expect(await s.next()).toMatchObject({ kind: 'error', code: 'CHECKSUM_MISMATCH' });

    s = await started('bad-count');
    await s.send({ kind: 'end', rowCount: 11, checksum: new Uint8Array(32) });
    expect(await s.next()).toMatchObject({ kind: 'error', code: 'ROW_COUNT_MISMATCH' });

    s = await started('bad-order');
    await s.send({ kind: 'chunk', seq: 1, rows: [data[5]] });
    expect(await s.next()).toMatchObject({ kind: 'error', code: 'OUT_OF_ORDER' });

    s = await started('too-big');
    // A length prefix claiming one byte more than the limit: refused before any payload is read.
    const prefix: number[] = [];
    for (let n = MAX_SNAPSHOT_FRAME_BYTES + 1; ; n = Math.floor(n / 128)) {
      if (n < 0x80) {
        prefix.push(n);
        break;
      }
      prefix.push((n & 0x7f) | 0x80);
    }
    s.stream.send(new Uint8Array(prefix));
    expect(await s.next()).toMatchObject({ kind: 'error', code: 'FRAME_TOO_LARGE' });

    s = await rawStream();
    await s.send({ kind: 'offer', id: 'spoofed', header: snapHeader('someone-else', b.peerId.toString()) });
    expect(await s.next()).toMatchObject({ kind: 'error', code: 'BAD_HEADER' });

    // Every refused transfer lost its partial rows; none completed.
    expect(sink.aborted.map((x) => x.id).sort()).toEqual(['bad-count', 'bad-order', 'bad-sum', 'too-big']);
    for (const id of ['bad-sum', 'bad-count', 'bad-order', 'too-big']) expect(sink.transfers.has(`${from}/${id}`)).toBe(false);
    expect(sink.completed).toEqual([]);
    expect(completions).toEqual([]);
    expect(receiver.stats.refusedInbound).toBe(5);
  });

  it('resolves failure, without throwing, when the peer refuses or the caller aborts', async () => {
    const sender = new SnapshotStream({ host: a, log: silentLogger, backoffMinMs: 20 });
    const receiver = new SnapshotStream({ host: b, log: silentLogger, isTrustedSender: () => false });
    const sink = new MemorySink();
    await receiver.handle(() => undefined, sink);
    cleanups.push(async () => {
      await sender.stop();
      await receiver.stop();
    });
    const header = snapHeader(a.peerId.toString(), b.peerId.toString());
    expect(await sender.sendSnapshot(b.peerId, header, new MemorySource('refused', data), AbortSignal.timeout(30_000))).toBe('failure');
    expect(sink.calls).toEqual([]);

    const aborted = new AbortController();
    aborted.abort();
    expect(await sender.sendSnapshot(b.peerId, header, new MemorySource('aborted', data), aborted.signal)).toBe('failure');
    expect(await sender.sendSnapshot('not-a-peer-id', header, new MemorySource('bad-peer', data), AbortSignal.timeout(30_000))).toBe('failure');
    expect(sender.stats.sendFailures).toBe(3);
  });

  it('gives up an attempt after progressTimeoutMs without an ack, but never cuts a slow transfer that keeps acking', async () => {
    // A receiver that accepts and then reads forever without acking.
    let streams = 0;
    await b.handle(SNAPSHOT_PROTOCOL, async (stream) => {
      streams++;
      const frames = readFrames(stream, MAX_SNAPSHOT_FRAME_BYTES);
      let answered = false;
      try {
        for await (const _ of frames) {
          if (!answered) await sendFrame(stream, encodeSnapshotFrame({ kind: 'accept', resume: false, afterKey: new Uint8Array(0), rowCount: 0 }));
          answered = true;
        }
      } catch {
        // the sender gave up
      }
    });
    cleanups.push(() => b.unhandle(SNAPSHOT_PROTOCOL));
    const header = snapHeader(a.peerId.toString(), b.peerId.toString());
    const stalled = new SnapshotStream({ host: a, log: silentLogger, progressTimeoutMs: 300, maxAttemptsWithoutProgress: 2, backoffMinMs: 20 });
    cleanups.push(() => stalled.stop());
    expect(await stalled.sendSnapshot(b.peerId, header, new MemorySource('stalled', data), AbortSignal.timeout(60_000))).toBe('failure');
    expect(streams).toBe(2);
    expect(stalled.stats.attemptsRetried).toBe(1);
    await b.unhandle(SNAPSHOT_PROTOCOL);

    // ~20 chunks, each write taking 150 ms: the transfer lasts ≥ 3 s, three times the progress
    // timeout, and must finish in one attempt because every ack is progress.
    const rows = data.slice(0, 400);
    const { sender, sink } = await pair({ progressTimeoutMs: 1000, chunkTargetBytes: 50_000 });
    sink.onWrite = () => new Promise((r) => setTimeout(r, 150));
    expect(await sender.sendSnapshot(b.peerId, header, new MemorySource('slow', rows), AbortSignal.timeout(60_000))).toBe('finish');
    expect(sink.writeBytes.length).toBeGreaterThanOrEqual(20);
    expect(sender.stats.attemptsRetried).toBe(0);
    expectAllRows(sink.transfer(a.peerId.toString(), 'slow').rows, rows);
  });

  it('a receiver that restarts mid-transfer resumes from the rows it holds, their checksum recomputed from them', async () => {
    const { sender, receiver, sink, completions } = await pair();
    const from = a.peerId.toString();
    const source = new MemorySource('snap-restart', data);
    let restarted: SnapshotStream | undefined;
    const done: { from: string; header: Uint8Array }[] = [];
    sink.onWrite = (n) => {
      if (n !== 12) return;
      // The receiving process stops (its streams cut, its in-memory checksum gone) and a new one
      // starts on the same host with the same durable rows.
      setTimeout(() => {
        void (async () => {
          await receiver.stop();
          restarted = new SnapshotStream({ host: b, log: silentLogger });
          await restarted.handle((f, header) => done.push({ from: f, header }), sink);
          cleanups.push(() => restarted!.stop());
        })();
      }, 0);
    };

    expect(await sender.sendSnapshot(b.peerId, snapHeader(from, b.peerId.toString()), source, AbortSignal.timeout(100_000))).toBe('finish');

    expect(restarted!.stats.checksumsRebuilt).toBe(1);
    expect(restarted!.stats.resumedReceives).toBe(1);
    expect(sink.aborted).toEqual([]);
    const got = sink.transfer(from, 'snap-restart');
    expect(got.duplicates).toBe(0);
    expectAllRows(got.rows, data);
    // Read twice: from the start, then after the last row the restarted receiver held.
    expect(source.reads).toHaveLength(2);
    expect(source.reads[0]).toBeUndefined();
    expect(sameBytes(source.reads[1], sink.resumeAnswers.at(-1))).toBe(true);
    expect(completions).toHaveLength(0);
    expect(done).toHaveLength(1);
  });

  it('starts over, dropping the partial rows, when the sender has no state for them (a new sender, or one that restarted)', async () => {
    const { sender, receiver, sink, completions } = await pair();
    const from = a.peerId.toString();
    // Rows left durable before a restart: the receiver recomputes their checksum and offers to
    // resume, but this sender holds no state for the view, so it begins from the first row.
    await sink.write(from, 'snap-r', data.slice(0, 500));
    const source = new MemorySource('snap-r', data);

    expect(await sender.sendSnapshot(b.peerId, snapHeader(from, b.peerId.toString()), source, AbortSignal.timeout(100_000))).toBe('finish');

    expect(receiver.stats.checksumsRebuilt).toBe(1);
    expect(receiver.stats.resumedReceives).toBe(0);
    expect(sink.aborted).toEqual([{ from, id: 'snap-r' }]);
    expect(source.reads).toEqual([undefined]);
    const got = sink.transfer(from, 'snap-r');
    expect(got.duplicates).toBe(0);
    expectAllRows(got.rows, data);
    expect(completions).toHaveLength(1);
  });

  it('lets a newer snapshot to the same peer supersede the one in progress', async () => {
    const { sender, sink, completions } = await pair();
    const from = a.peerId.toString();
    const header = snapHeader(from, b.peerId.toString());
    let startNewer!: () => void;
    const olderMidway = new Promise<void>((r) => (startNewer = r));
    sink.onWrite = (n) => {
      if (n === 3) startNewer();
    };
    const older = sender.sendSnapshot(b.peerId, header, new MemorySource('older', data), AbortSignal.timeout(100_000));
    await olderMidway;
    const newer = sender.sendSnapshot(b.peerId, header, new MemorySource('newer', data.slice(0, 2000)), AbortSignal.timeout(100_000));

    expect(await older).toBe('failure');
    expect(await newer).toBe('finish');
    expect(sink.completed.map((c) => c.id)).toEqual(['newer']);
    expect(sink.aborted).toEqual([{ from, id: 'older' }]);
    expect(completions).toHaveLength(1);
    expectAllRows(sink.transfer(from, 'newer').rows, data.slice(0, 2000));
  });

  it('joins a transfer of the same view already on its way, and resumes one a failed call left part way', async () => {
    const { sender, sink, completions } = await pair({ maxAttemptsWithoutProgress: 1 });
    const from = a.peerId.toString();
    const header = snapHeader(from, b.peerId.toString());
    let durableAtCut: Uint8Array | undefined;
    sink.onWrite = async (n, rowsSoFar) => {
      if (n !== 10) return;
      durableAtCut = sink.transfer(from, 'snap-j').rows[rowsSoFar - 1][0];
      await Promise.all(b.getConnections(a.peerId).map((c) => c.abort(new Error('cut by the test'))));
    };
    // Raft re-sends the snapshot message while the first transfer runs (its snapshot state timed out).
    const first = new MemorySource('snap-j', data);
    const again = new MemorySource('snap-j', data);
    const [r1, r2] = await Promise.all([
      sender.sendSnapshot(b.peerId, header, first, AbortSignal.timeout(100_000)),
      sender.sendSnapshot(b.peerId, header, again, AbortSignal.timeout(100_000)),
    ]);
    // One transfer: the second call joined the first. With one attempt allowed, the cut fails it.
    expect([r1, r2]).toEqual(['failure', 'failure']);
    expect(first.reads).toEqual([undefined]);
    expect(again.reads).toEqual([]);

    // A later call for the same view picks up after the rows the receiver kept.
    const later = new MemorySource('snap-j', data);
    expect(await sender.sendSnapshot(b.peerId, header, later, AbortSignal.timeout(100_000))).toBe('finish');
    expect(later.reads).toHaveLength(1);
    expect(sameBytes(later.reads[0], durableAtCut)).toBe(true);
    const got = sink.transfer(from, 'snap-j');
    expect(got.duplicates).toBe(0);
    expectAllRows(got.rows, data);
    expect(completions).toHaveLength(1);
  });

  it('lets a heartbeat on /omni/raft/1.0.0 through while a transfer is held up mid-stream', async () => {
    const { sender, sink, completions } = await pair();
    const events: string[] = [];
    let heartbeatArrived!: () => void;
    const heartbeat = new Promise<void>((r) => (heartbeatArrived = r));
    let rowsAtHeartbeat = -1;
    const raftA = new RaftTransport({ host: a, onMessage: () => undefined, isTrustedSender: () => true, log: silentLogger });
    const raftB = new RaftTransport({
      host: b,
      onMessage: (m: Message) => {
        if (m.type !== MessageType.Heartbeat) return;
        events.push('heartbeat');
        rowsAtHeartbeat = sink.transfer(a.peerId.toString(), 'snap-hb').rows.length;
        heartbeatArrived();
      },
      isTrustedSender: () => true,
      log: silentLogger,
    });
    await Promise.all([raftA.start(), raftB.start()]);
    cleanups.push(async () => {
      await raftA.stop();
      await raftB.stop();
    });
    sink.onWrite = async (n) => {
      if (n !== 5) return;
      // The transfer is mid-stream (its stream paused, more chunks queued behind it): the
      // heartbeat must arrive on its own stream. If it were stuck behind the snapshot, this
      // write would wait the full fallback and the heartbeat would land after completion.
      raftA.send([emptyMessage(MessageType.Heartbeat, a.peerId.toString(), b.peerId.toString(), 3)]);
      await Promise.race([heartbeat, new Promise((r) => setTimeout(r, 20_000))]);
    };

    const result = await sender.sendSnapshot(b.peerId, snapHeader(a.peerId.toString(), b.peerId.toString()), new MemorySource('snap-hb', data), AbortSignal.timeout(100_000));
    events.push('complete');

    expect(result).toBe('finish');
    expect(completions).toHaveLength(1);
    expect(events).toEqual(['heartbeat', 'complete']);
    expect(rowsAtHeartbeat).toBeGreaterThan(0);
    expect(rowsAtHeartbeat).toBeLessThan(ROWS);
  });
});
