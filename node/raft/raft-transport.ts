// Raft messages over libp2p (/omni/raft/1.0.0): one long-lived outbound stream per peer,
// protobuf messages from proto/omni.proto in length-prefixed frames with a size limit.
// Sends never block Raft: each peer has a bounded queue drained by its own loop, which
// waits on stream backpressure and redials with exponential backoff. Raft tolerates lost
// messages, so an overflowing queue drops (and counts) rather than growing.
import type { Stream, Connection, PeerId } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import type { OmniHost } from '../p2p/host.js';
import { decodeRaftMessage, encodeRaftMessage } from '../../protocol/codec.js';
import { MessageType, type Message } from '../../protocol/raft/types.js';
import { readFrames } from '../p2p/framed-stream.js';
import { sendDrained } from '../p2p/drain.js';
import { encodeFrame } from '../../protocol/framing.js';
import type { Logger } from '../logger.js';
import { MAX_SNAPSHOT_BYTES } from '../../protocol/cluster/state.js';
import { mark } from '../timeline.js';

export const RAFT_PROTOCOL = '/omni/raft/1.0.0';
/**
 * Largest Raft message accepted. Appends are bounded by maxSizePerMsgBytes (1 MiB); the
 * bound here is for a snapshot, which travels in one message: the cluster state is capped at
 * MAX_STATE_BYTES (32 MiB), and its snapshot encoding fits in MAX_SNAPSHOT_BYTES plus framing.
 */
export const MAX_RAFT_FRAME_BYTES = MAX_SNAPSHOT_BYTES + 1024 * 1024;
/** Messages waiting per peer before new ones are dropped. */
export const PEER_QUEUE_LIMIT = 4096;
/** Bytes waiting per peer before new messages are dropped (a snapshot counts in full). */
export const PEER_QUEUE_BYTES_LIMIT = 96 * 1024 * 1024;
/** Queued messages are written together up to this many bytes. */
const COALESCE_MAX_BYTES = 1024 * 1024;
const BACKOFF_MIN_MS = 50;
const BACKOFF_MAX_MS = 3000;
const DIAL_TIMEOUT_MS = 3000;
/** One inbound stream per peer is expected; a few extra cover reconnect races. */
const MAX_INBOUND_STREAMS = 8;

export interface RaftTransportOptions {
  host: OmniHost;
  onMessage: (m: Message) => void;
  /** Whether Raft messages from this peer may be processed (cluster members only). */
  isTrustedSender: (peer: string) => boolean;
  log: Logger;
  /** A peer could not be dialled or written to (for raft.reportUnreachable: stop pipelining to it). */
  onUnreachable?: (peer: string) => void;
}

/**
 * A message from the network must carry a term: term 0 means "local" to the Raft core and
 * skips its term checks. The one exception is a follower's forwarded ReadIndex.
 */
export function checkNetworkMessage(m: Message, remote: string, self: string): string | undefined {
  if (m.from !== remote || m.to !== self) return `message claims from=${m.from.slice(0, 64)} to=${m.to.slice(0, 64)} on a stream from ${remote}`;
  if (m.type === MessageType.Hup) return 'Hup is local-only';
  if (m.term === 0 && m.type !== MessageType.ReadIndex) return `${MessageType[m.type] ?? m.type} without a term`;
  return undefined;
}

export class RaftTransport {
  private readonly peers = new Map<string, PeerSender>();
  private readonly opts: RaftTransportOptions;
  private readonly selfId: string;
  private stopped = false;
  /** Messages refused on arrival (garbage, oversized, spoofed sender). */
  rejectedInbound = 0;

  constructor(opts: RaftTransportOptions) {
    this.opts = opts;
    this.selfId = opts.host.peerId.toString();
  }

