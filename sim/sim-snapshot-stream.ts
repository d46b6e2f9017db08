// The streamed snapshot (node/raft/snapshot-stream.ts) over the simulated network: the leader's
// real driver hands a Snap message and a view of its rows to sendSnapshot; this sends the rows
// in chunks as requests to the follower, whose store stages them durably (SimStore's sink, as
// StateStorage's), resumes after the last staged row when an attempt breaks (a dropped
// chunk, a partition, a crash of either side), and after the last row steps the Raft message
// that makes the follower's driver install the staged rows. Chunk sizes, delays and losses
// come from the seed like every other message.
import type { Message, NodeId } from '../protocol/raft/types.js';
import type { RaftNode } from '../node/raft/raft-node.js';
import { stagedSnapshotData } from '../node/raft/raft-node.js';
import type { StateView } from '../node/raft/state-storage.js';
import type { SnapshotSink } from '../node/raft/snapshot-stream.js';
import type { Rng } from '../protocol/rng.js';

export interface SimStreamDeps {
  rng: Rng;
  /** Runs fn on `to` after a network delay unless the message is dropped (false) or `to` is down then. */
  send(from: NodeId, to: NodeId, fn: () => void): boolean;
  /** Runs fn on `from` after delayMs unless that process crashed meanwhile. */
  later(from: NodeId, delayMs: number, fn: () => void): void;
  /** The running node and its store's sink (undefined while down). */
  peer(id: NodeId): { node: RaftNode; sink: SnapshotSink } | undefined;
  trace(line: string): void;
}

/** No answer to one request within this long: the attempt is broken (the stream's progress timeout). */
const REQUEST_TIMEOUT_MS = 400;
const MAX_ATTEMPTS = 4;

export class SimSnapshotStream {
  /** Transfers on their way, by sender, receiver and view: a resend of the same view joins (as the real stream does). */
  private readonly running = new Map<string, Promise<boolean>>();
  /** The newest view sent from each sender to each receiver: an older transfer gives up (superseded). */
  private readonly latest = new Map<string, string>();

  constructor(private readonly d: SimStreamDeps) {}

  /** Streams `view` to m.to; true once the follower completed it and was handed the message. */
  send(from: NodeId, m: Message, view: StateView): Promise<boolean> {
    const key = `${from}>${m.to}:${view.id}`;
    const running = this.running.get(key);
    if (running) return running;
    this.latest.set(`${from}>${m.to}`, view.id);
    const p = this.transfer(from, m, view).finally(() => this.running.delete(key));
    this.running.set(key, p);
    return p;
  }

  private async transfer(from: NodeId, m: Message, view: StateView): Promise<boolean> {
    const to = m.to;
    const rowsPerChunk = 1 + this.d.rng.int(20);
    const current = () => this.latest.get(`${from}>${to}`) === view.id;
    for (let attempt = 1; attempt <= MAX_ATTEMPTS && current(); attempt++) {
      if (await this.attempt(from, to, m, view, rowsPerChunk, current)) return true;
      this.d.trace(`snapshot stream ${from}->${to} ${view.id}: attempt ${attempt} broke`);
      await new Promise<void>((resolve) => this.d.later(from, 50 * attempt, resolve));
    }
    return false;
  }

  private async attempt(from: NodeId, to: NodeId, m: Message, view: StateView, rowsPerChunk: number, current: () => boolean): Promise<boolean> {
    const resume = await this.request(from, to, (p) => p.sink.resumeAfter(from, view.id));
    if (!resume.ok) return false;
    let count = 0;
    let chunk: [Uint8Array, Uint8Array][] = [];
    const never = new AbortController().signal;
    const flush = async (): Promise<boolean> => {
      const rows = chunk;
      chunk = [];
      return current() && (await this.request(from, to, (p) => p.sink.write(from, view.id, rows))).ok;
    };
    for await (const row of view.rows(resume.value, never)) {
      chunk.push(row);
      count++;
      if (chunk.length >= rowsPerChunk && !(await flush())) return false;
    }
    if (chunk.length > 0 && !(await flush())) return false;
    const header: Message = { ...m, snapshot: { meta: m.snapshot!.meta, data: stagedSnapshotData(from, view.id) } };
    const done = await this.request(from, to, async (p) => {
      await p.sink.complete(from, view.id, count);
      p.node.step(header);
    });
    return done.ok;
  }

  /** One request and its answer over the simulated network, or not ok on loss, a crash or an error. */
  private request<T>(from: NodeId, to: NodeId, fn: (p: { node: RaftNode; sink: SnapshotSink }) => Promise<T>): Promise<{ ok: true; value: T } | { ok: false }> {
    return new Promise((resolve) => {
      let settled = false;
      const finish = (r: { ok: true; value: T } | { ok: false }) => {
        if (settled) return;
        settled = true;
        resolve(r);
      };
      this.d.later(from, REQUEST_TIMEOUT_MS, () => finish({ ok: false }));
      this.d.send(from, to, () => {
        const p = this.d.peer(to);
        if (!p) return;
        fn(p).then(
          (value) => void this.d.send(to, from, () => finish({ ok: true, value })),
          () => void this.d.send(to, from, () => finish({ ok: false })),
        );
      });
    });
  }
}
