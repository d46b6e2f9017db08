// Which node holds which blob, by gossip (gossipsub topic `/omni/registry/have/1/<cluster>`),
// never by Raft: holdings change with every push and fetch, and a stale answer only costs a
// refused request (the fetcher then asks another peer, or asks the members directly).
//
// Each node publishes signed messages about itself only:
//   {id, add: [digest…]}     when blobs arrive (a push, a fetch), at once;
//   {id, remove: [digest…]}  when blobs leave (deleted, found corrupt), at once;
//   {id, full: [digest…]}    everything it holds, every announceIntervalMs, in chunks of at most
//                            MAX_DIGESTS_PER_MESSAGE; an entry not refreshed for
//                            expireAfterMs is forgotten (a node that died or left).
import type { OmniHost } from '../p2p/host.js';
import type { Logger } from '../logger.js';
import { isDigest } from '../../protocol/registry/digest.js';

export const DEFAULT_ANNOUNCE_INTERVAL_MS = 10_000;
const MAX_DIGESTS_PER_MESSAGE = 1000;
const MAX_MESSAGE_BYTES = 128 * 1024;
/** Peers and blobs tracked at most (memory bound). */
const MAX_TRACKED_PEERS = 1024;
const MAX_TRACKED_BLOBS_PER_PEER = 100_000;

export interface HoldingsOptions {
  host: OmniHost;
  clusterId: string;
  /** The digests this node holds now. */
  held(): string[];
  log: Logger;
  announceIntervalMs?: number;
  expireAfterMs?: number;
}

export class Holdings {
  private readonly topic: string;
  /** peer → digest → when last announced. */
  private readonly peers = new Map<string, Map<string, number>>();
  private timer: NodeJS.Timeout | undefined;
  private readonly intervalMs: number;
  private readonly expireAfterMs: number;
  private readonly onMessage = (evt: CustomEvent) => this.receive(evt.detail);

  constructor(private readonly o: HoldingsOptions) {
    this.topic = `/omni/registry/have/1/${o.clusterId}`;
    this.intervalMs = o.announceIntervalMs ?? DEFAULT_ANNOUNCE_INTERVAL_MS;
    this.expireAfterMs = o.expireAfterMs ?? this.intervalMs * 3 + 1000;
  }

  private get self(): string {
    return this.o.host.peerId.toString();
  }

  start(): void {
    const pubsub = this.o.host.services.pubsub;
    pubsub.subscribe(this.topic);
    pubsub.addEventListener('message', this.onMessage as never);
    this.timer = setInterval(() => this.announceAll(), this.intervalMs);
    this.announceAll();
  }

  stop(): void {
    clearInterval(this.timer);
    try {
      this.o.host.services.pubsub.removeEventListener('message', this.onMessage as never);
      this.o.host.services.pubsub.unsubscribe(this.topic);
    } catch {
      // already stopped
    }
  }

  /** Peers (not this node) believed to hold `digest`. */
  holders(digest: string, nowMs = Date.now()): string[] {
    const out: string[] = [];
    for (const [peer, blobs] of this.peers) {
      const at = blobs.get(digest);
      if (at !== undefined && nowMs - at <= this.expireAfterMs) out.push(peer);
    }
    return out;
  }

  /** How many blobs `peer` is known to hold (a load measure for placing replicas). */
  heldBy(peer: string): number {
    return this.peers.get(peer)?.size ?? 0;
  }

  /** Records what a direct question to `peer` found (the fetcher asks when gossip knows nobody). */
  learned(peer: string, digest: string, has: boolean): void {
    if (has) this.note(peer, [digest], Date.now());
    else this.peers.get(peer)?.delete(digest);
  }

  /** A peer is known to have lost a blob (it answered BLOB_UNKNOWN or BLOB_CORRUPT). */
  forget(peer: string, digest: string): void {
    this.peers.get(peer)?.delete(digest);
  }

  added(digest: string): void {
    this.publish({ add: [digest] });
  }

  removed(digest: string): void {
    this.publish({ remove: [digest] });
  }

  private announceAll(): void {
    this.expire(Date.now());
    const held = this.o.held();
    for (let i = 0; i < held.length; i += MAX_DIGESTS_PER_MESSAGE) this.publish({ full: held.slice(i, i + MAX_DIGESTS_PER_MESSAGE) });
  }

  private expire(nowMs: number): void {
    for (const [peer, blobs] of this.peers) {
      for (const [d, at] of blobs) if (nowMs - at > this.expireAfterMs) blobs.delete(d);
      if (blobs.size === 0) this.peers.delete(peer);
    }
  }

  private publish(body: { add?: string[]; remove?: string[]; full?: string[] }): void {
    const msg = new TextEncoder().encode(JSON.stringify({ id: this.self, ...body }));
    this.o.host.services.pubsub.publish(this.topic, msg).catch((err: Error) => this.o.log.debug(`registry: holdings publish failed: ${err.message}`));
  }

  private receive(msg: { topic: string; data: Uint8Array; type: string; from?: { toString(): string } }): void {
    if (msg.topic !== this.topic || msg.data.length > MAX_MESSAGE_BYTES) return;
    const from = msg.type === 'signed' ? msg.from?.toString() : undefined;
    let m: { id?: unknown; add?: unknown; remove?: unknown; full?: unknown };
    try {
      m = JSON.parse(new TextDecoder().decode(msg.data));
    } catch {
      return;
    }
    // Signed messages prove the sender; a node speaks only for itself.
    if (!from || m.id !== from || from === this.self) return;
    const list = (v: unknown) => (Array.isArray(v) ? (v.slice(0, MAX_DIGESTS_PER_MESSAGE).filter(isDigest) as string[]) : []);
    const now = Date.now();
    this.note(from, [...list(m.add), ...list(m.full)], now);
    const blobs = this.peers.get(from);
    for (const d of list(m.remove)) blobs?.delete(d);
  }

  private note(peer: string, digests: string[], nowMs: number): void {
    if (digests.length === 0) return;
    let blobs = this.peers.get(peer);
    if (!blobs) {
      if (this.peers.size >= MAX_TRACKED_PEERS) return;
      blobs = new Map();
      this.peers.set(peer, blobs);
    }
    for (const d of digests) if (blobs.size < MAX_TRACKED_BLOBS_PER_PEER || blobs.has(d)) blobs.set(d, nowMs);
  }
}
