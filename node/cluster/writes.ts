// Writes and linearizable reads from any node. A command is proposed on behalf of a caller
// (node/cluster/caller.ts): on the leader directly, elsewhere forwarded to it over libp2p. The
// leader is the gate: who asks and whether they may (protocol/cluster/authz.ts), then whether
// the replicated state has room (protocol/cluster/quota.ts). A refused command never enters the
// Raft log. Only refusals that prove nothing was proposed are retried.
import { recordKindOf } from '../../protocol/apps/record-codec.js';
import { ConfChangeType, NONE, type ConfChange } from '../../protocol/raft/types.js';
import { decodeCommand, encodeCommand, type ApplyResult, type ClusterState, type Command } from '../../protocol/cluster/state.js';
import { authorize, authzView, type ConfChangeKind, type Principal } from '../../protocol/cluster/authz.js';
import { growthBytes, kvKeysOf, quotaBytes, quotaRefusal, withoutKeys } from '../../protocol/cluster/quota.js';
import type { Raft } from '../../protocol/raft/raft.js';
import { OmniError } from '../errors.js';
import { forwardedPrincipal, localPrincipal, readWireCaller, toWire, type Caller, type WireCaller } from './caller.js';
import type { MembershipChanger, Proposer, ReadBarrier } from './ports.js';
import { REAL_CLOCK, type Clock } from '../timers.js';

const RETRY_MS = 100;
/**
 * A membership change waits for the one in flight, which commits within a round trip: retried
 * sooner (nothing was proposed; the check is local on the leader). Two hosts joining at once
 * used to wait a whole RETRY_MS for the second.
 */
const CONF_PENDING_RETRY_MS = 10;
const DEADLINE_MS = 10_000;
const READ_ATTEMPT_MS = 2000;
/** Refusals that guarantee nothing was proposed (safe to retry). */
const NOTHING_PROPOSED = ['NO_LEADER', 'NOT_LEADER', 'TRANSFERRING', 'PROPOSAL_DROPPED', 'CONF_CHANGE_PENDING', 'LEADER_CATCHING_UP'];
/** Outcomes of a proposal after which it is surely not in the log (its growth no longer pending). */
const NOT_IN_LOG = ['NO_LEADER', 'NOT_LEADER', 'TRANSFERRING', 'PROPOSAL_DROPPED', 'CONF_CHANGE_PENDING', 'TOO_MANY_PENDING', 'TOO_MANY_PENDING_BYTES', 'UNAVAILABLE', 'NO_SPACE'];
/** ConfChangeType → the name authz uses. */
const CONF_KINDS: Record<ConfChangeType, ConfChangeKind> = { [ConfChangeType.AddVoter]: 'addVoter', [ConfChangeType.AddLearner]: 'addLearner', [ConfChangeType.RemoveNode]: 'remove' };

/** The parts of the Raft driver that writes and reads use. */
export interface WritesRaft {
  readonly raft: Raft;
  readonly state: ClusterState;
  readonly isLeader: boolean;
  readonly leader: string;
  propose(data: Uint8Array): Promise<ApplyResult>;
  proposeConfChange(cc: ConfChange): Promise<ApplyResult>;
  readBarrier(timeoutMs: number): Promise<void>;
}

/** How a node that does not lead reaches the leader. */
export interface LeaderLink {
  /** A command for the leader to propose (the forwarder). */
  forwardCommand(leader: string, data: Uint8Array, caller: WireCaller): Promise<ApplyResult>;
  /** A membership change for the leader to decide (the `conf` RPC). */
  forwardConf(leader: string, params: { type: ConfChangeType; node: string; caller: WireCaller }): Promise<ApplyResult>;
}

export interface ClusterWritesDeps {
  readonly id: string;
  readonly raft: WritesRaft;
  readonly link: LeaderLink;
  /** True once the daemon is stopping: nothing is retried then. */
  isStopping(): boolean;
  /** Deadlines and retry pauses (the process's clock by default; virtual in the simulator). */
  readonly clock?: Clock;
  /** Known bugs to inject, for proving the simulator's checkers can fail. Never set in production. */
  readonly bugs?: ReadonlySet<WritesBug>;
  /**
   * Whether every member reads the apps' records in protobuf in a command (the cluster's schema
   * is at least SCHEMA_RECORDS): then they travel so (encodeCommand's `records`), else as JSON text.
   */
  recordsInCommands?(): boolean;
}

