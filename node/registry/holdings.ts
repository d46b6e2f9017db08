// Which node holds which blob, by gossip (gossipsub topic `/omni/registry/have/1/<cluster>`),
// never by Raft: holdings change with every push and fetch, and a stale answer only costs a
// refused request (the fetcher then asks another peer, or asks the members directly).
//
// Each node publishes signed messages about itself only:
//   {id, add: [digest…]}     when blobs arrive (a push, a fetch), at once;
//   {id, remove: [digest…]}  when blobs leave (deleted, found corrupt), at once;
//   {id, full: [digest…]}    everything it holds, every announceIntervalMs, in chunks of at most
//                            MAX_DIGESTS_PER_MESSAGE; an entry not refreshed for
//                            expireAfterMs is forgotten (a node that died or left);
//   {id, partial: {digest: bitmap | null}}
//                            the pieces it already has of blobs it is fetching (a base64
//                            bitmap, protocol/registry/pieces.ts), at most every
//                            PARTIAL_PUBLISH_MS while they change and again while the fetch
//                            runs; null when the fetch stops. Others fetching the same blob
//                            ask it for those pieces. Forgotten after PARTIAL_EXPIRE_MS, or at
//                            once when the node announces the whole blob.
import type { OmniHost } from '../p2p/host.js';
import type { Logger } from '../logger.js';
import { isDigest } from '../../protocol/registry/digest.js';
import { decodePieceBitmap, encodePieceBitmap } from '../../protocol/registry/pieces.js';

export const DEFAULT_ANNOUNCE_INTERVAL_MS = 10_000;
const MAX_DIGESTS_PER_MESSAGE = 1000;
const MAX_MESSAGE_BYTES = 128 * 1024;
/** Peers and blobs tracked at most (memory bound). */
const MAX_TRACKED_PEERS = 1024;
const MAX_TRACKED_BLOBS_PER_PEER = 100_000;
/** Partly fetched blobs in one message, and tracked per peer. */
const MAX_PARTIAL_PER_MESSAGE = 16;
const MAX_TRACKED_PARTIAL_PER_PEER = 64;
/** How often at most this node publishes what it has of the blobs it is fetching. */
export const PARTIAL_PUBLISH_MS = 150;
/** A partial holding not refreshed for this long is forgotten (the fetcher refreshes it every second or so). */
export const PARTIAL_EXPIRE_MS = 5_000;

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
  /** peer → digest → the pieces it has of a blob it is fetching, and when that was said. */
  private readonly partial = new Map<string, Map<string, { pieces: number[]; atMs: number }>>();
  /** What this node has of the blobs it fetches, waiting to be published (null: fetch over). */
  private readonly pendingPartial = new Map<string, number[] | null>();
  private partialTimer: NodeJS.Timeout | undefined;
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
    clearTimeout(this.partialTimer);
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

  /** Peers (not this node) fetching `digest`, with the pieces they said they have. */
  partialHolders(digest: string, nowMs = Date.now()): { peer: string; pieces: number[] }[] {
    const out: { peer: string; pieces: number[] }[] = [];
    for (const [peer, blobs] of this.partial) {
      const e = blobs.get(digest);
      if (e && nowMs - e.atMs <= PARTIAL_EXPIRE_MS) out.push({ peer, pieces: e.pieces });
    }
    return out;
  }

  /**
   * What this node has of a blob it is fetching (null: the fetch ended), published within
   * PARTIAL_PUBLISH_MS together with the other changes since the last message.
   */
  fetching(digest: string, pieces: number[] | null): void {
    this.pendingPartial.set(digest, pieces);
    this.partialTimer ??= setTimeout(() => this.flushPartial(), PARTIAL_PUBLISH_MS);
  }

  private flushPartial(): void {
    this.partialTimer = undefined;
    const entries = [...this.pendingPartial];
    this.pendingPartial.clear();
    for (let i = 0; i < entries.length; i += MAX_PARTIAL_PER_MESSAGE) {
      const partial: Record<string, string | null> = {};
      for (const [d, pieces] of entries.slice(i, i + MAX_PARTIAL_PER_MESSAGE)) partial[d] = pieces === null ? null : encodePieceBitmap(pieces);
      this.publish({ partial });
    }
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
    for (const [peer, blobs] of this.partial) {
      for (const [d, e] of blobs) if (nowMs - e.atMs > PARTIAL_EXPIRE_MS) blobs.delete(d);
      if (blobs.size === 0) this.partial.delete(peer);
    }
  }

  private publish(body: { add?: string[]; remove?: string[]; full?: string[]; partial?: Record<string, string | null> }): void {
    const msg = new TextEncoder().encode(JSON.stringify({ id: this.self, ...body }));
    this.o.host.services.pubsub.publish(this.topic, msg).catch((err: Error) => this.o.log.debug(`registry: holdings publish failed: ${err.message}`));
  }

  private receive(msg: { topic: string; data: Uint8Array; type: string; from?: { toString(): string } }): void {
    if (msg.topic !== this.topic || msg.data.length > MAX_MESSAGE_BYTES) return;
    const from = msg.type === 'signed' ? msg.from?.toString() : undefined;
    let m: { id?: unknown; add?: unknown; remove?: unknown; full?: unknown; partial?: unknown };
    try {
      m = JSON.parse(new TextDecoder().decode(msg.data));
    } catch {
      return;
    }
    // Signed messages prove the sender; a node speaks only for itself.
    if (!from || m.id !== from || from === this.self) return;
    const list = (v: unknown) => (Array.isArray(v) ? (v.slice(0, MAX_DIGESTS_PER_MESSAGE).filter(isDigest) as string[]) : []);
    const now = Date.now();
    const whole = [...list(m.add), ...list(m.full)];
    this.note(from, whole, now);
    const blobs = this.peers.get(from);
    for (const d of list(m.remove)) blobs?.delete(d);
    const partial = this.partial.get(from);
    for (const d of whole) partial?.delete(d);
    if (m.partial && typeof m.partial === 'object' && !Array.isArray(m.partial)) this.notePartial(from, Object.entries(m.partial as Record<string, unknown>).slice(0, MAX_PARTIAL_PER_MESSAGE), now);
  }

  private notePartial(peer: string, entries: [string, unknown][], nowMs: number): void {
    let blobs = this.partial.get(peer);
    for (const [d, bitmap] of entries) {
      if (!isDigest(d)) continue;
      if (bitmap === null) {
        blobs?.delete(d);
        continue;
      }
      const pieces = decodePieceBitmap(bitmap);
      if (!pieces) continue;
      if (!blobs) {
        if (this.partial.size >= MAX_TRACKED_PEERS) return;
        blobs = new Map();
        this.partial.set(peer, blobs);
      }
      if (blobs.size < MAX_TRACKED_PARTIAL_PER_PEER || blobs.has(d)) blobs.set(d, { pieces, atMs: nowMs });
    }
    if (blobs?.size === 0) this.partial.delete(peer);
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
