// The byte ranges of the distribution API: `Range: bytes=…` on blob GETs (RFC 9110 §14), and
// `Content-Range: <start>-<end>` on upload PATCHes (the distribution spec's form, inclusive end,
// no unit; `bytes ` is tolerated).

/** A satisfiable single range [start, end] (inclusive), 'unsatisfiable', or 'ignore' (serve it all). */
export type RangeResult = { start: number; end: number } | 'unsatisfiable' | 'ignore';

/**
 * Parses a Range header against a blob of `sizeBytes`. Several ranges, or a unit other than
 * bytes, are ignored (RFC 9110 lets a server answer 200 with the whole content); a malformed
 * or out-of-bounds byte range is unsatisfiable (416).
 */
export function parseRangeHeader(header: string | undefined, sizeBytes: number): RangeResult | undefined {
  if (header === undefined) return undefined;
  const m = /^\s*bytes\s*=\s*(.*)$/i.exec(header);
  if (!m) return 'ignore';
  const spec = m[1].trim();
  if (spec.includes(',')) return 'ignore';
  const r = /^(\d{0,16})-(\d{0,16})$/.exec(spec);
  if (!r || (r[1] === '' && r[2] === '')) return 'unsatisfiable';
  if (r[1] === '') {
    // suffix: the last N bytes
    const n = Number(r[2]);
    if (n === 0 || sizeBytes === 0) return 'unsatisfiable';
    return { start: Math.max(0, sizeBytes - n), end: sizeBytes - 1 };
  }
  const start = Number(r[1]);
  const end = r[2] === '' ? sizeBytes - 1 : Math.min(Number(r[2]), sizeBytes - 1);
  if (start >= sizeBytes || end < start) return 'unsatisfiable';
  return { start, end };
}

/** `Content-Range: <start>-<end>` of an upload chunk (inclusive end), or undefined if malformed. */
export function parseUploadContentRange(header: string): { start: number; end: number } | undefined {
  const m = /^\s*(?:bytes\s+)?(\d{1,16})-(\d{1,16})(?:\/(?:\d{1,16}|\*))?\s*$/i.exec(header);
  if (!m) return undefined;
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start) return undefined;
  return { start, end };
}

/** The `Range` header an upload status carries: `0-<last byte>` (`0-0` before any byte, as registries answer). */
export function uploadRangeHeader(offsetBytes: number): string {
  return `0-${Math.max(0, offsetBytes - 1)}`;
}
