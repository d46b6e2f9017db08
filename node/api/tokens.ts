// Cluster secrets (base64url parts joined by '.', which base64url never contains). A join token carries the cluster's network key (so the joiner can pass the
// private-network handshake) plus a random secret; an admin token is a random secret for the
// HTTP API. The replicated state keeps only SHA-256 hashes; checks are constant-time.
import { createHash, hash, randomBytes, timingSafeEqual } from 'node:crypto';
import { NETWORK_KEY_BYTES } from '../p2p/host.js';
import { OmniError } from '../errors.js';

const SECRET_BYTES = 24;
const JOIN_PREFIX = 'OMNIJ1';
const ADMIN_PREFIX = 'OMNIA1';
const PULL_PREFIX = 'OMNIP1';
/** Longest token string we will even hash (inputs are untrusted). */
export const MAX_TOKEN_CHARS = 256;

export function sha256Hex(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

export function newNetworkKey(): Uint8Array {
  return new Uint8Array(randomBytes(NETWORK_KEY_BYTES));
}

export function newTokenId(): string {
  return randomBytes(6).toString('hex');
}

export function newAdminToken(): string {
  return `${ADMIN_PREFIX}.${randomBytes(SECRET_BYTES).toString('base64url')}`;
}

/** A read-only token: the image registry (docker login / pull) and GET /metrics; no other HTTP API access. */
export function newPullToken(): string {
  return `${PULL_PREFIX}.${randomBytes(SECRET_BYTES).toString('base64url')}`;
}

export function newJoinToken(networkKey: Uint8Array): string {
  return `${JOIN_PREFIX}.${Buffer.from(networkKey).toString('base64url')}.${randomBytes(SECRET_BYTES).toString('base64url')}`;
}

/** The network key inside a join token; throws a clear error for anything else. */
export function networkKeyFromJoinToken(token: string): Uint8Array {
  const parts = token.length <= MAX_TOKEN_CHARS ? token.split('.') : [];
  if (parts.length !== 3 || parts[0] !== JOIN_PREFIX) {
    throw new OmniError('BAD_TOKEN', `not a join token (expected ${JOIN_PREFIX}.…; get one from the output of omnid init)`);
  }
  const key = Buffer.from(parts[1], 'base64url');
  if (key.length !== NETWORK_KEY_BYTES) throw new OmniError('BAD_TOKEN', 'join token is damaged (bad network key part)');
  return new Uint8Array(key);
}

/**
 * A join token chosen before the cluster exists (`omnid init --join-token`, made by `omnid
 * join-token`): the network key inside it, after checking the secret part is one this code would
 * have made (a short or hand-typed secret is refused: it is the only thing a joiner proves).
 */
export function networkKeyFromChosenJoinToken(token: string): Uint8Array {
  const key = networkKeyFromJoinToken(token);
  const secret = Buffer.from(token.split('.')[2], 'base64url');
  if (secret.length !== SECRET_BYTES || secret.toString('base64url') !== token.split('.')[2]) {
    throw new OmniError('BAD_TOKEN', `the join token's secret part is not ${SECRET_BYTES} random bytes (make a token with omnid join-token)`);
  }
  return key;
}

/**
 * The credentials of an `Authorization: Bearer <token>` header ('' when absent or another
 * scheme). The scheme is case-insensitive (RFC 9110 §11.1): `bearer` and `BEARER` work too.
 */
export function bearerToken(header: string | undefined): string {
  const m = /^bearer +(\S*) *$/i.exec(header ?? '');
  return m ? m[1] : '';
}

/** Constant-time check of a presented token against stored hex hashes. */
export function tokenMatches(presented: string, hashes: readonly string[]): boolean {
  if (presented.length === 0 || presented.length > MAX_TOKEN_CHARS) return false;
  const digest = hash('sha256', presented, 'buffer');
  let found = false;
  for (const h of hashes) {
    const stored = storedHash(h);
    if (stored.length === digest.length && timingSafeEqual(stored, digest)) found = true;
  }
  return found;
}

/** Stored hashes decoded once (every API request checks its token against all of them). */
const STORED_HASHES_KEPT = 4096;
const storedHashes = new Map<string, Uint8Array>();
function storedHash(hex: string): Uint8Array {
  let b = storedHashes.get(hex);
  if (b === undefined) {
    if (storedHashes.size >= STORED_HASHES_KEPT) storedHashes.clear();
    // a copy of its own (a small Buffer is a view of Node's shared 8 KiB pool, which it would keep alive)
    b = Uint8Array.from(Buffer.from(hex, 'hex'));
    storedHashes.set(hex, b);
  }
  return b;
}

/** The record whose hash the presented token has (constant-time over all of them), if any. */
export function matchToken<T extends { hash: string }>(presented: string, records: readonly T[]): T | undefined {
  if (presented.length === 0 || presented.length > MAX_TOKEN_CHARS) return undefined;
  // one-shot hash(): no Hash object per request (issue 13)
  const digest = hash('sha256', presented, 'buffer');
  let found: T | undefined;
  for (const r of records) {
    const stored = storedHash(r.hash);
    if (stored.length === digest.length && timingSafeEqual(stored, digest)) found = r;
  }
  return found;
}
