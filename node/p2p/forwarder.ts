// Forwards proposals from any node to the leader over one long-lived libp2p stream per leader
// (/omni/forward/3.0.0), batching everything submitted in the same event-loop turn into one
// frame each way. Opening a stream per write costs a protocol negotiation and several small
// socket writes; under load this path is most of a follower's work.
//
// Each proposal carries its caller (node/cluster/caller.ts): the member itself, or the admin token the
// API request presented, which the leader verifies again before it authorizes the command.
// Version 2 added the caller: a version-1 node cannot forward to a version-2 leader. Version 3
// sends the commands as bytes after a JSON head (protocol/cluster/forward-wire.ts) instead of
// base64 in JSON; the replies are the same JSON. A leader serves both; a member asks for 3 and
// speaks 2 to a leader of the version before (a rolling upgrade).
import type { Stream, Connection } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import type { OmniHost } from './host.js';
import { readFrames, sendFrame } from './framed-stream.js';
import { OmniError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ApplyResult } from '../../protocol/cluster/state.js';
import { readWireCaller, type WireCaller } from '../cluster/caller.js';
import { MAX_COMMAND_BYTES } from '../../protocol/cluster/state.js';
import { decodeForwardBatch, encodeForwardBatch } from '../../protocol/cluster/forward-wire.js';

export const FORWARD_PROTOCOL = '/omni/forward/3.0.0';
/** The version before (commands as base64 in JSON): served, and spoken to a leader that has only it. */
export const FORWARD_PROTOCOL_V2 = '/omni/forward/2.0.0';
/** Proposals per frame; a frame is bounded by this many commands of MAX_COMMAND_BYTES (base64). */
const MAX_BATCH = 256;
const MAX_FORWARD_FRAME_BYTES = 8 * MAX_COMMAND_BYTES;
/**
 * Command bytes a member puts in one frame (at least one command, whatever its size): half the
 * frame limit leaves room for version 2's base64 (4/3) and the JSON around it. Without it, a
 * burst of large writes (nine of 2 MiB) made a frame the leader refused, and the stream was lost.
 */
const MAX_BATCH_DATA_BYTES = MAX_FORWARD_FRAME_BYTES / 2;
const MAX_PENDING_PER_LEADER = 10_000;
const DIAL_TIMEOUT_MS = 3000;
const REQUEST_TIMEOUT_MS = 15_000;

/** A request as version 2 sends it. */
interface ReqV2 {
  id: number;
  data: string;
  caller: WireCaller;
}
interface Req {
  id: number;
  data: Uint8Array;
  caller: WireCaller;
}
type Res = { id: number; ok: true; result: ApplyResult } | { id: number; ok: false; code: string; message: string };

/** Leader side: how a forwarded proposal is checked (who asks, and may they) and proposed. */
export type ProposeLocally = (from: string, data: Uint8Array, caller: WireCaller) => Promise<ApplyResult>;

export class Forwarder {
  private readonly channels = new Map<string, Channel>();

  constructor(
    private readonly host: OmniHost,
    private readonly proposeLocally: ProposeLocally,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    await this.host.handle([FORWARD_PROTOCOL, FORWARD_PROTOCOL_V2], (stream, conn) => this.serve(stream, conn), { maxInboundStreams: 16, maxOutboundStreams: 16 });
  }

  async stop(): Promise<void> {
    for (const c of this.channels.values()) c.close(new OmniError('UNAVAILABLE', 'node is shutting down; the outcome is unknown'));
    this.channels.clear();
    await this.host.unhandle([FORWARD_PROTOCOL, FORWARD_PROTOCOL_V2]).catch(() => undefined);
  }

  propose(leader: string, data: Uint8Array, caller: WireCaller): Promise<ApplyResult> {
    let ch = this.channels.get(leader);
    if (!ch || ch.closed) {
      ch = new Channel(this.host, leader, this.log);
      this.channels.set(leader, ch);
    }
    return ch.submit(data, caller);
  }

  private async serve(stream: Stream, conn: Connection): Promise<void> {
    stream.inactivityTimeout = 0;
    const from = conn.remotePeer.toString();
    const v2 = stream.protocol === FORWARD_PROTOCOL_V2;
    let out: Res[] = [];
    let flushing = false;
    const flush = () => {
      if (flushing) return;
      flushing = true;
      setImmediate(() => {
        const batch = out;
        out = [];
        flushing = false;
        sendFrame(stream, new TextEncoder().encode(JSON.stringify(batch))).catch((err: Error) => stream.abort(err));
      });
    };
    try {
      for await (const frame of readFrames(stream, MAX_FORWARD_FRAME_BYTES)) {
        const reqs = v2 ? readBatchV2(frame) : decodeForwardBatch(frame, MAX_BATCH, MAX_COMMAND_BYTES);
        for (const r of reqs) {
          let call: Promise<ApplyResult>;
          try {
            // Called at once, in stream order (a bad caller refuses only its own request).
            call = this.proposeLocally(from, r.data, readWireCaller(r.caller));
          } catch (err) {
            call = Promise.reject(err);
          }
          call
            .then((result) => out.push({ id: r.id, ok: true, result }))
            .catch((err: unknown) => {
              const e = err instanceof OmniError ? err : new OmniError('INTERNAL', (err as Error).message);
              out.push({ id: r.id, ok: false, code: e.code, message: e.message });
            })
            .finally(flush);
        }
      }
    } catch (err) {
      this.log.warn(`forward: closing stream from ${from}: ${(err as Error).message}`);
      stream.abort(err as Error);
    }
  }
}

