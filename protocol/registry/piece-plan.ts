// Which piece of a blob to ask which peer for next (pure; node/registry/blob-fetcher.ts does the
// I/O). Pieces are spread over every usable peer at once, a bounded number in flight per peer
// and in all (which bounds the memory a transfer holds). Peers are of two kinds: holders of the
// whole blob, and peers still fetching it that hold some of its pieces (their piece lists grow as
// the gossip reports them). The rarest pieces go first (fewest usable holders; ties in an order
// shuffled per transfer, so nodes fetching the same blob at once ask for different pieces), and a
// piece that a partial peer can supply goes to it rather than to a whole holder, whose upload is
// kept for the pieces nobody else has yet. A piece that fails its digest is asked again of
// another peer; a peer that sends two bad pieces, or stalls, or fails, is dropped from the
// transfer and its pieces go back to the queue; a peer that turns out not to have a piece (yet)
// is only not asked for it again until it reports it. The plan is stuck when pieces are missing
// and no peer is left to ask.
export interface PiecePlanLimits {
  /** Pieces in flight to one peer. */
  maxPerPeer: number;
  /** Pieces in flight in all (each holds one piece in memory). */
  maxInFlight: number;
  /** Bad pieces a peer may send before it is dropped. */
  maxBadPerPeer: number;
}

export const DEFAULT_PIECE_PLAN_LIMITS: PiecePlanLimits = { maxPerPeer: 2, maxInFlight: 8, maxBadPerPeer: 2 };

export interface Assignment {
  piece: number;
  peer: string;
}

interface PeerState {
  /** Pieces it can be asked for (undefined: all of them). */
  has?: Set<number>;
  /** It is fetching the blob too (else it holds it whole, though it may decline some pieces for a while). */
  partial: boolean;
  inFlight: number;
  bad: number;
  dropped?: string;
  /** Dropped for a failure that may pass (a stall, a reset): asked again when nothing else is left. */
  mayReturn?: boolean;
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

  /** Each piece's place among equally rare ones (a random permutation when an rng is given). */
  private readonly rank: number[];

  /** `random`: uniform in [0, 1), to shuffle the order of equally rare pieces (default: in order). */
  constructor(
    readonly pieceCount: number,
    private readonly limits: PiecePlanLimits = DEFAULT_PIECE_PLAN_LIMITS,
    random?: () => number,
  ) {
    this.done = new Array<boolean>(pieceCount).fill(false);
    this.remaining = pieceCount;
    const order = Array.from({ length: pieceCount }, (_, i) => i);
    if (random) {
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1));
        [order[i], order[j]] = [order[j], order[i]];
      }
    }
    this.rank = new Array<number>(pieceCount);
    order.forEach((piece, place) => (this.rank[piece] = place));
  }

  /**
   * A peer that holds the blob (`has`: only those pieces: a peer still fetching it). Adding a known
   * peer again adds to the pieces it is known to have (or makes it a whole holder); a dropped peer
   * stays dropped.
   */
  addPeer(peer: string, has?: Iterable<number>): void {
    const known = this.peers.get(peer);
    if (!known) {
      this.peers.set(peer, { has: has ? this.validPieces(has) : undefined, partial: has !== undefined, inFlight: 0, bad: 0, failed: new Set(), served: 0 });
      return;
    }
    if (!has) {
      // a whole holder (again): every piece may be asked of it
      known.has = undefined;
      known.partial = false;
    } else if (known.partial && known.has) for (const i of this.validPieces(has)) known.has.add(i);
  }

  private validPieces(has: Iterable<number>): Set<number> {
    const out = new Set<number>();
    for (const i of has) if (Number.isSafeInteger(i) && i >= 0 && i < this.pieceCount) out.add(i);
    return out;
  }

  /** Whether `peer` is a known, usable peer. */
  knows(peer: string): boolean {
    const p = this.peers.get(peer);
    return p !== undefined && !p.dropped;
  }

  /** Whether `peer` is known to hold only some pieces (it is fetching the blob too). */
  isPartial(peer: string): boolean {
    return this.peers.get(peer)?.partial === true;
  }

  /** Usable peers that hold only some pieces. */
  partialPeers(): string[] {
    return [...this.peers].filter(([, p]) => !p.dropped && p.partial).map(([id]) => id);
  }

  /** Pieces done so far. */
  donePieces(): number[] {
    const out: number[] = [];
    this.done.forEach((d, i) => d && out.push(i));
    return out;
  }

  isDone(piece: number): boolean {
    return this.done[piece] === true;
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
   * holders), then in this plan's order; each to the least busy peer that has it and has room —
   * a peer still fetching the blob before a whole holder. `room(peer)`: whether a peer may take
   * one more request beyond this plan's own limits (the fetcher's limit across transfers).
   */
  next(room: (peer: string) => boolean = () => true): Assignment[] {
    const out: Assignment[] = [];
    const wanted: { piece: number; holders: string[] }[] = [];
    for (let i = 0; i < this.pieceCount; i++) {
      if (this.done[i] || this.inFlight.has(i)) continue;
      const holders = this.candidates(i);
      if (holders.length > 0) wanted.push({ piece: i, holders });
    }
    wanted.sort((a, b) => a.holders.length - b.holders.length || this.rank[a.piece] - this.rank[b.piece]);
    const ids = [...this.peers.keys()];
    const full = new Set<string>();
    for (const { piece, holders } of wanted) {
      if (this.inFlight.size >= this.limits.maxInFlight) break;
      let best: string | undefined;
      let bestLoad = Infinity;
      for (const h of holders) {
        const p = this.peers.get(h)!;
        if (p.inFlight >= this.limits.maxPerPeer || full.has(h)) continue;
        if (!room(h)) {
          full.add(h);
          continue;
        }
        // Partial holders first, then the least busy; ties go round-robin so every peer gets work.
        const load = (p.partial ? 0 : 1_000_000) + p.inFlight * 1000 + ((this.order + ids.indexOf(h)) % Math.max(1, ids.length));
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

  /** The peer does not have the piece (yet): not asked for it again until it reports it; not dropped. */
  onMissing(piece: number, peer: string): void {
    const p = this.settle(piece, peer);
    if (!p) return;
    if (p.has) p.has.delete(piece);
    else p.has = new Set(Array.from({ length: this.pieceCount }, (_, i) => i).filter((i) => i !== piece));
  }

  /**
   * The request failed without a piece (the peer errored or stalled): the peer is dropped.
   * `transient`: a failure that may pass (a stall, a reset connection, not a missing blob), so
   * readmitTransient() may take the peer back.
   */
  onPeerFailed(piece: number, peer: string, why: string, transient = false): void {
    this.settle(piece, peer);
    const p = this.peers.get(peer);
    if (!p || p.dropped) return;
    this.drop(peer, why);
    p.mayReturn = transient;
  }

  /**
   * Takes back the peers dropped for a failure that may pass (the fetcher does so when the plan
   * is stuck: a holder whose link was swamped for a while is better than none). Returns how many.
   */
  readmitTransient(): number {
    let n = 0;
    for (const p of this.peers.values()) {
      if (!p.dropped || !p.mayReturn) continue;
      p.dropped = undefined;
      p.mayReturn = false;
      n++;
    }
    return n;
  }

  /** The peer does not have the blob (any more): dropped, without blame. */
  drop(peer: string, why: string): void {
    const p = this.peers.get(peer);
    if (!p || p.dropped) return;
    p.dropped = why;
  }
}
