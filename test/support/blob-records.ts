// What the registry's tests say of a blob: its digest and the record of its pieces.
import { createHash } from 'node:crypto';

export const sha = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** The record of `bytes` cut into pieces of `pieceBytes`. */
export function recordOf(bytes: Buffer, pieceBytes: number): { sizeBytes: number; pieceSizeBytes: number; pieces: string[] } {
  const pieces: string[] = [];
  for (let off = 0; off < bytes.length; off += pieceBytes) pieces.push(createHash('sha256').update(bytes.subarray(off, off + pieceBytes)).digest('hex'));
  return { sizeBytes: bytes.length, pieceSizeBytes: pieceBytes, pieces };
}
