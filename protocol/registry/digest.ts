// Content digests as the OCI image spec writes them: `sha256:<64 lowercase hex>`. Only sha256
// is accepted (every client in use pushes sha256; sha512 is refused as unsupported).
export const SHA256_PREFIX = 'sha256:';
const SHA256_RE = /^sha256:[a-f0-9]{64}$/;
/** A digest of any registered algorithm, per the image spec's grammar (for a precise refusal). */
const ANY_DIGEST_RE = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
/** Longest digest string quoted or parsed at all (inputs are untrusted). */
export const MAX_DIGEST_CHARS = 256;

export type DigestCheck = { ok: true; digest: string; hex: string } | { ok: false; code: 'DIGEST_INVALID' | 'UNSUPPORTED'; message: string };

/** A sha256 digest string → its hex part; a well-formed digest of another algorithm is UNSUPPORTED. */
export function checkDigest(s: unknown): DigestCheck {
  if (typeof s !== 'string' || s.length > MAX_DIGEST_CHARS) return { ok: false, code: 'DIGEST_INVALID', message: 'a digest must be sha256:<64 hex digits>' };
  if (SHA256_RE.test(s)) return { ok: true, digest: s, hex: s.slice(SHA256_PREFIX.length) };
  if (ANY_DIGEST_RE.test(s) && !s.startsWith(SHA256_PREFIX)) return { ok: false, code: 'UNSUPPORTED', message: `digest algorithm ${s.slice(0, s.indexOf(':')).slice(0, 32)} is not supported (use sha256)` };
  return { ok: false, code: 'DIGEST_INVALID', message: `${JSON.stringify(s.slice(0, 80))} is not a sha256 digest (sha256:<64 lowercase hex digits>)` };
}

export function isDigest(s: unknown): boolean {
  return typeof s === 'string' && SHA256_RE.test(s);
}

/** sha256:<hex> from 64 hex digits. */
export function digestOfHex(hex: string): string {
  return SHA256_PREFIX + hex;
}

/** The hex part of a valid digest. */
export function hexOf(digest: string): string {
  return digest.slice(SHA256_PREFIX.length);
}
