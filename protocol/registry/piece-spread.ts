// Spreading a blob's pieces over the peers that fetch it at once (pure; the pieces service in
// node/registry/piece-transfer.ts asks it before serving a piece of a blob it holds whole).
//
// When seven nodes pull an image that one node holds, that node's upload is the bottleneck until
// every piece has left it once: after that the fetchers pass pieces on to each other. A piece it
// sends to a second fetcher while other pieces have not left it yet is upload spent twice. So a
// whole holder declines (PIECE_ELSEWHERE) a piece that it is sending, or sent less than
// `windowMs` ago, to another peer — that peer will announce it and pass it on — as long as some
// piece of the blob is "cold" (neither being sent nor sent within the window). A lone fetcher is
// never declined (no other peer), nor is anyone once every piece is hot. Fetchers take a decline
// as "not from this peer for now" and ask it for another piece.

export interface PieceSpreadLimits {
  /** How long after a piece was sent to one peer it is declined to others. */
  windowMs: number;
  /** Blobs tracked at once (least recently served dropped first). */
  maxBlobs: number;
}

export const DEFAULT_PIECE_SPREAD_LIMITS: PieceSpreadLimits = { windowMs: 2_000, maxBlobs: 64 };

interface Hot {
  peer: string;
  /** Sends in progress to that peer. */
  sending: number;
  /** When the last send ended (0 while sending). */
  sentAtMs: number;
}

export class PieceSpread {
  /** digest → piece → the last peer it went to. Map order is least recently used first. */
  private readonly blobs = new Map<string, Map<number, Hot>>();

  constructor(private readonly limits: PieceSpreadLimits = DEFAULT_PIECE_SPREAD_LIMITS) {}

  /**
   * Whether to decline piece `index` of a blob of `pieceCount` pieces to `peer` now; when not
   * declined, the send is recorded as started (call sent() when it ends).
   */
  begin(digest: string, pieceCount: number, index: number, peer: string, nowMs: number): 'serve' | 'decline' {
    const hot = this.touch(digest);
    this.expire(hot, nowMs);
    const h = hot.get(index);
    if (h && h.peer !== peer && hot.size < pieceCount) return 'decline';
    if (h && h.peer === peer) h.sending++;
    else hot.set(index, { peer, sending: 1, sentAtMs: 0 });
    return 'serve';
  }

  /** The send begun by begin() ended (delivered or not). */
  sent(digest: string, index: number, peer: string, nowMs: number): void {
    const h = this.blobs.get(digest)?.get(index);
    if (!h || h.peer !== peer || h.sending === 0) return;
    h.sending--;
    if (h.sending === 0) h.sentAtMs = nowMs;
  }

  private touch(digest: string): Map<number, Hot> {
    let hot = this.blobs.get(digest);
    if (hot) this.blobs.delete(digest);
    else {
      hot = new Map();
      if (this.blobs.size >= this.limits.maxBlobs) this.blobs.delete(this.blobs.keys().next().value!);
    }
    this.blobs.set(digest, hot);
    return hot;
  }

  private expire(hot: Map<number, Hot>, nowMs: number): void {
    for (const [i, h] of hot) if (h.sending === 0 && nowMs - h.sentAtMs >= this.limits.windowMs) hot.delete(i);
  }
}
