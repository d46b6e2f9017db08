// Blobs are cut into fixed-size pieces, each with its own sha256 recorded at push time, so a
// node fetching a blob from several peers at once can verify (and refetch) each piece alone,
// and a node serving a blob verifies each piece before sending it.

/** The piece size of blobs pushed by this version. Recorded with each blob, so it may change later. */
export const PIECE_SIZE_BYTES = 4 * 1024 * 1024;
export const MIN_PIECE_SIZE_BYTES = 64 * 1024;
export const MAX_PIECE_SIZE_BYTES = 64 * 1024 * 1024;

export function pieceCount(sizeBytes: number, pieceSizeBytes: number): number {
  return sizeBytes === 0 ? 0 : Math.ceil(sizeBytes / pieceSizeBytes);
}

/** [start, end) of piece `index`. */
export function pieceSpan(index: number, sizeBytes: number, pieceSizeBytes: number): { start: number; end: number } {
  const start = index * pieceSizeBytes;
  return { start, end: Math.min(sizeBytes, start + pieceSizeBytes) };
}

/** The pieces covering the bytes [start, end] (inclusive end, as HTTP ranges are). */
export function piecesCovering(start: number, endInclusive: number, pieceSizeBytes: number): { first: number; last: number } {
  return { first: Math.floor(start / pieceSizeBytes), last: Math.floor(endInclusive / pieceSizeBytes) };
}

/** Whether a recorded piece list fits a blob of `sizeBytes` (count, size bounds, hex digests). */
export function validPieces(sizeBytes: number, pieceSizeBytes: number, pieces: unknown): pieces is string[] {
  if (!Number.isSafeInteger(pieceSizeBytes) || pieceSizeBytes < MIN_PIECE_SIZE_BYTES || pieceSizeBytes > MAX_PIECE_SIZE_BYTES) return false;
  if (!Array.isArray(pieces) || pieces.length !== pieceCount(sizeBytes, pieceSizeBytes)) return false;
  return pieces.every((p) => typeof p === 'string' && /^[a-f0-9]{64}$/.test(p));
}
