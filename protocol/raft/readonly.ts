// ReadIndex bookkeeping on the leader (Raft thesis §6.4): a read request remembers the commit
// index when it arrived; once a quorum of voters acknowledges a heartbeat carrying the
// request's context, the leader knows it was still the leader and the read may be served
// after the state machine applies that index.

import type { NodeId } from './types.js';

export interface ReadRequest {
  index: number;
  /** Who asked: the leader itself or a follower that forwarded the request. */
  from: NodeId;
  context: Uint8Array;
  acks: Set<NodeId>;
}

export const MAX_PENDING_READS = 4096;

export function contextKey(context: Uint8Array): string {
  let s = '';
  for (const b of context) s += b.toString(16).padStart(2, '0');
  return s;
}

export class ReadOnly {
  private readonly pending = new Map<string, ReadRequest>();
  private queue: string[] = [];

  size(): number {
    return this.queue.length;
  }

  add(index: number, from: NodeId, context: Uint8Array): boolean {
    const key = contextKey(context);
    if (this.pending.has(key) || this.queue.length >= MAX_PENDING_READS) return false;
    this.pending.set(key, { index, from, context, acks: new Set() });
    this.queue.push(key);
    return true;
  }

  /** Records an acknowledgement; returns the set of acks for that context (or undefined). */
  ack(context: Uint8Array, from: NodeId): Set<NodeId> | undefined {
    const req = this.pending.get(contextKey(context));
    if (!req) return undefined;
    req.acks.add(from);
    return req.acks;
  }

  /** Removes and returns every request queued up to and including `context`. */
  advance(context: Uint8Array): ReadRequest[] {
    const key = contextKey(context);
    const at = this.queue.indexOf(key);
    if (at < 0) return [];
    const done = this.queue.slice(0, at + 1).map((k) => this.pending.get(k)!);
    for (const k of this.queue.slice(0, at + 1)) this.pending.delete(k);
    this.queue = this.queue.slice(at + 1);
    return done;
  }

  lastPendingContext(): Uint8Array | undefined {
    const key = this.queue[this.queue.length - 1];
    return key === undefined ? undefined : this.pending.get(key)!.context;
  }

  reset(): void {
    this.pending.clear();
    this.queue = [];
  }
}
