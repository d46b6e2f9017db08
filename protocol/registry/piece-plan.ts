// Which piece of a blob to ask which peer for next (pure; node/registry/blob-fetcher.ts does the
// I/O). Pieces are spread over every usable peer at once, a bounded number in flight per peer
// and in all (which bounds the memory a transfer holds); rarest pieces first when peers hold
// different pieces. A piece that fails its digest is asked again of another peer; a peer that
// sends two bad pieces, or stalls, or fails, is dropped from the transfer and its pieces go back
// to the queue. The plan is stuck when pieces are missing and no peer is left to ask.

export interface PiecePlanLimits {
  /** Pieces in flight to one peer. */
  maxPerPeer: number;
  /** Pieces in flight in all (each holds one piece in memory). */
  maxInFlight: number;
  /** Bad pieces a peer may send before it is dropped. */
  maxBadPerPeer: number;
}

export const DEFAULT_PIECE_PLAN_LIMITS: PiecePlanLimits = { maxPerPeer: 4, maxInFlight: 8, maxBadPerPeer: 2 };

export interface Assignment {
  piece: number;
  peer: string;
}

interface PeerState {
  /** Pieces it holds (undefined: all of them). */
  has?: Set<number>;
  inFlight: number;
  bad: number;
  dropped?: string;
  /** Pieces it failed (bad digest): not asked of it again. */
  failed: Set<number>;
  served: number;
}

export class PiecePlan {
  private readonly done: boolean[];
  private readonly inFlight = new Map<number, string>();
  private readonly peers = new Map<string, PeerState>();
  private remaining: number;
  private order = 0;

  constructor(
    readonly pieceCount: number,
    private readonly limits: PiecePlanLimits = DEFAULT_PIECE_PLAN_LIMITS,
  ) {
    this.done = new Array<boolean>(pieceCount).fill(false);
    this.remaining = pieceCount;
  }

  /** A peer that holds the blob (`has`: only those pieces). Adding a dropped peer again does nothing. */
  addPeer(peer: string, has?: Iterable<number>): void {
    if (this.peers.has(peer)) return;
    this.peers.set(peer, { has: has ? new Set(has) : undefined, inFlight: 0, bad: 0, failed: new Set(), served: 0 });
  }

  /** A piece already present (a resumed fetch). */
  markDone(piece: number): void {
    if (this.done[piece]) return;
    this.done[piece] = true;
    this.remaining--;
  }

  get complete(): boolean {
    return this.remaining === 0;
  }

  get inFlightCount(): number {
    return this.inFlight.size;
  }

  /** Pieces missing, none in flight, and no usable peer has any of them. */
  get stuck(): boolean {
    if (this.complete || this.inFlight.size > 0) return false;
    for (let i = 0; i < this.pieceCount; i++) if (!this.done[i] && this.candidates(i).length > 0) return false;
    return true;
  }

  /** Peers still usable. */
  usablePeers(): string[] {
    return [...this.peers].filter(([, p]) => !p.dropped).map(([id]) => id);
  }

  /** Why each dropped peer was dropped. */
  droppedPeers(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [id, p] of this.peers) if (p.dropped) out[id] = p.dropped;
    return out;
  }

  /** Pieces each peer delivered (good ones). */
  servedBy(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [id, p] of this.peers) if (p.served > 0) out[id] = p.served;
    return out;
  }

  private candidates(piece: number): string[] {
    const out: string[] = [];
    for (const [id, p] of this.peers) {
      if (p.dropped || p.failed.has(piece)) continue;
      if (p.has && !p.has.has(piece)) continue;
      out.push(id);
    }
    return out;
  }

  /**
   * The requests to start now: missing pieces not in flight, rarest first (fewest usable
   * holders), then in order; each to the least busy peer that has it and has room.
   */
  next(): Assignment[] {
    const out: Assignment[] = [];
    const wanted: { piece: number; holders: string[] }[] = [];
    for (let i = 0; i < this.pieceCount; i++) {
      if (this.done[i] || this.inFlight.has(i)) continue;
      const holders = this.candidates(i);
      if (holders.length > 0) wanted.push({ piece: i, holders });
    }
    wanted.sort((a, b) => a.holders.length - b.holders.length || a.piece - b.piece);
    for (const { piece, holders } of wanted) {
      if (this.inFlight.size >= this.limits.maxInFlight) break;
      let best: string | undefined;
      let bestLoad = Infinity;
      for (const h of holders) {
        const p = this.peers.get(h)!;
        if (p.inFlight >= this.limits.maxPerPeer) continue;
        // Least busy; ties go round-robin so every peer gets work.
        const load = p.inFlight * 1000 + ((this.order + [...this.peers.keys()].indexOf(h)) % Math.max(1, this.peers.size));
        if (load < bestLoad) {
          bestLoad = load;
          best = h;
        }
      }
      if (best === undefined) continue;
      this.peers.get(best)!.inFlight++;
      this.inFlight.set(piece, best);
      out.push({ piece, peer: best });
      this.order++;
    }
    return out;
  }

  private settle(piece: number, peer: string): PeerState | undefined {
    if (this.inFlight.get(piece) !== peer) return undefined;
    this.inFlight.delete(piece);
    const p = this.peers.get(peer)!;
    p.inFlight--;
    return p;
  }

  /** The piece arrived and matched its digest. */
  onPiece(piece: number, peer: string): void {
    const p = this.settle(piece, peer);
    if (!p) return;
    p.served++;
    this.markDone(piece);
  }

  /** The piece arrived and did not match its digest: ask another peer; drop a repeat offender. */
  onBadPiece(piece: number, peer: string): void {
    const p = this.settle(piece, peer);
    if (!p) return;
    p.failed.add(piece);
    p.bad++;
    if (p.bad >= this.limits.maxBadPerPeer) this.drop(peer, `sent ${p.bad} pieces that failed their digest`);
  }

  /** The request failed without a piece (the peer errored or stalled): the peer is dropped. */
  onPeerFailed(piece: number, peer: string, why: string): void {
    this.settle(piece, peer);
    this.drop(peer, why);
  }

  /** The peer does not have the blob (any more): dropped, without blame. */
  drop(peer: string, why: string): void {
    const p = this.peers.get(peer);
    if (!p || p.dropped) return;
    p.dropped = why;
  }
}
