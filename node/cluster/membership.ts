// The join and leave protocol, both sides, and the check of leader claims from nodes this node
// does not count as voters.
//
// Join: a new node asks any member over libp2p (`join` RPC). Only the leader admits a node:
// another member answers NOT_LEADER with the leader's id and addresses, and the joining node
// asks the leader itself (so the leader sees its authenticated identity, not another member's
// word for it). The leader registers it and adds it as a learner; the autopilot promotes it.
// The reply carries the cluster CA (trust model: README, Security model).
//
// Leave: the node hands leadership off, marks itself left, leaves the Raft configuration; a
// node removed by others learns it from its applied state or from the leader's `removed` RPC.
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';
import { peerIdFromString } from '@libp2p/peer-id';
import type { PeerId } from '@libp2p/interface';
import { ConfChangeType, NONE } from '../../protocol/raft/types.js';
import type { Command, NodeRecord } from '../../protocol/cluster/state.js';
import type { Principal } from '../../protocol/cluster/authz.js';
import type { Raft } from '../../protocol/raft/raft.js';
import { OmniError } from '../errors.js';
import type { Logger } from '../logger.js';
import { tokenMatches } from '../api/tokens.js';
import { SELF } from './caller.js';
import type { MembershipChanger, Proposer, StateView } from './ports.js';
import type { ClusterWrites } from './writes.js';
import { COMMAND_SCHEMA, readSchema, resourcesForSchema } from '../../protocol/cluster/schema.js';

/** Join errors that prove the cluster did not add this node (its data dir can be removed). */
export const DEFINITE_JOIN_REFUSALS = ['UNAUTHORIZED', 'FORBIDDEN', 'BAD_REQUEST', 'BAD_TOKEN', 'CONFLICT', 'INVALID_COMMAND', 'NAME_TAKEN', 'UNREACHABLE'];
/** How long a join keeps trying by default (omnid join --join-timeout). */
export const DEFAULT_JOIN_TIMEOUT_MS = 30_000;
/** An attempt that failed this way never reached the host: nothing was asked of the cluster. */
const NOT_CONNECTED_RE = /ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|EADDRNOTAVAIL|ENOTFOUND/;
const JOIN_ATTEMPT_MS = 8000;
/** How long the root holds a join that arrives while it creates the cluster (well within JOIN_ATTEMPT_MS). */
const JOIN_WAITS_FOR_INIT_MS = 3000;
/**
 * Pause between join attempts: from the first, growing by a quarter each time, to the last (about
 * 2.5 s of attempts before it): hosts provisioned together find the root within ~25 ms of its
 * answering; an attempt refused by a host not listening yet costs next to nothing.
 */
const JOIN_RETRY_FIRST_MS = 25;
const JOIN_RETRY_GROWTH = 1.25;
const JOIN_RETRY_MS = 500;
const LEADER_CLAIM_RPC_MS = 2000;
const MAX_CLAIMS_CHECKED = 4;
/** Leader addresses a NOT_LEADER answer to a joining node carries (and the joiner reads). */
const MAX_REDIRECT_ADDRS = 16;
const MAX_REDIRECT_ADDR_CHARS = 256;
const HANDOFF_ATTEMPTS = 50;
const HANDOFF_POLL_MS = 100;

/** What a node sends about itself when it joins or re-registers. */
export type SelfRecord = Omit<NodeRecord, 'role' | 'status' | 'statusReason' | 'root' | 'joinedIndex' | 'updatedIndex'>;

export interface JoinReply {
  clusterId: string;
  leader?: unknown;
  ca: unknown;
}

