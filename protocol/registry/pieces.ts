// Blobs are cut into fixed-size pieces, each with its own sha256 recorded at push time, so a
// node fetching a blob from several peers at once can verify (and refetch) each piece alone,
// and a node serving a blob verifies each piece before sending it.

/**
 * The smallest piece size of blobs pushed by this version (recorded with each blob, so it may
 * change later). Small pieces spread sooner: a piece can be passed on once it has arrived whole
 * and been checked, so while seven nodes pull one image each serves the others the pieces it
 * already has; at 1 MiB a 50 MB image is 50 pieces.
 */
export const PIECE_SIZE_BYTES = 1024 * 1024;
/** Pieces per blob the piece size aims to stay under (bounds the record in the replicated state). */
export const TARGET_MAX_PIECES = 1024;
export const MIN_PIECE_SIZE_BYTES = 64 * 1024;
export const MAX_PIECE_SIZE_BYTES = 64 * 1024 * 1024;

/** The piece size for a new blob of `sizeBytes`: 1 MiB, doubled until it has at most 1024 pieces (16 GiB: 16 MiB pieces). */
export function pieceSizeFor(sizeBytes: number): number {
  let size = PIECE_SIZE_BYTES;
  while (size < MAX_PIECE_SIZE_BYTES && pieceCount(sizeBytes, size) > TARGET_MAX_PIECES) size *= 2;
  return size;
}

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

/** Bitmaps of pieces (bit i of byte i>>3, most significant first) are at most this long. */
export const MAX_PIECE_BITMAP_BYTES = 8192;

/** The pieces held, as a base64 bitmap (the holdings gossip about partly fetched blobs). */
export function encodePieceBitmap(pieces: Iterable<number>): string {
  const list = [...pieces].filter((i) => Number.isSafeInteger(i) && i >= 0 && i < MAX_PIECE_BITMAP_BYTES * 8);
  const bytes = new Uint8Array(list.length ? (Math.max(...list) >> 3) + 1 : 0);
  for (const i of list) bytes[i >> 3] |= 0x80 >> (i & 7);
  return Buffer.from(bytes).toString('base64');
}

/** The pieces of a bitmap; undefined when it is not base64 of at most MAX_PIECE_BITMAP_BYTES. */
export function decodePieceBitmap(b64: unknown): number[] | undefined {
  if (typeof b64 !== 'string' || b64.length > Math.ceil(MAX_PIECE_BITMAP_BYTES / 3) * 4 || !/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) return undefined;
  const bytes = Buffer.from(b64, 'base64');
  const out: number[] = [];
  bytes.forEach((b, n) => {
    for (let bit = 0; bit < 8; bit++) if (b & (0x80 >> bit)) out.push(n * 8 + bit);
  });
  return out;
}
