// The leader's view of one follower: how far its log matches and how replication is paced.
// Probe: one append per heartbeat until we find where logs match.
// Replicate: pipelined appends, bounded by an in-flight window (flow control).
// Snapshot: a snapshot is on its way; appends wait.

export enum ProgressState {
  Probe = 'probe',
  Replicate = 'replicate',
  Snapshot = 'snapshot',
}

/**
 * Bounded ring of the in-flight append messages to one follower: the last index and the entry
 * bytes of each (etcd's inflights with MaxInflightBytes). Full at `capacity` messages or once
 * the bytes in flight reach `maxBytes`: one message is always allowed when none is in flight,
 * so a single entry larger than the bound still goes out, alone.
 */
export class Inflights {
  private readonly indexes: number[];
  private readonly sizes: number[];
  private start = 0;
  count = 0;
  /** Entry bytes of the messages in flight. */
  bytes = 0;

  constructor(
    readonly capacity: number,
    readonly maxBytes = Infinity,
  ) {
    this.indexes = new Array<number>(capacity).fill(0);
    this.sizes = new Array<number>(capacity).fill(0);
  }

  full(): boolean {
    return this.count === this.capacity || (this.count > 0 && this.bytes >= this.maxBytes);
  }

  add(lastIndex: number, sizeBytes = 0): void {
    if (this.full()) throw new Error('inflights full');
    const at = (this.start + this.count) % this.capacity;
    this.indexes[at] = lastIndex;
    this.sizes[at] = sizeBytes;
    this.count++;
    this.bytes += sizeBytes;
  }

  /** Frees every in-flight message whose last index is <= `index`. */
  freeLE(index: number): void {
    while (this.count > 0 && this.indexes[this.start] <= index) this.freeFirstOne();
  }

  freeFirstOne(): void {
    if (this.count === 0) return;
    this.bytes -= this.sizes[this.start];
    this.start = (this.start + 1) % this.capacity;
    this.count--;
    if (this.count === 0) this.bytes = 0;
  }

  reset(): void {
    this.start = 0;
    this.count = 0;
    this.bytes = 0;
  }
}

export class Progress {
  match = 0;
  next: number;
  state = ProgressState.Probe;
  /** Probe state: an append was sent and we wait for its answer (or the next heartbeat). */
  probeSent = false;
  pendingSnapshot = 0;
  /** Ticks spent waiting for a snapshot to be acknowledged; it is resent when too long. */
  snapshotWaitTicks = 0;
  /** Heard from the follower since the last check-quorum round. */
  recentActive = false;
  readonly inflights: Inflights;

  constructor(next: number, maxInflightMsgs: number, maxInflightBytes = Infinity) {
    this.next = next;
    this.inflights = new Inflights(maxInflightMsgs, maxInflightBytes);
  }

  private resetState(state: ProgressState): void {
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.snapshotWaitTicks = 0;
    this.state = state;
    this.inflights.reset();
  }

  becomeProbe(): void {
    if (this.state === ProgressState.Snapshot) {
      const pending = this.pendingSnapshot;
      this.resetState(ProgressState.Probe);
      this.next = Math.max(this.match + 1, pending + 1);
    } else {
      this.resetState(ProgressState.Probe);
      this.next = this.match + 1;
    }
  }

  becomeReplicate(): void {
    this.resetState(ProgressState.Replicate);
    this.next = this.match + 1;
  }

  becomeSnapshot(snapshotIndex: number): void {
    this.resetState(ProgressState.Snapshot);
    this.pendingSnapshot = snapshotIndex;
  }

  /** An acknowledgement up to `index`; false if it was stale. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (this.match < index) {
      this.match = index;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  /** Pipelining: we sent entries up to `lastIndex` without waiting. */
  optimisticUpdate(lastIndex: number): void {
    this.next = lastIndex + 1;
  }

  /**
   * A rejection of the append that followed `rejected`; `matchHint` is the largest index that
   * may still match. Returns false when the rejection is stale.
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === ProgressState.Replicate) {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1, 1);
    this.probeSent = false;
    return true;
  }

  isPaused(): boolean {
    switch (this.state) {
      case ProgressState.Probe:
        return this.probeSent;
      case ProgressState.Replicate:
        return this.inflights.full();
      case ProgressState.Snapshot:
        return true;
    }
  }
}