export interface MembershipDeps {
  readonly id: string;
  readonly log: Logger;
  readonly raft: StateView & {
    readonly raft: Raft;
    readonly isLeader: boolean;
    readonly leader: string;
    transferLeader(to: string): void;
    vouch(id: string): void;
  };
  readonly writes: Proposer & MembershipChanger & Pick<ClusterWrites, 'proposeAsOnLeader' | 'changeMembershipAsOnLeader'>;
  readonly rpc: { call<T>(peer: string | Multiaddr, method: string, params: unknown, timeoutMs?: number): Promise<T> };
  readonly peerStore: { merge(peer: PeerId, data: { multiaddrs: Multiaddr[] }): unknown };
  /** The cluster id this node belongs to ('' while it joins). */
  clusterId(): string;
  /** What this node says about itself (addresses, API URL, resources, labels). */
  selfRecord(): Promise<SelfRecord>;
  /** The cluster CA a joining node is given. */
  clusterCa(): Promise<unknown>;
  /** The command schema every member speaks (protocol/cluster/schema.ts). */
  clusterSchema(): number;
  /** The root has not finished creating the cluster (its join token may not be in the state yet). */
  initialising(): boolean;
  /** Resolves once a root creating its cluster has (at once on any other node), or after `maxMs`. */
  untilInitialised(maxMs: number): Promise<void>;
  /** This node left or was removed: stop its tasks and shut down (called once). */
  finishLeaving(reason: string): Promise<void>;
}

export class Membership {
  private leaving = false;

  constructor(private readonly d: MembershipDeps) {}

  /** True from the moment this node starts leaving (or learns it was removed). */
  get isLeaving(): boolean {
    return this.leaving;
  }

  // ---------------------------------------------------------------- join, leader side

  /** The `join` RPC from `from` (its authenticated libp2p peer id); untrusted params. */
  async handleJoin(params: unknown, from: string): Promise<{ clusterId: string; leader: string; ca: unknown }> {
    const d = this.d;
    const p = params as { token?: unknown; node?: Partial<NodeRecord> };
    if (typeof p?.token !== 'string' || typeof p.node !== 'object' || p.node === null) throw new OmniError('BAD_REQUEST', 'join needs {token, node}');
    if (p.node.id !== from) throw new OmniError('FORBIDDEN', 'a node may only join as itself');
    // Hosts provisioned together ask the root early: a join that arrives while it creates the
    // cluster is answered once it has, instead of refused and retried (a cold start's critical path).
    await d.untilInitialised(JOIN_WAITS_FOR_INIT_MS);
    if (!d.raft.isLeader) throw new OmniError('NOT_LEADER', 'joins are decided by the leader', this.leaderContact());
    // Hosts provisioned together may ask before the root's join token is in the state: not a refusal.
    if (d.initialising()) throw new OmniError('UNAVAILABLE', 'the cluster is still being initialised; retry shortly');
    const joinHashes = d.raft.state.tokens().filter((t) => t.role === 'join').map((t) => t.hash);
    if (!tokenMatches(p.token, joinHashes)) throw new OmniError('UNAUTHORIZED', 'invalid join token');
    const existing = d.raft.state.node(from);
    if (existing?.status === 'left') throw new OmniError('CONFLICT', 'this node id left the cluster; join with a fresh data dir');
    const n = p.node;
    // A node that could not read what the members already write is refused (etcd refuses a member older than the cluster version).
    // The replicated floor counts too: a member not heard from makes the heartbeats' schema 1,
    // but the log may already hold a field of a later schema (config.minSchema).
    const schema = d.clusterSchema();
    const required = Math.max(schema, d.raft.state.config().minSchema ?? 1);
    const joinerSchema = readSchema((params as { schema?: unknown }).schema);
    if (joinerSchema < required) throw new OmniError('CONFLICT', `this cluster's members speak command schema ${required} and the joining omnid speaks ${joinerSchema}: upgrade omnid on the joining node to the members' version`);
    const joiner: Principal = { kind: 'joiner', nodeId: from };
    const resources = n.resources && typeof n.resources === 'object' ? resourcesForSchema(n.resources, schema) : n.resources!;
    const register = { type: 'node.register', node: { id: from, name: String(n.name), addrs: n.addrs ?? [], apiUrl: String(n.apiUrl), resources, labels: n.labels ?? {} } } as Command;
    const redirect = () => new OmniError('NOT_LEADER', 'leadership moved during the join', this.leaderContact());
    const r = await d.writes.proposeAsOnLeader(joiner, register, redirect);
    if (!r.ok) throw new OmniError(r.error.code, r.error.message);
    if (!d.raft.raft.voters.has(from) && !d.raft.raft.learners.has(from)) {
      await d.writes.changeMembershipAsOnLeader(joiner, { type: ConfChangeType.AddLearner, node: from }, redirect);
    }
    d.log.info(`node ${String(n.name)} (${from}) joined as a learner`);
    // Every member holds the CA, so it can sign its own API certificate (trust model: README).
    return { clusterId: d.clusterId(), leader: d.raft.leader, ca: await d.clusterCa() };
  }