/** Client side: one stream to one leader, requests matched to responses by id. */
class Channel {
  private readonly pending = new Map<number, { resolve: (r: ApplyResult) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private queue: Req[] = [];
  private nextId = 1;
  private stream: Promise<Stream> | undefined;
  private flushScheduled = false;
  closed = false;

  constructor(
    private readonly host: OmniHost,
    private readonly leader: string,
    private readonly log: Logger,
  ) {}

  submit(data: Uint8Array, caller: WireCaller): Promise<ApplyResult> {
    if (this.pending.size >= MAX_PENDING_PER_LEADER) return Promise.reject(new OmniError('TOO_MANY_PENDING', 'too many writes waiting for the leader'));
    const id = this.nextId++;
    return new Promise<ApplyResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new OmniError('TIMEOUT', `the leader did not answer within ${REQUEST_TIMEOUT_MS} ms; the write may still commit`));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      this.queue.push({ id, data, caller });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => void this.flush());
      }
    });
  }

  close(err: OmniError): void {
    this.closed = true;
    for (const [, p] of this.pending) (clearTimeout(p.timer), p.reject(err));
    this.pending.clear();
    void this.stream?.then((s) => s.abort(err)).catch(() => undefined);
  }

  private async flush(): Promise<void> {
    this.flushScheduled = false;
    while (this.queue.length > 0 && !this.closed) {
      let n = 0;
      for (let bytes = 0; n < this.queue.length && n < MAX_BATCH; n++) {
        bytes += this.queue[n].data.byteLength;
        if (n > 0 && bytes > MAX_BATCH_DATA_BYTES) break;
      }
      const batch = this.queue.splice(0, n);
      try {
        const stream = await this.open();
        await sendFrame(stream, stream.protocol === FORWARD_PROTOCOL_V2 ? encodeBatchV2(batch) : encodeForwardBatch(batch));
      } catch (err) {
        // Nothing in this batch reached the leader only if the stream never opened; a write
        // that failed midway may have. Report both as UNAVAILABLE (not retried blindly).
        this.close(new OmniError('UNAVAILABLE', `cannot reach the leader: ${(err as Error).message}`));
      }
    }
  }

  private open(): Promise<Stream> {
    this.stream ??= (async () => {
      const stream = await this.host.dialProtocol(peerIdFromString(this.leader), [FORWARD_PROTOCOL, FORWARD_PROTOCOL_V2], { signal: AbortSignal.timeout(DIAL_TIMEOUT_MS) });
      stream.inactivityTimeout = 0;
      void this.readReplies(stream);
      return stream;
    })();
    return this.stream;
  }

  private async readReplies(stream: Stream): Promise<void> {
    try {
      for await (const frame of readFrames(stream, MAX_FORWARD_FRAME_BYTES)) {
        for (const r of JSON.parse(new TextDecoder().decode(frame)) as Res[]) {
          const p = this.pending.get(r.id);
          if (!p) continue;
          this.pending.delete(r.id);
          clearTimeout(p.timer);
          if (r.ok) p.resolve(r.result);
          else p.reject(new OmniError(r.code, r.message));
        }
      }
      this.close(new OmniError('UNAVAILABLE', 'the leader closed the connection; the outcome is unknown'));
    } catch (err) {
      this.log.debug(`forward: stream to ${this.leader} failed: ${(err as Error).message}`);
      this.close(new OmniError('UNAVAILABLE', `connection to the leader failed (${(err as Error).message}); the outcome is unknown`));
    }
  }
}

/** A version-2 request frame: JSON of {id, data (base64), caller}. */
function readBatchV2(frame: Uint8Array): { id: number; data: Uint8Array; caller: unknown }[] {
  const reqs = JSON.parse(new TextDecoder().decode(frame)) as ReqV2[];
  if (!Array.isArray(reqs) || reqs.length > MAX_BATCH) throw new Error('malformed forward batch');
  return reqs.map((r) => {
    if (typeof r?.id !== 'number' || typeof r.data !== 'string') throw new Error('malformed forward request');
    return { id: r.id, data: new Uint8Array(Buffer.from(r.data, 'base64')), caller: r.caller };
  });
}

function encodeBatchV2(batch: readonly Req[]): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(batch.map((r): ReqV2 => ({ id: r.id, data: Buffer.from(r.data.buffer, r.data.byteOffset, r.data.byteLength).toString('base64'), caller: r.caller }))));
}