  async start(): Promise<void> {
    await this.opts.host.handle(RAFT_PROTOCOL, (stream, conn) => this.receive(stream, conn), {
      maxInboundStreams: MAX_INBOUND_STREAMS,
      maxOutboundStreams: 8,
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const p of this.peers.values()) p.stop();
    this.peers.clear();
    await this.opts.host.unhandle(RAFT_PROTOCOL).catch(() => undefined);
  }

  send(messages: Message[]): void {
    if (this.stopped) return;
    for (const m of messages) {
      if (m.to === this.selfId) continue;
      let peer = this.peers.get(m.to);
      if (!peer) {
        let id: PeerId;
        try {
          id = peerIdFromString(m.to);
        } catch {
          this.opts.log.warn(`raft: cannot send to invalid peer id ${m.to.slice(0, 64)}`);
          continue;
        }
        peer = new PeerSender(this.opts.host, id, this.opts.log, this.opts.onUnreachable);
        this.peers.set(m.to, peer);
      }
      peer.enqueue(encodeRaftMessage(m), m.type === MessageType.Snap);
    }
  }

  /** Forget a removed member's queue and stream. */
  dropPeer(id: string): void {
    this.peers.get(id)?.stop();
    this.peers.delete(id);
  }

  droppedOutbound(): number {
    let n = 0;
    for (const p of this.peers.values()) n += p.dropped;
    return n;
  }

  private async receive(stream: Stream, conn: Connection): Promise<void> {
    const remote = conn.remotePeer.toString();
    try {
      for await (const frame of readFrames(stream, MAX_RAFT_FRAME_BYTES)) {
        mark('frame-in');
        const m = decodeRaftMessage(frame, MAX_RAFT_FRAME_BYTES);
        const problem = checkNetworkMessage(m, remote, this.selfId);
        if (problem) throw new Error(problem);
        if (!this.opts.isTrustedSender(remote)) throw new Error('sender is not a member of this cluster');
        this.opts.onMessage(m);
      }
    } catch (err) {
      this.rejectedInbound++;
      this.opts.log.warn(`raft: rejected stream from ${remote}: ${(err as Error).message}`);
      stream.abort(err as Error);
    }
  }
}

class PeerSender {
  private readonly queue: { bytes: Uint8Array; snapshot: boolean }[] = [];
  private queuedBytes = 0;
  private wake: (() => void) | undefined;
  private wakeScheduled = false;
  private stream: Stream | undefined;
  private running = true;
  private backoffMs = 0;
  private readonly abort = new AbortController();
  dropped = 0;

  constructor(
    private readonly host: OmniHost,
    private readonly peer: PeerId,
    private readonly log: Logger,
    private readonly onUnreachable?: (peer: string) => void,
  ) {
    void this.loop();
  }

  enqueue(bytes: Uint8Array, snapshot: boolean): void {
    const full = this.queue.length >= PEER_QUEUE_LIMIT || this.queuedBytes + bytes.length > PEER_QUEUE_BYTES_LIMIT;
    // One snapshot in the queue at a time: a newer one is resent by Raft if still needed.
    if (full || (snapshot && this.queue.some((q) => q.snapshot))) {
      this.dropped++;
      return;
    }
    this.queue.push({ bytes, snapshot });
    this.queuedBytes += bytes.length;
    // The loop writes at the next turn of the event loop (setImmediate), not in this microtask
    // run: what the current event set off goes first (a write's HTTP answer comes before the
    // commit index sent to followers), and every message queued by the events read in this turn
    // (under load, many Readys) goes out in one socket write.
    if (this.wake && !this.wakeScheduled) {
      this.wakeScheduled = true;
      setImmediate(this.wakeLoop);
    }
  }

  private readonly wakeLoop = (): void => {
    this.wakeScheduled = false;
    this.wake?.();
  };

  stop(): void {
    this.running = false;
    this.abort.abort();
    this.wake?.();
    this.stream?.abort(new Error('transport stopped'));
  }

  private async loop(): Promise<void> {
    while (this.running) {
      if (this.queue.length === 0) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = undefined;
        continue;
      }
      try {
        const stream = await this.ensureStream();
        while (this.queue.length > 0 && this.running) {
          // Everything queued goes out as one write: one muxer frame, one encryption, one
          // syscall, instead of one per Raft message (the leader's hot path under load).
          const batch: Uint8Array[] = [];
          let size = 0;
          while (this.queue.length > 0 && (batch.length === 0 || size + this.queue[0].bytes.length <= COALESCE_MAX_BYTES)) {
            const next = this.queue.shift()!;
            this.queuedBytes -= next.bytes.length;
            const framed = encodeFrame(next.bytes);
            batch.push(framed);
            size += framed.length;
          }
          mark('sock-write');
          await sendDrained(stream, batch.length === 1 ? batch[0] : concat(batch, size), this.abort.signal);
        }
        this.backoffMs = 0;
      } catch (err) {
        if (!this.running) return;
        this.stream?.abort(err as Error);
        this.stream = undefined;
        // Messages queued during an outage are stale by the time we reconnect; Raft resends.
        this.dropped += this.queue.length;
        this.queue.length = 0;
        this.queuedBytes = 0;
        this.backoffMs = Math.min(BACKOFF_MAX_MS, Math.max(BACKOFF_MIN_MS, this.backoffMs * 2));
        this.log.debug(`raft: send to ${this.peer} failed (${(err as Error).message}); retry in ${this.backoffMs} ms`);
        this.onUnreachable?.(this.peer.toString());
        await sleep(this.backoffMs, this.abort.signal);
      }
    }
  }

  private async ensureStream(): Promise<Stream> {
    if (this.stream && this.stream.status === 'open' && this.stream.writeStatus === 'writable') return this.stream;
    this.stream?.abort(new Error('stream no longer writable'));
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(DIAL_TIMEOUT_MS)]);
    const stream = await this.host.dialProtocol(this.peer, RAFT_PROTOCOL, { signal });
    // The stream carries heartbeats constantly; never let libp2p close it for inactivity.
    stream.inactivityTimeout = 0;
    this.stream = stream;
    return stream;
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });
}

function concat(parts: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