  /** Who leads and where, for a NOT_LEADER answer to a joining node. */
  private leaderContact(): Record<string, unknown> {
    const leader = this.d.raft.leader;
    return { leader, leaderAddrs: leader === NONE ? [] : (this.d.raft.state.node(leader)?.addrs ?? []).slice(0, MAX_REDIRECT_ADDRS) };
  }

  // ---------------------------------------------------------------- join, joining side

  /** Asks `first` (and then the leader it names) to admit this node; retries what is safe to retry. */
  async requestJoin(first: Multiaddr, token: string, timeoutMs = DEFAULT_JOIN_TIMEOUT_MS, signal?: AbortSignal): Promise<JoinReply> {
    const node = await this.d.selfRecord();
    const deadline = Date.now() + timeoutMs;
    let target: string | Multiaddr = first;
    // Whether every attempt so far timed out before any answer: a host that is up but never
    // completes the encrypted handshake (a wrong network key often shows so, not as a reset).
    let onlyHandshakeTimeouts = true;
    // Whether no attempt ever connected (refused, no route): then the cluster was asked nothing.
    let neverConnected = true;
    // The turned-away retry is said once per join, not at every attempt.
    let saidTurnedAway = false;
    let pauseMs = JOIN_RETRY_FIRST_MS;
    /** `signal` fired (omnid join interrupted): UNREACHABLE while nothing was ever asked of the cluster, else ABORTED. */
    const stopped = () =>
      neverConnected
        ? new OmniError('UNREACHABLE', `stopped before anything accepted a connection at ${first.toString()}: nothing was asked of the cluster (run the same omnid join again)`)
        : new OmniError('ABORTED', `stopped while joining through ${first.toString()}`);
    for (;;) {
      if (signal?.aborted) throw stopped();
      try {
        return await this.d.rpc.call<JoinReply>(target, 'join', { token, node, schema: COMMAND_SCHEMA }, JOIN_ATTEMPT_MS);
      } catch (err) {
        const e = err as OmniError;
        const handshake = e.code === 'UNAVAILABLE' && target === first ? joinHandshakeFailure(String(e.message)) : undefined;
        if (handshake === 'wrong-key') throw new OmniError('UNAUTHORIZED', `cannot connect to ${first.toString()}: the private-network handshake failed (wrong cluster key in the join token?)`);
        if (handshake === 'turned-away' && !saidTurnedAway) {
          saidTurnedAway = true;
          this.d.log.info(`join: ${first.toString().slice(0, 120)} turned the connection away before the handshake (too many connections from this host at once?); retrying`);
        }
        if (!(target === first && /aborted due to timeout|timed out|PNET_HANDSHAKE_TIMEOUT/i.test(e.message))) onlyHandshakeTimeouts = false;
        // A connection turned away before the handshake asked the cluster nothing either.
        if (handshake !== 'turned-away' && !NOT_CONNECTED_RE.test(String(e.message))) neverConnected = false;
        // A member that does not lead names the leader: ask it (the join is decided there).
        const leader = e.code === 'NOT_LEADER' ? this.learnLeader(e.detail) : undefined;
        // A wrong network key shows as a reset, or (on a busy host) as a handshake that never
        // completes: retry the latter, the join handler is idempotent.
        if (!['NO_LEADER', 'NOT_LEADER', 'UNAVAILABLE', 'TIMEOUT', 'TRANSFERRING', 'CONF_CHANGE_PENDING', 'PROPOSAL_DROPPED', 'LEADER_CATCHING_UP'].includes(e.code)) throw err;
        if (Date.now() > deadline) {
          if (neverConnected) throw new OmniError('UNREACHABLE', `cannot join through ${first.toString()}: nothing ${saidTurnedAway ? 'let this host in (every connection turned away before the handshake)' : 'accepted a connection'} there within ${timeoutMs / 1000} s (${String(e.message).slice(0, 120)}); is omnid running on that host and port? Nothing was asked of the cluster: run the same omnid join again (--join-timeout waits longer)`);
          if (onlyHandshakeTimeouts) throw new OmniError('UNAVAILABLE', `cannot join through ${first.toString()}: the private-network handshake did not complete within ${timeoutMs / 1000} s (wrong cluster key in the join token, or that node is overloaded)`);
          throw new OmniError('UNAVAILABLE', `cannot join through ${first.toString()}: ${e.message} (is that node up, and is the join token from its cluster?)`);
        }
        if (leader !== undefined && leader !== target) {
          this.d.log.info(`join: ${String(target).slice(0, 120)} does not lead; asking the leader ${leader}`);
          target = leader;
          continue;
        }
        // The leader named earlier did not answer: start again from the address we were given.
        target = first;
        await sleep(pauseMs, signal);
        pauseMs = Math.min(JOIN_RETRY_MS, Math.round(pauseMs * JOIN_RETRY_GROWTH));
      }
    }
  }