/** Bugs the simulator can inject into the leader's gate (see ClusterWritesDeps.bugs). */
export type WritesBug = 'quota-ignores-pending';
export const ALL_WRITES_BUGS: readonly WritesBug[] = ['quota-ignores-pending'];

/** A leader duty off the leader: it is not forwarded (the new leader runs its own duties). */
function leadershipLost(): OmniError {
  return new OmniError('LEADERSHIP_LOST', 'this node is no longer the leader; the new leader runs its own duties');
}

function notLeader(leader: string): OmniError {
  return new OmniError('NOT_LEADER', 'not the leader', { leader });
}

export class ClusterWrites implements Proposer, ReadBarrier, MembershipChanger {
  /** Bytes that proposals admitted by the quota may add once applied (see gateCommand). */
  private pendingGrowthBytes = 0;
  /**
   * Growth of admitted proposals whose outcome is unknown (timed out): still counted until the
   * state has applied every index the log held when they failed (`upTo`), or until this node
   * leads a later term than the one they were proposed in and has applied an entry of it — by
   * then each one was applied (and counts in the state's size) or was replaced.
   */
  private inDoubt: { growth: number; upTo: number; term: number; keys: string[] }[] = [];
  /**
   * kv keys written by this leader's proposals not applied yet (a count per key; in-doubt ones
   * are in `inDoubt`): a new write to one of them is judged as if the key were empty, because an
   * earlier write in flight may shrink or delete what it replaces (seed 6902: a small put of k2
   * in flight, then two large puts of k2 judged against k2's large applied value as +0 bytes).
   */
  private readonly pendingKeys = new Map<string, number>();
  private readonly clock: Clock;

  constructor(private readonly d: ClusterWritesDeps) {
    this.clock = d.clock ?? REAL_CLOCK;
  }

  /**
   * Proposes a command through the leader, from any node, on behalf of `caller`; the leader
   * authorizes it before it enters the log. A leader duty is never forwarded: it fails
   * LEADERSHIP_LOST off the leader.
   */
  async propose(cmd: Command, caller: Caller): Promise<ApplyResult> {
    const data = this.encode(cmd);
    const principal = localPrincipal(caller, this.d.id);
    const local = () => this.gateCommand(principal, cmd, data);
    if (caller.kind === 'leader-duty') return this.onLeader(local, leadershipLost);
    const wire = toWire(caller);
    return this.viaLeader(local, (leader) => this.d.link.forwardCommand(leader, data, wire));
  }

  private encode(cmd: Command): Uint8Array {
    // The cluster's schema is asked for only by a command that puts a record (most writes do not).
    const putsRecord = cmd.type === 'kv.put' ? recordKindOf(cmd.key) !== undefined : cmd.type === 'kv.txn' && cmd.ops.some((op) => op.op === 'put' && recordKindOf(op.key) !== undefined);
    return encodeCommand(cmd, { records: putsRecord && this.d.recordsInCommands?.() === true });
  }

  /** Proposes and turns a refused command into an OmniError. */
  async proposeOk(cmd: Command, caller: Caller): Promise<unknown> {
    const r = await this.propose(cmd, caller);
    if (!r.ok) throw new OmniError(r.error.code, r.error.message);
    return r.value;
  }

  /** A membership change on behalf of `caller`, decided (authorized) by the leader. */
  async changeMembership(cc: ConfChange, caller: Caller): Promise<void> {
    const principal = localPrincipal(caller, this.d.id);
    const local = () => this.gateConf(principal, cc);
    if (caller.kind === 'leader-duty') {
      await this.onLeader(local, leadershipLost);
      return;
    }
    const params = { type: cc.type, node: cc.node, caller: toWire(caller) };
    await this.viaLeader(local, (leader) => this.d.link.forwardConf(leader, params));
  }

  /** Linearizable read barrier (ReadIndex), from any node. */
  async readBarrier(): Promise<void> {
    const deadline = this.clock.monotonicMs() + DEADLINE_MS;
    for (;;) {
      try {
        // A ReadIndex request can be lost (leader change, reconnect): re-issue it; reads are idempotent.
        return await this.d.raft.readBarrier(Math.max(1, Math.min(READ_ATTEMPT_MS, deadline - this.clock.monotonicMs())));
      } catch (err) {
        const retryable = err instanceof OmniError && ['NO_LEADER', 'TIMEOUT'].includes(err.code);
        if (!retryable || this.clock.monotonicMs() >= deadline || this.d.isStopping()) throw err;
        await this.sleep(RETRY_MS);
      }
    }
  }

