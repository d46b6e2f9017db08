// Who may use the registry's /v2/ API, through the flow docker, skopeo and containerd expect:
//
//   1. a request without credentials gets 401 with
//      `WWW-Authenticate: Bearer realm="<this registry>/v2/token",service="omni",scope="…"`;
//   2. the client asks the token endpoint with HTTP Basic credentials (`docker login`: any user
//      name, an Omni token as the password) — GET with ?service&scope, or POST with an OAuth2
//      password / refresh_token form;
//   3. the endpoint answers {token, access_token, expires_in}, and the client sends
//      `Authorization: Bearer <token>` from then on.
//
// The token handed out is the Omni token the client presented: it is checked against the
// replicated token hashes on every request, so a revoked token stops working at once, and the
// node needs the token itself to forward the writes a push makes to the leader (which checks it
// again). Basic credentials and an Omni token as Bearer are accepted on every request too
// (curl -u, clients that skip the token step).
//
// Roles: an admin token may pull and push; a `pull` token may only read (GET/HEAD), anything
// else is 403 DENIED.
import type { IncomingMessage } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { adminCaller, type Caller } from '../cluster/caller.js';
import { OmniError } from '../errors.js';
import { matchToken, MAX_TOKEN_CHARS } from '../api/tokens.js';
import type { TokenRecord } from '../../protocol/cluster/state.js';

export const TOKEN_PATH = '/v2/token';
/** What the token endpoint says the token lasts; it is checked against the state on every use anyway. */
const TOKEN_EXPIRES_S = 3600;
export const REGISTRY_SERVICE = 'omni';
/** Longest Authorization header parsed. */
const MAX_AUTH_HEADER_CHARS = 1024;

export interface RegistryPrincipal {
  role: 'admin' | 'pull';
  tokenId: string;
  /** The caller its writes are proposed as (admins only). */
  caller?: Caller;
}

/** The secret in `Authorization: Bearer T` or the password of `Authorization: Basic …`. */
export function presentedSecret(header: string | undefined): string {
  if (!header || header.length > MAX_AUTH_HEADER_CHARS) return '';
  const bearer = /^bearer +(\S+) *$/i.exec(header);
  if (bearer) return bearer[1];
  const basic = /^basic +([A-Za-z0-9+/=]+) *$/i.exec(header);
  if (!basic) return '';
  const decoded = Buffer.from(basic[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon >= 0 ? decoded.slice(colon + 1) : '';
}

/**
 * The principal a presented secret is (admin or pull token), if any. `nodeSecret`: this node's
 * own pull credential (its Docker engine pulling app images; never leaves the node).
 */
export function principalOf(secret: string, tokens: readonly TokenRecord[], nodeSecret?: string): RegistryPrincipal | undefined {
  if (secret.length === 0 || secret.length > MAX_TOKEN_CHARS) return undefined;
  if (nodeSecret && secret.length === nodeSecret.length && timingSafeEqual(Buffer.from(secret), Buffer.from(nodeSecret))) return { role: 'pull', tokenId: 'node' };
  const t = matchToken(secret, tokens.filter((r) => r.role === 'admin' || r.role === 'pull'));
  if (!t) return undefined;
  return t.role === 'admin' ? { role: 'admin', tokenId: t.id, caller: adminCaller(secret, t.id) } : { role: 'pull', tokenId: t.id };
}

/** The 401 challenge: where to get a token, for which scope. */
export function challenge(req: IncomingMessage, scheme: 'http' | 'https', scope: string | undefined): string {
  const host = /^[A-Za-z0-9.:[\]-]{1,300}$/.test(req.headers.host ?? '') ? req.headers.host : '127.0.0.1';
  const realm = `${scheme}://${host}${TOKEN_PATH}`;
  return `Bearer realm="${realm}",service="${REGISTRY_SERVICE}"${scope ? `,scope="${scope}"` : ''}`;
}

/** The scope a request needs, as the challenge names it (`repository:NAME:pull[,push]`). */
export function scopeFor(repo: string | undefined, write: boolean): string | undefined {
  return repo ? `repository:${repo}:${write ? 'pull,push' : 'pull'}` : undefined;
}

/**
 * The token endpoint. GET: Basic credentials. POST: an OAuth2 form (`grant_type=password` with
 * username/password, or `grant_type=refresh_token` with refresh_token), or Basic.
 */
export function issueToken(header: string | undefined, form: URLSearchParams | undefined, tokens: readonly TokenRecord[], nodeSecret?: string): Record<string, unknown> {
  let secret = presentedSecret(header);
  if (!secret && form) secret = form.get('grant_type') === 'refresh_token' ? (form.get('refresh_token') ?? '') : (form.get('password') ?? '');
  const p = principalOf(secret, tokens, nodeSecret);
  if (!p) throw new OmniError('UNAUTHORIZED', secret ? 'invalid credentials: the password must be an Omni admin or pull token' : 'credentials required: docker login with an Omni admin or pull token as the password');
  const body: Record<string, unknown> = { token: secret, access_token: secret, expires_in: TOKEN_EXPIRES_S, issued_at: new Date().toISOString() };
  // An OAuth2 client asked for a refresh token (docker login with offline_token): the same secret.
  if (form) body.refresh_token = secret;
  return body;
}