  /** The leader a NOT_LEADER answer names (untrusted input), added to the peer store; its id. */
  private learnLeader(detail: Record<string, unknown> | undefined): string | undefined {
    const leader = detail?.leader;
    if (typeof leader !== 'string' || leader === NONE || leader === this.d.id) return undefined;
    let pid;
    try {
      pid = peerIdFromString(leader);
    } catch {
      return undefined;
    }
    const addrs = Array.isArray(detail?.leaderAddrs) ? detail.leaderAddrs.slice(0, MAX_REDIRECT_ADDRS) : [];
    const multiaddrs = addrs.flatMap((a) => {
      try {
        return typeof a === 'string' && a.length <= MAX_REDIRECT_ADDR_CHARS ? [multiaddr(a)] : [];
      } catch {
        return [];
      }
    });
    if (multiaddrs.length === 0) return undefined;
    void Promise.resolve(this.d.peerStore.merge(pid, { multiaddrs })).catch(() => undefined);
    return leader;
  }

  // ---------------------------------------------------------------- leave

  /** Leaves the cluster cleanly: hands off leadership, marks itself left, leaves the Raft configuration. */
  async leave(): Promise<void> {
    const d = this.d;
    if (d.raft.raft.voters.size === 1 && d.raft.raft.voters.has(d.id)) {
      throw new OmniError('CONFLICT', 'cannot leave: this is the last voter (the cluster would end)');
    }
    this.leaving = true;
    await this.handOffLeadership();
    await d.writes.proposeOk({ type: 'node.remove', id: d.id }, SELF);
    await this.handOffLeadership();
    await d.writes.changeMembership({ type: ConfChangeType.RemoveNode, node: d.id }, SELF).catch((err: Error) => {
      d.log.warn(`leave: membership change failed (${err.message}); the leader's autopilot will remove this node`);
    });
    void d.finishLeaving('left the cluster (omnid leave)');
  }

  /** After every applied Ready: a node marked left by others (and not leading) goes. */
  noticeRemoval(): void {
    const self = this.d.raft.state.node(this.d.id);
    if (self?.status === 'left' && !this.d.raft.isLeader) this.removed();
  }

