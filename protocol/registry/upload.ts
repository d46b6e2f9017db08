// Upload sessions of the distribution API (POST, then PATCH chunks in order, then PUT with the
// digest). The decisions about a chunk, apart from the bytes: where it must start, how long it
// may be, and when a session has been idle too long.
import { parseUploadContentRange } from './http-ranges.js';

/** Sessions a node keeps open at once (each holds a temp file). */
export const MAX_UPLOAD_SESSIONS = 64;
/** A session with no request for this long is dropped with its temp file. */
export const UPLOAD_IDLE_TIMEOUT_MS = 30 * 60 * 1000;

export interface UploadState {
  id: string;
  repo: string;
  offsetBytes: number;
  lastActiveMs: number;
  /** A request is writing to it (a second one at once is refused). */
  busy: boolean;
}

export type ChunkCheck = { ok: true; expectedBytes?: number } | { ok: false; code: 'RANGE_INVALID' | 'SIZE_INVALID' | 'BLOB_UPLOAD_INVALID'; message: string };

/**
 * Whether a chunk may be appended to `s`. `contentRange` (optional on PATCH, as docker streams
 * a whole layer without it) must start at the session's offset; with Content-Length too, the
 * two must agree. The result carries the byte count to expect, when known.
 */
export function checkChunk(s: UploadState, contentRange: string | undefined, contentLength: number | undefined, maxBlobBytes: number): ChunkCheck {
  if (s.busy) return { ok: false, code: 'BLOB_UPLOAD_INVALID', message: 'another request is writing to this upload' };
  let expected = contentLength;
  if (contentRange !== undefined) {
    const r = parseUploadContentRange(contentRange);
    if (!r) return { ok: false, code: 'RANGE_INVALID', message: `malformed Content-Range ${JSON.stringify(contentRange.slice(0, 60))} (expected <start>-<end>)` };
    if (r.start !== s.offsetBytes) return { ok: false, code: 'RANGE_INVALID', message: `the chunk starts at ${r.start} but the upload has ${s.offsetBytes} bytes; send the chunk that starts there` };
    const n = r.end - r.start + 1;
    if (contentLength !== undefined && contentLength !== n) return { ok: false, code: 'SIZE_INVALID', message: `Content-Range covers ${n} bytes, Content-Length says ${contentLength}` };
    expected = n;
  }
  if (expected !== undefined && s.offsetBytes + expected > maxBlobBytes) return { ok: false, code: 'SIZE_INVALID', message: `the blob would exceed ${maxBlobBytes} bytes` };
  return { ok: true, ...(expected !== undefined ? { expectedBytes: expected } : {}) };
}

/** Sessions idle since before `nowMs - idleTimeoutMs` (not busy ones). */
export function idleSessions(sessions: Iterable<UploadState>, nowMs: number, idleTimeoutMs: number): string[] {
  const out: string[] = [];
  for (const s of sessions) if (!s.busy && nowMs - s.lastActiveMs > idleTimeoutMs) out.push(s.id);
  return out;
}