  /** Leader side of a forwarded write by member `from` (already checked to be a member). */
  proposeForwarded(from: string, data: Uint8Array, caller: WireCaller): Promise<ApplyResult> {
    if (!this.d.raft.isLeader) throw notLeader(this.d.raft.leader);
    const decoded = decodeCommand(data);
    // Bytes that are no command are refused here: they never reach the log.
    if (!decoded.ok) return Promise.resolve(decoded);
    // Records in protobuf from a member whose view of the cluster's schema is ahead of this
    // leader's: written as text, which every member reads.
    const entry = decoded.usesRecords && this.d.recordsInCommands?.() !== true ? encodeCommand(decoded.command) : data;
    return this.gateCommand(forwardedPrincipal(caller, from, this.d.raft.state.tokens()), decoded.command, entry);
  }

  /** Leader side of a forwarded membership change (untrusted params) by member `from`. */
  confForwarded(from: string, params: unknown): Promise<ApplyResult> {
    const p = params as { type?: unknown; node?: unknown; caller?: unknown };
    if (typeof p?.node !== 'string' || ![0, 1, 2].includes(p.type as number)) throw new OmniError('BAD_REQUEST', 'conf needs {type, node, caller}');
    const caller = readWireCaller(p.caller);
    if (!this.d.raft.isLeader) throw notLeader(this.d.raft.leader);
    return this.gateConf(forwardedPrincipal(caller, from, this.d.raft.state.tokens()), { type: p.type as ConfChangeType, node: p.node });
  }

  /** Proposes as `principal` while this node leads (e.g. for a joining node); offLeader() once it does not. */
  proposeAsOnLeader(principal: Principal, cmd: Command, offLeader: () => OmniError): Promise<ApplyResult> {
    const data = this.encode(cmd);
    return this.onLeader(() => this.gateCommand(principal, cmd, data), offLeader);
  }

  /** A membership change as `principal` while this node leads; offLeader() once it does not. */
  changeMembershipAsOnLeader(principal: Principal, cc: ConfChange, offLeader: () => OmniError): Promise<ApplyResult> {
    return this.onLeader(() => this.gateConf(principal, cc), offLeader);
  }

  /**
   * The leader's gate for every command: who asks and whether they may (authz), then whether
   * the state has room for it (the replicated quota, counting what is proposed and not applied
   * yet). A command refused here never enters the Raft log.
   */
  private gateCommand(principal: Principal, cmd: Command, data: Uint8Array): Promise<ApplyResult> {
    const raft = this.d.raft;
    if (!raft.isLeader) return Promise.reject(notLeader(raft.leader));
    const state = raft.state;
    const allowed = authorize(principal, { kind: 'command', command: cmd }, authzView(state));
    if (!allowed.ok) return Promise.reject(new OmniError('FORBIDDEN', allowed.error.message));
    const keys = kvKeysOf(cmd);
    const growth = growthBytes(cmd, this.touchesPending(keys, state.appliedIndex) ? withoutKeys(state, this.pendingKeySet()) : state);
    if (growth > 0 && !this.d.bugs?.has('quota-ignores-pending')) {
      // The state the quota is judged against must hold every entry of earlier terms: entries
      // a previous leader admitted (against its own state) may sit committed, or not yet, in
      // this log after the applied index. Once an entry of this term is applied, the log after
      // it holds only what this leader proposed — counted in pendingGrowthBytes / inDoubt.
      if (raft.raft.log.term(state.appliedIndex) !== raft.raft.term) {
        return Promise.reject(new OmniError('LEADER_CATCHING_UP', 'the leader has not applied the entries of earlier terms yet; retry shortly'));
      }
      this.inDoubt = this.inDoubt.filter((d) => d.upTo > state.appliedIndex && d.term === raft.raft.term);
    }
    const pending = this.d.bugs?.has('quota-ignores-pending') ? 0 : this.pendingGrowthBytes + this.inDoubt.reduce((sum, d) => sum + d.growth, 0);
    const full = quotaRefusal({ principal: principal.kind, growthBytes: growth, stateBytes: state.sizeBytes, pendingBytes: pending, quotaBytes: quotaBytes(state.config()) });
    if (full) return Promise.reject(new OmniError(full.code, full.message));
    if (keys.length === 0 && growth <= 0) return raft.propose(data);
    // Every kv write is tracked while in flight (a shrinking one too: see pendingKeys).
    const counted = Math.max(growth, 0);
    this.pendingGrowthBytes += counted;
    for (const k of keys) this.pendingKeys.set(k, (this.pendingKeys.get(k) ?? 0) + 1);
    const done = () => {
      this.pendingGrowthBytes -= counted;
      for (const k of keys) {
        const n = (this.pendingKeys.get(k) ?? 1) - 1;
        if (n > 0) this.pendingKeys.set(k, n);
        else this.pendingKeys.delete(k);
      }
    };
    const term = raft.raft.term;
    return raft.propose(data).then(
      (r) => {
        done();
        return r;
      },
      (err: unknown) => {
        done();
        // A proposal that timed out may still commit and apply later.
        if (!(err instanceof OmniError && NOT_IN_LOG.includes(err.code))) this.inDoubt.push({ growth: counted, upTo: raft.raft.log.lastIndex(), term, keys });
        throw err;
      },
    );
  }