  /** The `removed` RPC: only a voter may say this node was removed. */
  handleRemoved(from: string): { ok: true } {
    if (!this.d.raft.raft.voters.has(from)) throw new OmniError('FORBIDDEN', 'only a voter may say this node was removed');
    this.removed();
    return { ok: true };
  }

  private removed(): void {
    if (this.leaving) return;
    this.leaving = true;
    const cfg = this.d.raft.state.config();
    const ephemeral = cfg.ephemeralRoot && cfg.rootNodeId === this.d.id;
    void this.d.finishLeaving(ephemeral ? 'ephemeral root retired and left the cluster' : 'this node was removed from the cluster');
  }

  private async handOffLeadership(): Promise<void> {
    const raft = this.d.raft;
    for (let i = 0; i < HANDOFF_ATTEMPTS && raft.isLeader; i++) {
      const to = [...raft.raft.voters].find((v) => v !== this.d.id && raft.state.node(v)?.status === 'up');
      if (!to) throw new OmniError('UNAVAILABLE', 'no healthy voter to hand leadership to');
      try {
        raft.transferLeader(to);
      } catch (err) {
        if ((err as OmniError).code === 'NOT_LEADER') return; // it handed over already
        throw err;
      }
      await sleep(HANDOFF_POLL_MS);
    }
  }

  // ---------------------------------------------------------------- leader claims

  /**
   * Raft refuses leader messages from a node that is not a voter in this node's configuration
   * (a forged heartbeat from a learner, or a real leader promoted while this node was away).
   * Ask this node's voters: when a majority of them count the claimant as a voter, it is one.
   */
  async checkLeaderClaims(): Promise<void> {
    const d = this.d;
    const raft = d.raft.raft;
    const claims = [...raft.leaderClaims.keys()].slice(0, MAX_CLAIMS_CHECKED);
    if (claims.length === 0) return;
    const others = [...raft.voters].filter((v) => v !== d.id);
    const answers = await Promise.all(
      others.map((v) =>
        d.rpc
          .call<{ voters?: unknown }>(v, 'raft-voters', {}, LEADER_CLAIM_RPC_MS)
          .then((r) => (Array.isArray(r?.voters) ? new Set(r.voters.filter((x): x is string => typeof x === 'string')) : undefined))
          .catch(() => undefined),
      ),
    );
    const majority = Math.floor(raft.voters.size / 2) + 1;
    const name = (id: string) => d.raft.state.node(id)?.name ?? id;
    for (const claimant of claims) {
      const yes = answers.filter((a) => a?.has(claimant)).length;
      if (yes >= majority) {
        d.log.info(`raft: ${yes} of ${raft.voters.size} voters say ${name(claimant)} is a voter now; following it`);
        d.raft.vouch(claimant);
      } else {
        raft.leaderClaims.delete(claimant);
        d.log.warn(`raft: refused leader messages from ${name(claimant)}, which is not a voter (${yes} of ${raft.voters.size} voters say it is)`);
      }
    }
  }
}

/**
 * What a failed connection to the join address says about the key. The private network's nonces
 * are exchanged in the clear, so a listener with another key completes that exchange and drops
 * the connection in the handshake after it ('wrong-key'). A reset before the exchange — while
 * connecting, or while waiting for the listener's nonce — is the listener turning the connection
 * away before it looked at any key: libp2p's limit of inbound connections per host and second (5;
 * all of a loopback cluster is one host), its cap on pending ones. That is retried ('turned-away').
 */
export function joinHandshakeFailure(message: string): 'wrong-key' | 'turned-away' | undefined {
  if (/connect ECONNRESET|pnet: nonce exchange with .* failed/.test(message)) return 'turned-away';
  return /EncryptionFailed|ECONNRESET|handshake/i.test(message) ? 'wrong-key' : undefined;
}

/** Resolves after `ms`, or at once when `signal` fires. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((r) => {
    if (signal?.aborted) return r();
    const onAbort = () => {
      clearTimeout(t);
      r();
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      r();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
