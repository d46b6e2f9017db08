// On whose behalf a node proposes a command or a membership change. Every propose /
// proposeOk / changeMembership names its caller; the leader turns it into a principal
// (protocol/cluster/authz.ts) and checks it before anything enters the Raft log.
//
//  - admin: an HTTP API request whose admin token this node verified. When the write is
//    forwarded, the token itself travels to the leader inside the libp2p stream (pnet + noise)
//    and the leader verifies it again against the replicated hashes: it never takes another
//    node's word that a request was an admin's.
//  - self: this node acting for itself (its registration, its agent's task statuses, its leave,
//    requests on its control socket). The leader knows who that is from the authenticated
//    libp2p peer of the forwarding stream.
//  - leader-duty: the leader's own duties (bootstrap, autopilot, orchestrator). Never forwarded:
//    if this node is no longer the leader the duty fails NOT_LEADER and the new leader's own
//    duty takes over.
import type { Principal } from '../../protocol/cluster/authz.js';
import type { TokenRecord } from '../../protocol/cluster/state.js';
import { OmniError } from '../errors.js';
import { MAX_TOKEN_CHARS, matchToken } from '../api/tokens.js';

export type Caller = { kind: 'admin'; token: string; tokenId: string } | { kind: 'self' } | { kind: 'leader-duty' };

export const SELF: Caller = Object.freeze({ kind: 'self' });
export const LEADER_DUTY: Caller = Object.freeze({ kind: 'leader-duty' });

export function adminCaller(token: string, tokenId: string): Caller {
  return { kind: 'admin', token, tokenId };
}

/** What travels with a forwarded proposal or membership change. */
export type WireCaller = { kind: 'self' } | { kind: 'admin'; token: string };

export function toWire(c: Caller): WireCaller {
  if (c.kind === 'admin') return { kind: 'admin', token: c.token };
  if (c.kind === 'self') return { kind: 'self' };
  throw new OmniError('NOT_LEADER', 'a leader duty runs only on the leader, and this node is not the leader');
}

/** An untrusted wire caller (from another node) → WireCaller; BAD_REQUEST for anything else. */
export function readWireCaller(v: unknown): WireCaller {
  const o = v as { kind?: unknown; token?: unknown } | null;
  if (o !== null && typeof o === 'object' && !Array.isArray(o)) {
    if (o.kind === 'self' && Object.keys(o).length === 1) return { kind: 'self' };
    if (o.kind === 'admin' && typeof o.token === 'string' && o.token.length <= MAX_TOKEN_CHARS && Object.keys(o).length === 2) return { kind: 'admin', token: o.token };
  }
  throw new OmniError('BAD_REQUEST', 'caller must be {"kind":"self"} or {"kind":"admin","token":"…"}');
}

/** The principal of a caller on this node (the leader): self is `selfId`. */
export function localPrincipal(c: Caller, selfId: string): Principal {
  if (c.kind === 'admin') return { kind: 'admin', tokenId: c.tokenId };
  if (c.kind === 'self') return { kind: 'member', nodeId: selfId };
  return { kind: 'leader' };
}

/**
 * The principal of a caller forwarded by member `from`: its own self, or an admin whose token
 * the leader verifies here (UNAUTHORIZED when it matches no admin token).
 */
export function forwardedPrincipal(c: WireCaller, from: string, tokens: readonly TokenRecord[]): Principal {
  if (c.kind === 'self') return { kind: 'member', nodeId: from };
  const t = matchToken(c.token, tokens.filter((r) => r.role === 'admin'));
  if (!t) throw new OmniError('UNAUTHORIZED', 'the forwarded request carries no valid admin token');
  return { kind: 'admin', tokenId: t.id };
}