  /** Whether any of `keys` is written by a proposal of this leader not applied yet (or in doubt). */
  private touchesPending(keys: string[], appliedIndex: number): boolean {
    if (keys.length === 0) return false;
    if (keys.some((k) => this.pendingKeys.has(k))) return true;
    return this.inDoubt.some((d) => d.upTo > appliedIndex && d.keys.some((k) => keys.includes(k)));
  }

  /** The keys of every write in flight or in doubt. */
  private pendingKeySet(): Set<string> {
    const all = new Set(this.pendingKeys.keys());
    for (const d of this.inDoubt) for (const k of d.keys) all.add(k);
    return all;
  }

  /** The leader's gate for membership changes: only the leader decides promotions. */
  private gateConf(principal: Principal, cc: ConfChange): Promise<ApplyResult> {
    const raft = this.d.raft;
    if (!raft.isLeader) return Promise.reject(notLeader(raft.leader));
    const allowed = authorize(principal, { kind: 'conf', change: { type: CONF_KINDS[cc.type], node: cc.node } }, authzView(raft.state));
    if (!allowed.ok) return Promise.reject(new OmniError('FORBIDDEN', allowed.error.message));
    return raft.proposeConfChange(cc);
  }

  /**
   * Runs `local` while this node leads, retrying the refusals that prove nothing was proposed;
   * once it does not lead, fails with offLeader() (no forwarding).
   */
  private async onLeader(local: () => Promise<ApplyResult>, offLeader: () => OmniError): Promise<ApplyResult> {
    const deadline = this.clock.monotonicMs() + DEADLINE_MS;
    for (;;) {
      if (!this.d.raft.isLeader) throw offLeader();
      try {
        return await local();
      } catch (err) {
        if (err instanceof OmniError && err.code === 'NOT_LEADER') throw offLeader();
        const retryable = err instanceof OmniError && ['TRANSFERRING', 'PROPOSAL_DROPPED', 'CONF_CHANGE_PENDING', 'LEADER_CATCHING_UP'].includes(err.code);
        if (!retryable || this.clock.monotonicMs() > deadline || this.d.isStopping()) throw err;
        await this.sleep(retryPauseMs(err as OmniError));
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((r) => this.clock.setTimeout(r, ms));
  }

  private async viaLeader(local: () => Promise<ApplyResult>, remote: (leader: string) => Promise<ApplyResult>): Promise<ApplyResult> {
    const deadline = this.clock.monotonicMs() + DEADLINE_MS;
    for (;;) {
      try {
        if (this.d.raft.isLeader) return await local();
        const leader = this.d.raft.leader;
        if (leader === NONE) throw new OmniError('NO_LEADER', 'no leader is known; the cluster may have lost quorum');
        return await remote(leader);
      } catch (err) {
        const retryable = err instanceof OmniError && NOTHING_PROPOSED.includes(err.code);
        if (!retryable || this.clock.monotonicMs() > deadline || this.d.isStopping()) throw err;
        await this.sleep(retryPauseMs(err as OmniError));
      }
    }
  }
}

function retryPauseMs(err: OmniError): number {
  return err.code === 'CONF_CHANGE_PENDING' ? CONF_PENDING_RETRY_MS : RETRY_MS;
}


