// The Raft consensus core: a pure state machine in the style of etcd-io/raft.
// Inputs: step(message), tick(), propose(), proposeConfChange(), readIndex(), transferLeader(),
// and the driver's reports: compact(), reportSnapshot(), reportUnreachable().
// Outputs: a Ready batch (state to persist, messages to send, entries to apply) that the
// driver processes in order and acknowledges with advance(). No clocks, sockets, disks or
// Math.random: time is tick(), randomness is the Rng passed in.
//
// Membership: one change at a time (Raft thesis §4.1, single-server changes). A change takes
// effect on every node when its entry is applied; the leader refuses a new change while one
// is unapplied, and a new leader first applies everything from earlier terms (its own empty
// entry commits first), which avoids the single-server change bug described by Ongaro (2015).

import { decodeConfChange, encodeConfChange } from '../codec.js';
import type { Rng } from '../rng.js';
import { invariant } from './errors.js';
import { type CompactionPolicy, compactionPoint } from './compaction.js';
import { RaftLog, emptySnapshot, entrySizeBytes } from './log.js';
import { Progress, ProgressState } from './progress.js';
import { ReadOnly } from './readonly.js';
import {
  type BugName,
  type ConfChange,
  ConfChangeType,
  type ConfState,
  type Entry,
  EntryType,
  type HardState,
  type Message,
  MessageType,
  NONE,
  type NodeId,
  type Ready,
  type ReadState,
  Role,
  type Snapshot,
  type SoftState,
  EMPTY_BYTES,
  emptyMessage,
  type RaftObservation,
} from './types.js';

export interface RaftConfig {
  id: NodeId;
  /** Ticks without hearing from a leader before an election (randomized in [t, 2t)). */
  electionTick: number;
  /** Ticks between leader heartbeats; must be < electionTick. */
  heartbeatTick: number;
  rng: Rng;
  /** Bound on the entry bytes carried by one append message. */
  maxSizePerMsgBytes?: number;
  /** Bound on pipelined append messages per follower (flow control). */
  maxInflightMsgs?: number;
  /**
   * Bound on the entry bytes of the append messages in flight to one follower (etcd's
   * MaxInflightBytes): with maxSizePerMsgBytes it bounds what a leader has on its way to a
   * follower catching up — queued in the transport and buffered by the follower before it is
   * written — whatever maxInflightMsgs allows. One message always goes when none is in flight.
   * Default DEFAULT_MAX_INFLIGHT_BYTES.
   */
  maxInflightBytes?: number;
  /** Bound on entries the leader accepts beyond its commit index. */
  maxUncommittedEntries?: number;
  /**
   * Bound on the data bytes of the entries the leader appended in its term and that are not
   * committed yet (etcd's MaxUncommittedEntriesSize). A proposal that would pass it is refused
   * with TOO_MANY_PENDING_BYTES; an empty entry or a conf change never is, and one entry larger
   * than the bound is taken when nothing is uncommitted. Default DEFAULT_MAX_UNCOMMITTED_BYTES.
   */
  maxUncommittedBytes?: number;
  /**
   * Bound on the bytes (entrySizeBytes) of the committed entries handed out in one Ready
   * (etcd's MaxCommittedSizePerReady); at least one entry is always handed out.
   * Default DEFAULT_MAX_COMMITTED_BYTES_PER_READY.
   */
  maxCommittedBytesPerReady?: number;
  /**
   * The index the state machine already holds durably (etcd's Config.Applied): committed
   * entries are handed out only after it. Within [snapshot index, commit]; default the
   * snapshot index. Conf changes up to it are taken from the log at start.
   */
  applied?: number;
  preVote?: boolean;
  checkQuorum?: boolean;
  /** Known bugs to inject, for proving the simulator's checkers can fail. Never set in production. */
  bugs?: ReadonlySet<BugName>;
  /** Receives one line per notable event (role changes, conf changes) for traces. */
  trace?: (event: string) => void;
  /** Reports decisions an outside checker verifies (the simulator); never changes behaviour. */
  observe?: (o: RaftObservation) => void;
}

/** What the driver restores after a restart (or an empty state for a brand-new node). */
export interface PersistedState {
  hardState: HardState;
  snapshot?: Snapshot;
  entries: Entry[];
}

export type ProposeResult =
  | { ok: true; index: number; term: number }
  | {
      ok: false;
      code: 'NOT_LEADER' | 'TRANSFERRING' | 'CONF_CHANGE_PENDING' | 'TOO_MANY_PENDING' | 'TOO_MANY_PENDING_BYTES' | 'INVALID';
      leader: NodeId;
      message: string;
    };

/** Default maxUncommittedBytes: uncommitted proposal data a leader holds before refusing more. */
export const DEFAULT_MAX_UNCOMMITTED_BYTES = 64 * 1024 * 1024;
/** Default maxInflightBytes: 8 messages of maxSizePerMsgBytes (1 MiB) per follower. */
export const DEFAULT_MAX_INFLIGHT_BYTES = 8 * 1024 * 1024;
/** Default maxCommittedBytesPerReady: committed entry bytes handed out to apply in one Ready. */
export const DEFAULT_MAX_COMMITTED_BYTES_PER_READY = 8 * 1024 * 1024;

/** The state a brand-new cluster's first node persists: its conf changes at term 1. */
export function bootstrapState(voters: NodeId[]): PersistedState {
  const entries: Entry[] = voters.map((node, i) => ({
    term: 1,
    index: i + 1,
    type: EntryType.ConfChange,
    data: encodeConfChange({ type: ConfChangeType.AddVoter, node }),
  }));
  return { hardState: { term: 1, vote: NONE, commit: entries.length }, entries };
}

export function emptyState(): PersistedState {
  return { hardState: { term: 0, vote: NONE, commit: 0 }, entries: [] };
}

const CAMPAIGN_TRANSFER = new Uint8Array([1]);

/** Election timeouts without a leader after which candidates unknown to this node are heard (see refusal). */
export const LEADERLESS_ELECTIONS = 5;

/** Non-voters whose leader messages were refused, kept for the driver to check (see vouch). */
const MAX_LEADER_CLAIMS = 16;

/** Messages only a leader or a candidate sends: taken from voters only (see Raft.refusal). */
const LEADER_OR_CANDIDATE_TYPES: ReadonlySet<MessageType> = new Set([
  MessageType.App,
  MessageType.Heartbeat,
  MessageType.Snap,
  MessageType.Vote,
  MessageType.PreVote,
  MessageType.TimeoutNow,
]);

export class Raft {
  readonly id: NodeId;
  term: number;
  vote: NodeId;
  lead: NodeId = NONE;
  role: Role = Role.Follower;
  readonly log: RaftLog;
  readonly voters = new Set<NodeId>();
  readonly learners = new Set<NodeId>();
  /** Replication progress of every member (meaningful on the leader). */
  readonly prs = new Map<NodeId, Progress>();
  leadTransferee: NodeId = NONE;
  /** Index of the latest conf change the leader proposed; no new one until it is applied. */
  pendingConfIndex = 0;
  /** Messages dropped by refusal() (for status and tests). */
  refusedMessages = 0;
  /**
   * Non-voters (in this node's configuration) whose append, heartbeat or snapshot was refused,
   * with the highest term they claimed. A node that missed a promotion (it was down, or is
   * still catching up) refuses the new voter's leadership; its driver asks this node's voters
   * and, when a majority of them count the claimant as a voter, vouches for it.
   */
  readonly leaderClaims = new Map<NodeId, number>();
  /** Voters vouched for by a majority of this node's voters (see leaderClaims). */
  private readonly vouched = new Set<NodeId>();

  private readonly cfg: Required<Omit<RaftConfig, 'trace' | 'bugs' | 'observe' | 'applied'>> & Pick<RaftConfig, 'trace' | 'observe'>;
  private readonly bugs: ReadonlySet<BugName>;
  private votes = new Map<NodeId, boolean>();
  /** Leader: data bytes of the entries of its term that are not committed yet (see maxUncommittedBytes). */
  private uncommittedBytes = 0;
  /** Voters promoted by conf entries in the log that are not applied yet (see pendingVoters). */
  private pendingVotersCache: { applied: number; lastIndex: number; lastTerm: number; voters: ReadonlySet<NodeId> } | undefined;
  private msgs: Message[] = [];
  private readStates: ReadState[] = [];
  private readonly readOnly = new ReadOnly();
  /** Reads arrived since the last Ready: ready() sends one heartbeat round for them all. */
  private readHeartbeatDue = false;
  /** Reads that arrived before the leader committed an entry of its own term. */
  private pendingReads: Message[] = [];
  private electionElapsed = 0;
  /** Ticks in a row without a known leader (see refusal: a stale configuration must not stall). */
  private leaderlessTicks = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;
  private prevSoft: SoftState;
  private prevHard: HardState;
  /** The index of a snapshot restored while a Ready was in flight (0: none). */
  private restoredWhileInFlight = 0;
  /** Handed out by ready(), awaiting advance(). */
  private inFlightReady: { lastIndex: number; lastTerm: number; applyTo: number; snapshotIndex: number } | undefined;

  constructor(config: RaftConfig, state: PersistedState) {
    invariant(config.id !== NONE, 'node id must not be empty');
    invariant(config.heartbeatTick > 0 && config.heartbeatTick < config.electionTick, 'need 0 < heartbeatTick < electionTick');
    this.id = config.id;
    const { applied, ...rest } = config;
    this.cfg = {
      maxSizePerMsgBytes: 1024 * 1024,
      maxInflightMsgs: 256,
      maxInflightBytes: DEFAULT_MAX_INFLIGHT_BYTES,
      maxUncommittedEntries: 10_000,
      maxUncommittedBytes: DEFAULT_MAX_UNCOMMITTED_BYTES,
      maxCommittedBytesPerReady: DEFAULT_MAX_COMMITTED_BYTES_PER_READY,
      preVote: true,
      checkQuorum: true,
      ...rest,
    };
    for (const k of ['maxSizePerMsgBytes', 'maxInflightMsgs', 'maxInflightBytes', 'maxUncommittedEntries', 'maxUncommittedBytes', 'maxCommittedBytesPerReady'] as const) {
      const v = this.cfg[k];
      invariant(Number.isSafeInteger(v) && v > 0, `${k} must be a positive integer, got ${v}`);
    }
    this.bugs = config.bugs ?? new Set();
    const snapshot = state.snapshot ?? emptySnapshot();
    this.log = new RaftLog(snapshot, state.entries, state.hardState.commit, applied ?? snapshot.meta.index);
    this.term = state.hardState.term;
    this.vote = state.hardState.vote;
    this.setConf(snapshot.meta.conf);
    // The state machine already holds the entries up to `applied`: so does the configuration.
    for (let i = snapshot.meta.index + 1; i <= this.log.applied; i++) {
      const e = this.log.entryAt(i)!;
      if (e.type === EntryType.ConfChange) this.applyConfChange(decodeConfChange(e.data));
    }
    this.prevSoft = { lead: NONE, role: Role.Follower };
    this.prevHard = { term: this.term, vote: this.vote, commit: this.log.committed };
    this.becomeFollower(this.term, NONE);
  }

  // ---------------------------------------------------------------- public inputs

  tick(): void {
    this.leaderlessTicks = this.lead === NONE ? this.leaderlessTicks + 1 : 0;
    if (this.role === Role.Leader) this.tickHeartbeat();
    else this.tickElection();
  }

  step(m: Message): void {
    const refused = this.refusal(m);
    if (refused !== undefined) {
      this.refusedMessages++;
      this.traceEvent(`refused ${refused}`);
      return;
    }
    if (m.term === 0) {
      // local message
    } else if (m.term > this.term) {
      if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
        const force = m.context.length === 1 && m.context[0] === CAMPAIGN_TRANSFER[0];
        const inLease = this.cfg.checkQuorum && this.lead !== NONE && this.electionElapsed < this.cfg.electionTick;
        if (!force && inLease) return; // §4.2.3: ignore disruptive candidates while a leader is alive
      }
      if (m.type === MessageType.PreVote) {
        // never change our term for a pre-vote
      } else if (m.type === MessageType.PreVoteResp && !m.reject) {
        // the pre-candidate bumps its term only when it wins
      } else {
        const leaderMsg = m.type === MessageType.App || m.type === MessageType.Heartbeat || m.type === MessageType.Snap;
        if (leaderMsg || this.role === Role.Leader) this.becomeFollower(m.term, leaderMsg ? m.from : NONE);
        else this.adoptTermKeepingTimer(m.term);
      }
    } else if (m.term < this.term) {
      if ((this.cfg.checkQuorum || this.cfg.preVote) && (m.type === MessageType.App || m.type === MessageType.Heartbeat)) {
        // A stale leader: tell it our term so it steps down (needed with check-quorum/pre-vote).
        this.send(emptyMessage(MessageType.AppResp, this.id, m.from, this.term));
      } else if (m.type === MessageType.PreVote) {
        this.send({ ...emptyMessage(MessageType.PreVoteResp, this.id, m.from, this.term), reject: true });
      }
      return;
    }

    switch (m.type) {
      case MessageType.Hup:
        this.hup(false);
        return;
      case MessageType.Vote:
      case MessageType.PreVote:
        this.handleVoteRequest(m);
        return;
    }
    switch (this.role) {
      case Role.Leader:
        this.stepLeader(m);
        return;
      case Role.Candidate:
      case Role.PreCandidate:
        this.stepCandidate(m);
        return;
      case Role.Follower:
        this.stepFollower(m);
        return;
    }
  }

  /**
   * Why a message is dropped unread, or undefined to take it. Only a voter can lead or stand for
   * election, so a voter refuses the messages only a leader or a candidate sends (append,
   * heartbeat, snapshot, vote and pre-vote requests, timeoutNow) from any node that is not a
   * voter in its configuration — the applied one, one a conf entry already in its log promotes
   * (a new voter may lead before this node applied its promotion), or one its driver vouched
   * for (vouch). And no message from a non-voter may move a voter's term: a learner, or any
   * member that is not a voter, cannot force an election or make a voter adopt a term it
   * invented.
   *
   * A node that is not a voter in its own configuration (a learner, a joining node, a voter
   * that has not applied its own promotion yet) does not judge: its configuration may be far
   * behind the cluster's, it counts in no quorum, and whatever term it is made to adopt, the
   * voters refuse it from a non-voter.
   */
  refusal(m: Message): string | undefined {
    if (m.from === this.id || !this.voters.has(this.id)) return undefined;
    const leaderOrCandidate = LEADER_OR_CANDIDATE_TYPES.has(m.type);
    if (!leaderOrCandidate && m.term <= this.term) return undefined;
    if (this.voters.has(m.from) || this.vouched.has(m.from) || this.pendingVoters().has(m.from)) return undefined;
    // A voter that lagged behind may hold a configuration older than the cluster's: a voter
    // added since (or removed and added again) is unknown to it, and refusing its candidacy
    // can stall the cluster for good (it needs this vote; this node's own log is too old to
    // win). After LEADERLESS_ELECTIONS election timeouts without any leader, candidates are
    // judged by their log alone, as in plain Raft; while a leader is known they are refused.
    if ((m.type === MessageType.Vote || m.type === MessageType.PreVote) && this.leaderlessTicks >= LEADERLESS_ELECTIONS * this.cfg.electionTick) return undefined;
    // ... and the candidate this node voted for is its leader in that term.
    if (m.term === this.term && this.vote === m.from) return undefined;
    if (m.type === MessageType.App || m.type === MessageType.Heartbeat || m.type === MessageType.Snap) this.noteLeaderClaim(m.from, m.term);
    if (leaderOrCandidate) return `${MessageType[m.type] ?? m.type} from ${m.from}, which is not a voter`;
    return `${MessageType[m.type] ?? m.type} of term ${m.term} (ours ${this.term}) from ${m.from}, which is not a voter`;
  }

  /**
   * The driver learned from a majority of this node's voters that `id` is a voter now: take its
   * leader messages until a conf change this node applies says otherwise.
   */
  vouch(id: NodeId): void {
    this.leaderClaims.delete(id);
    if (id !== this.id && !this.voters.has(id)) this.vouched.add(id);
  }

  private noteLeaderClaim(from: NodeId, term: number): void {
    if (!this.leaderClaims.has(from) && this.leaderClaims.size >= MAX_LEADER_CLAIMS) return;
    this.leaderClaims.set(from, Math.max(term, this.leaderClaims.get(from) ?? 0));
  }

  propose(data: Uint8Array): ProposeResult {
    const refused = this.checkCanPropose();
    if (refused) return refused;
    // etcd's uncommitted size rule: an empty entry always fits, and so does any entry when
    // nothing is uncommitted (else one entry above the bound could never be proposed).
    const size = data.byteLength;
    if (size > 0 && this.uncommittedBytes > 0 && this.uncommittedBytes + size > this.cfg.maxUncommittedBytes) {
      return this.refuse(
        'TOO_MANY_PENDING_BYTES',
        `uncommitted proposals hold ${this.uncommittedBytes} bytes; ${size} more would pass the ${this.cfg.maxUncommittedBytes}-byte bound; retry later`,
      );
    }
    const e = this.appendEntry(EntryType.Normal, data);
    return { ok: true, index: e.index, term: e.term };
  }

  proposeConfChange(cc: ConfChange): ProposeResult {
    const refused = this.checkCanPropose();
    if (refused) return refused;
    if (this.pendingConfIndex > this.log.applied) {
      return this.refuse('CONF_CHANGE_PENDING', 'another membership change is still in progress; retry when it is applied');
    }
    const problem = this.validateConfChange(cc);
    if (problem) return this.refuse('INVALID', problem);
    const e = this.appendEntry(EntryType.ConfChange, encodeConfChange(cc));
    this.pendingConfIndex = e.index;
    return { ok: true, index: e.index, term: e.term };
  }

  /**
   * Requests a linearizable read (§6.4). A ReadState with the same context appears in a later
   * Ready once safe; serve the read after applying its index. Returns false if dropped (no
   * known leader, or too many pending reads): the caller retries.
   */
  readIndex(context: Uint8Array): boolean {
    const m = { ...emptyMessage(MessageType.ReadIndex, this.id, this.id, 0), context };
    if (this.role === Role.Leader) return this.handleReadIndex(m);
    if (this.lead === NONE) return false;
    this.send({ ...m, to: this.lead });
    return true;
  }

  /**
   * Hands leadership to `transferee` (§3.10, TimeoutNow). Only the leader can: on any other node
   * it returns false and sends nothing (the driver answers NOT_LEADER with the leader's id;
   * etcd's forwarding of the request as a TransferLeader message from the transferee is not
   * used, since no transport would accept a message naming another sender).
   */
  transferLeader(transferee: NodeId): boolean {
    if (this.role !== Role.Leader) return false;
    this.handleTransferLeader(transferee);
    return true;
  }

  /** Starts an election now (e.g. for a single-node cluster at start-up). */
  campaign(): void {
    this.hup(false);
  }

  /**
   * The driver has strong reason to believe `leader` is gone (etcd's ForgetLeader): its
   * connection closed. A follower of `leader` forgets it: it stays a leaderless follower in the
   * same term and does not campaign, but grants pre-votes and votes at once instead of ignoring
   * candidates for the rest of the leader's lease (check-quorum). A live leader's next
   * heartbeat makes it the leader again. Returns whether anything changed.
   */
  forgetLeader(leader: NodeId): boolean {
    if (this.role !== Role.Follower || leader === NONE || this.lead !== leader) return false;
    this.lead = NONE;
    return true;
  }

  /**
   * A local compaction (etcd's CreateSnapshot + Compact): `data` is the state machine at the
   * applied index and becomes the snapshot (at that index, with the current configuration);
   * log entries up to `index` (<= applied) are dropped and the ones after it stay, so a
   * follower that lags by less than the tail catches up from the log. The driver persists the
   * snapshot and deletes its stored entries up to `index` (see compactionPoint for `index`).
   */
  compact(index: number, data: Uint8Array): Snapshot;
  /** @deprecated compacts at the applied index (no tail): use compact(index, data). */
  compact(data: Uint8Array): Snapshot;
  compact(indexOrData: number | Uint8Array, data?: Uint8Array): Snapshot {
    if (typeof indexOrData === 'number') {
      invariant(data !== undefined, 'compact(index, data) needs the snapshot data');
      return this.log.compact(indexOrData, data, this.confState());
    }
    return this.log.compact(this.log.applied, indexOrData, this.confState());
  }

  /**
   * Where to compact now under `policy` (see compactionPoint), from this node's log; undefined
   * when no compaction is due. On a leader the entries a recently active follower still needs
   * (after its match, when the log still holds them) are kept within policy.keepBytes, as are
   * those after `keepAfter` (the driver's: e.g. the index a snapshot being streamed is at).
   */
  compactionPoint(policy: CompactionPolicy & { keepAfter?: number }): number | undefined {
    if (this.log.pendingSnapshot) return undefined; // a leader's snapshot is being installed
    return compactionPoint({
      ...policy,
      applied: this.log.applied,
      snapshotIndex: this.log.snapshot.meta.index,
      firstIndex: this.log.firstIndex(),
      logBytes: this.log.logBytes(),
      bytesAfter: (index) => this.log.bytesAfter(index),
      keepAfter: this.followersNeedAfter(policy.keepAfter),
    });
  }

  /**
   * The lowest index after which a follower needs entries the log still holds: the match of
   * each recently active follower that is not waiting for a snapshot, and `extra`.
   */
  private followersNeedAfter(extra: number | undefined): number | undefined {
    const floor = this.log.firstIndex() - 1;
    let need = extra !== undefined && extra >= floor ? extra : undefined;
    if (this.role !== Role.Leader) return need;
    for (const [id, pr] of this.prs) {
      if (id === this.id || !pr.recentActive || pr.state === ProgressState.Snapshot || pr.match < floor) continue;
      need = need === undefined ? pr.match : Math.min(need, pr.match);
    }
    return need;
  }

  /**
   * The driver's report on a snapshot it sent to `to` (etcd's ReportSnapshot). Either way the
   * follower leaves the Snapshot state for Probe and gets no append until it answers (or the
   * next heartbeat does): on success the leader goes on from the snapshot's index; on failure
   * the snapshot is forgotten, so the next append attempt sends a snapshot again. A no-op on
   * a non-leader, for an unknown peer, or when no snapshot is on its way to it.
   */
  reportSnapshot(to: NodeId, ok: boolean): void {
    if (this.role !== Role.Leader) return;
    const pr = this.prs.get(to);
    if (!pr || to === this.id || pr.state !== ProgressState.Snapshot) return;
    if (!ok) pr.pendingSnapshot = 0;
    pr.becomeProbe();
    pr.probeSent = true;
    this.traceEvent(`snapshot to ${to} ${ok ? 'delivered' : 'failed'}; probing from ${pr.next}`);
  }

  /**
   * The driver could not reach `to` (etcd's ReportUnreachable): a follower replicated to in a
   * pipeline drops to Probe, so appends are not streamed into the void. A no-op on a
   * non-leader or for an unknown peer.
   */
  reportUnreachable(to: NodeId): void {
    if (this.role !== Role.Leader) return;
    const pr = this.prs.get(to);
    if (!pr || to === this.id || pr.state !== ProgressState.Replicate) return;
    pr.becomeProbe();
  }

  confState(): ConfState {
    return { voters: [...this.voters].sort(), learners: [...this.learners].sort() };
  }

  hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  softState(): SoftState {
    return { lead: this.lead, role: this.role };
  }

  isPromotable(): boolean {
    return this.voters.has(this.id);
  }

  // ---------------------------------------------------------------- Ready / advance

  hasReady(): boolean {
    if (this.inFlightReady) return false;
    if (this.readHeartbeatDue) return true;
    const soft = this.softState();
    if (soft.lead !== this.prevSoft.lead || soft.role !== this.prevSoft.role) return true;
    if (!sameHardState(this.hardState(), this.prevHard)) return true;
    return (
      this.msgs.length > 0 ||
      this.readStates.length > 0 ||
      this.log.pendingSnapshot !== undefined ||
      this.log.hasUnstable() ||
      this.log.hasApplicable(this.applyLimit())
    );
  }

  ready(): Ready {
    invariant(!this.inFlightReady, 'ready() called twice without advance()');
    this.sendReadHeartbeat();
    const soft = this.softState();
    const hard = this.hardState();
    const entries = this.log.unstableEntries();
    const snapshot = this.log.pendingSnapshot;
    const committedEntries = snapshot ? [] : this.log.applicableEntries(this.applyLimit(), this.cfg.maxCommittedBytesPerReady);
    const hardChanged = !sameHardState(hard, this.prevHard);
    const termOrVoteChanged = hard.term !== this.prevHard.term || hard.vote !== this.prevHard.vote;
    const rd: Ready = {
      entries,
      committedEntries,
      messages: this.msgs,
      readStates: this.readStates,
      mustSync: termOrVoteChanged || (entries.length > 0 && !this.bugs.has('ack-before-persist')) || snapshot !== undefined,
    };
    if (soft.lead !== this.prevSoft.lead || soft.role !== this.prevSoft.role) rd.softState = soft;
    if (hardChanged) rd.hardState = hard;
    if (snapshot) rd.snapshot = snapshot;
    this.msgs = [];
    this.readStates = [];
    this.prevSoft = soft;
    this.prevHard = hard;
    this.log.markHanded();
    const last = entries.length > 0 ? entries[entries.length - 1] : undefined;
    this.inFlightReady = {
      lastIndex: last?.index ?? 0,
      lastTerm: last?.term ?? 0,
      applyTo: committedEntries.length > 0 ? committedEntries[committedEntries.length - 1].index : 0,
      snapshotIndex: snapshot?.meta.index ?? 0,
    };
    return rd;
  }

  /** The driver finished the last Ready: persisted, sent and applied. */
  advance(rd: Ready): void {
    const done = this.inFlightReady;
    invariant(done, 'advance() without ready()');
    this.inFlightReady = undefined;
    if (done.snapshotIndex > 0 && this.log.pendingSnapshot?.meta.index === done.snapshotIndex) {
      this.log.pendingSnapshot = undefined;
      this.log.appliedTo(Math.max(this.log.applied, done.snapshotIndex));
    }
    if (done.lastIndex > 0) this.log.stableTo(done.lastIndex, done.lastTerm);
    // A snapshot restored while this Ready was in flight already holds the configuration of
    // every entry at or below its index: applying their conf changes again would undo it.
    const restored = this.bugs.has('snapshot-conf-regression') ? 0 : this.restoredWhileInFlight;
    this.restoredWhileInFlight = 0;
    for (const e of rd.committedEntries) {
      if (e.type === EntryType.ConfChange && e.index > restored) this.applyConfChange(decodeConfChange(e.data));
    }
    if (done.applyTo > this.log.applied) this.log.appliedTo(done.applyTo);
    if (this.role === Role.Leader) {
      // The leader counts its own copy only once it is durable.
      const self = this.prs.get(this.id);
      if (self && self.maybeUpdate(this.log.persisted) && this.maybeCommit()) this.bcastAppend();
    }
  }

  // ---------------------------------------------------------------- roles

  private becomeFollower(term: number, lead: NodeId): void {
    this.reset(term);
    this.role = Role.Follower;
    this.lead = lead;
    this.traceEvent(`follower term=${term} lead=${lead || '-'}`);
  }

  /**
   * Moves a follower or (pre-)candidate to a higher term it learned from anything but a leader
   * (a vote request, a rejection), without restarting its election timer: the paper's Figure 2
   * restarts it only for the current leader's appends or a granted vote (handleVoteRequest),
   * not for a new term. Restarting it for every higher term (as becomeFollower does, like
   * etcd's raft; raft-rs issue 14) lets a candidate that can never win — its votes come back
   * after its own short election timeout (a fast clock, a slow disk) — postpone for good the
   * campaign of the one voter whose log could win: each of its terms arrives before that
   * voter's timer runs out (simulator seed 93: leaderless through the 10 s budget).
   */
  private adoptTermKeepingTimer(term: number): void {
    const elapsed = this.electionElapsed;
    const timeout = this.randomizedElectionTimeout;
    this.becomeFollower(term, NONE);
    this.electionElapsed = elapsed;
    this.randomizedElectionTimeout = timeout;
  }

  private becomePreCandidate(): void {
    invariant(this.role !== Role.Leader, 'leader cannot become pre-candidate');
    // Pre-vote does not change the term or the vote (§9.6).
    this.votes = new Map();
    this.role = Role.PreCandidate;
    this.lead = NONE;
    this.traceEvent(`pre-candidate term=${this.term}`);
  }

  private becomeCandidate(): void {
    invariant(this.role !== Role.Leader, 'leader cannot become candidate');
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = Role.Candidate;
    this.traceEvent(`candidate term=${this.term}`);
  }

  private becomeLeader(): void {
    invariant(this.role === Role.Candidate, 'only a candidate can become leader');
    this.reset(this.term);
    this.role = Role.Leader;
    this.lead = this.id;
    const self = this.prs.get(this.id);
    if (self) {
      self.match = this.log.persisted;
      self.becomeReplicate();
    }
    // Conf changes from earlier terms must be applied before a new one (see header).
    this.pendingConfIndex = this.log.lastIndex();
    this.traceEvent(`leader term=${this.term} last=${this.log.lastIndex()}`);
    this.appendEntry(EntryType.Normal, EMPTY_BYTES);
  }

  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = NONE;
    }
    this.lead = NONE;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.randomizedElectionTimeout = this.cfg.electionTick + this.cfg.rng.int(this.cfg.electionTick);
    this.votes = new Map();
    this.uncommittedBytes = 0;
    this.leadTransferee = NONE;
    this.readOnly.reset();
    this.readHeartbeatDue = false;
    this.pendingReads = [];
    for (const id of this.prs.keys()) this.prs.set(id, this.newProgress(id === this.id ? this.log.persisted : 0));
  }

  private newProgress(match: number): Progress {
    const pr = new Progress(this.log.lastIndex() + 1, this.cfg.maxInflightMsgs, this.cfg.maxInflightBytes);
    pr.match = match;
    return pr;
  }

  // ---------------------------------------------------------------- ticks

  private tickElection(): void {
    this.electionElapsed++;
    if (this.isPromotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.hup(false);
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.cfg.electionTick) {
      this.electionElapsed = 0;
      if (this.cfg.checkQuorum && !this.quorumActive()) {
        this.traceEvent(`leader lost quorum contact, stepping down`);
        this.becomeFollower(this.term, NONE);
        return;
      }
      this.leadTransferee = NONE; // a transfer that did not finish within an election timeout is abandoned
    }
    for (const pr of this.prs.values()) {
      if (pr.state === ProgressState.Snapshot && ++pr.snapshotWaitTicks > this.cfg.electionTick) pr.becomeProbe();
    }
    if (this.heartbeatElapsed >= this.cfg.heartbeatTick) {
      this.heartbeatElapsed = 0;
      const context = this.readOnly.lastPendingContext();
      this.bcastHeartbeat(context ?? EMPTY_BYTES);
      // this round carries the newest read's context: the reads waiting for one are served by it
      if (context) this.readHeartbeatDue = false;
    }
  }

  /** Check-quorum (§6.2): did a quorum of voters talk to us in the last election timeout? */
  private quorumActive(): boolean {
    let active = 0;
    for (const id of this.voters) {
      const pr = this.prs.get(id);
      if (id === this.id || pr?.recentActive) active++;
      if (pr) pr.recentActive = false;
    }
    return active >= this.quorum();
  }

  // ---------------------------------------------------------------- elections

  private hup(transfer: boolean): void {
    if (this.role === Role.Leader) return;
    if (!this.isPromotable()) return;
    if (this.hasUnappliedConfChange()) return; // apply pending membership first (etcd does the same)
    if (this.cfg.preVote && !transfer) this.startCampaign('pre');
    else this.startCampaign(transfer ? 'transfer' : 'elect');
  }

  private hasUnappliedConfChange(): boolean {
    for (let i = Math.max(this.log.applied + 1, this.log.firstIndex()); i <= this.log.committed; i++) {
      if (this.log.entryAt(i)?.type === EntryType.ConfChange) return true;
    }
    return false;
  }

  private startCampaign(kind: 'pre' | 'elect' | 'transfer'): void {
    let voteTerm: number;
    let type: MessageType;
    if (kind === 'pre') {
      this.becomePreCandidate();
      voteTerm = this.term + 1;
      type = MessageType.PreVote;
    } else {
      this.becomeCandidate();
      voteTerm = this.term;
      type = MessageType.Vote;
    }
    if (this.poll(this.id, true) === 'won') {
      if (kind === 'pre') this.startCampaign('elect');
      else this.becomeLeader();
      return;
    }
    for (const id of this.voters) {
      if (id === this.id) continue;
      this.send({
        ...emptyMessage(type, this.id, id, voteTerm),
        index: this.log.lastIndex(),
        logTerm: this.log.lastTerm(),
        context: kind === 'transfer' ? CAMPAIGN_TRANSFER : EMPTY_BYTES,
      });
    }
  }

  private poll(from: NodeId, granted: boolean): 'won' | 'lost' | 'pending' {
    if (this.voters.has(from) && !this.votes.has(from)) this.votes.set(from, granted);
    let yes = 0;
    let no = 0;
    for (const id of this.voters) {
      const v = this.votes.get(id);
      if (v === true) yes++;
      else if (v === false) no++;
    }
    const q = this.quorum();
    if (yes >= q) return 'won';
    if (no > this.voters.size - q) return 'lost';
    return 'pending';
  }

  private handleVoteRequest(m: Message): void {
    const isPre = m.type === MessageType.PreVote;
    let canVote =
      this.vote === m.from ||
      (this.vote === NONE && this.lead === NONE) ||
      (isPre && m.term > this.term);
    if (!isPre && this.bugs.has('double-vote') && m.term === this.term) canVote = true;
    const respType = isPre ? MessageType.PreVoteResp : MessageType.VoteResp;
    const upToDate = (isPre && this.bugs.has('prevote-without-log-check')) || this.log.isUpToDate(m.index, m.logTerm);
    if (canVote && upToDate) {
      this.cfg.observe?.({ kind: 'vote-granted', pre: isPre, candidate: m.from, term: m.term, candidateLast: { index: m.index, term: m.logTerm }, ownLast: { index: this.log.lastIndex(), term: this.log.lastTerm() } });
      this.send({ ...emptyMessage(respType, this.id, m.from, m.term) });
      if (!isPre) {
        this.electionElapsed = 0;
        this.vote = m.from;
      }
    } else {
      this.send({ ...emptyMessage(respType, this.id, m.from, this.term), reject: true });
    }
  }

  // ---------------------------------------------------------------- per-role step

  private stepLeader(m: Message): void {
    switch (m.type) {
      case MessageType.ReadIndex:
        this.handleReadIndex(m);
        return;
      case MessageType.TransferLeader:
        this.handleTransferLeader(m.from);
        return;
    }
    const pr = this.prs.get(m.from);
    if (!pr) return; // not (or no longer) a member
    switch (m.type) {
      case MessageType.AppResp:
        pr.recentActive = true;
        this.handleAppendResponse(m, pr);
        return;
      case MessageType.HeartbeatResp:
        pr.recentActive = true;
        pr.probeSent = false;
        if (pr.state === ProgressState.Replicate && pr.inflights.full()) pr.inflights.freeFirstOne();
        if (pr.match < this.log.lastIndex()) this.sendAppend(m.from);
        if (m.context.length > 0) this.handleReadAck(m);
        return;
    }
  }

  private handleAppendResponse(m: Message, pr: Progress): void {
    if (m.reject) {
      let hint = m.rejectHint;
      if (m.logTerm > 0) hint = this.log.findConflictByTerm(m.rejectHint, m.logTerm);
      if (pr.maybeDecrTo(m.index, hint)) {
        if (pr.state === ProgressState.Replicate) pr.becomeProbe();
        this.sendAppend(m.from);
      }
      return;
    }
    const wasPaused = pr.isPaused();
    if (!pr.maybeUpdate(m.index)) {
      if (wasPaused && !pr.isPaused()) this.sendAppend(m.from);
      return;
    }
    if (pr.state === ProgressState.Probe) pr.becomeReplicate();
    else if (pr.state === ProgressState.Snapshot && pr.match >= pr.pendingSnapshot) {
      pr.becomeProbe();
      pr.becomeReplicate();
    } else if (pr.state === ProgressState.Replicate) pr.inflights.freeLE(m.index);

    if (this.maybeCommit()) this.bcastAppend();
    else if (wasPaused) this.sendAppend(m.from);
    while (this.maybeSendAppend(m.from, false)) {
      // pipelining: keep sending while the window allows and entries remain
    }
    if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) {
      this.send(emptyMessage(MessageType.TimeoutNow, this.id, m.from, this.term));
    }
  }

  private stepCandidate(m: Message): void {
    switch (m.type) {
      case MessageType.App:
        this.becomeFollower(m.term, m.from);
        this.handleAppend(m);
        return;
      case MessageType.Heartbeat:
        this.becomeFollower(m.term, m.from);
        this.handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.becomeFollower(m.term, m.from);
        this.handleSnapshot(m);
        return;
      case MessageType.PreVoteResp:
      case MessageType.VoteResp: {
        const expected = this.role === Role.PreCandidate ? MessageType.PreVoteResp : MessageType.VoteResp;
        if (m.type !== expected) return;
        const result = this.poll(m.from, !m.reject);
        if (result === 'won') {
          if (this.role === Role.PreCandidate) this.startCampaign('elect');
          else this.becomeLeader();
        } else if (result === 'lost') {
          this.becomeFollower(this.term, NONE);
        }
        return;
      }
    }
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case MessageType.App:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleAppend(m);
        return;
      case MessageType.Heartbeat:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleSnapshot(m);
        return;
      case MessageType.TimeoutNow:
        this.traceEvent(`timeout-now from ${m.from}: campaigning for leadership transfer`);
        this.hup(true);
        return;
      case MessageType.ReadIndexResp:
        this.readStates.push({ index: m.index, context: m.context });
        return;
    }
  }

  // ---------------------------------------------------------------- replication (follower side)

  private handleAppend(m: Message): void {
    if (m.index < this.log.committed) {
      this.send({ ...emptyMessage(MessageType.AppResp, this.id, m.from, this.term), index: this.log.committed });
      return;
    }
    // Bug 'append-without-prev-term-check' takes any entry at prevIndex as a match (§5.3 broken).
    const prevTerm = this.bugs.has('append-without-prev-term-check') && m.index <= this.log.lastIndex() ? (this.log.term(m.index) ?? m.logTerm) : m.logTerm;
    const lastNew = this.log.maybeAppend(m.index, prevTerm, m.commit, m.entries);
    if (lastNew !== undefined) {
      this.send({ ...emptyMessage(MessageType.AppResp, this.id, m.from, this.term), index: lastNew });
      return;
    }
    // §5.3 with the fast backtracking optimisation: hint the largest index that may match.
    const hintIndex = this.log.findConflictByTerm(Math.min(m.index, this.log.lastIndex()), m.logTerm);
    this.send({
      ...emptyMessage(MessageType.AppResp, this.id, m.from, this.term),
      index: m.index,
      reject: true,
      rejectHint: hintIndex,
      logTerm: this.log.term(hintIndex) ?? 0,
    });
  }

  private handleHeartbeat(m: Message): void {
    this.log.commitTo(Math.min(m.commit, this.log.lastIndex()));
    this.send({ ...emptyMessage(MessageType.HeartbeatResp, this.id, m.from, this.term), context: m.context });
  }

  private handleSnapshot(m: Message): void {
    const s = m.snapshot;
    if (!s) return;
    if (this.restore(s)) {
      this.traceEvent(`restored snapshot index=${s.meta.index} term=${s.meta.term}`);
      this.send({ ...emptyMessage(MessageType.AppResp, this.id, m.from, this.term), index: this.log.lastIndex() });
    } else {
      this.send({ ...emptyMessage(MessageType.AppResp, this.id, m.from, this.term), index: this.log.committed });
    }
  }

  private restore(s: Snapshot): boolean {
    if (s.meta.index <= this.log.committed) return false;
    if (this.log.matchTerm(s.meta.index, s.meta.term)) {
      // We already have the snapshot's entries: just learn they are committed.
      this.log.commitTo(s.meta.index);
      return false;
    }
    this.log.restore(s);
    this.setConf(s.meta.conf);
    if (this.inFlightReady) this.restoredWhileInFlight = Math.max(this.restoredWhileInFlight, s.meta.index);
    return true;
  }

  // ---------------------------------------------------------------- replication (leader side)

  private checkCanPropose(): ProposeResult | undefined {
    if (this.role !== Role.Leader) return this.refuse('NOT_LEADER', 'this node is not the leader');
    if (this.leadTransferee !== NONE) return this.refuse('TRANSFERRING', 'leadership is being transferred');
    if (this.log.lastIndex() - this.log.committed >= this.cfg.maxUncommittedEntries) {
      return this.refuse('TOO_MANY_PENDING', 'too many uncommitted proposals; retry later');
    }
    return undefined;
  }

  private refuse(code: Extract<ProposeResult, { ok: false }>['code'], message: string): ProposeResult {
    return { ok: false, code, leader: this.lead, message };
  }

  private appendEntry(type: EntryType, data: Uint8Array): Entry {
    const e: Entry = { term: this.term, index: this.log.lastIndex() + 1, type, data };
    this.log.append([e]);
    this.uncommittedBytes += data.byteLength;
    this.bcastAppend();
    return e;
  }

  /** §5.3/§5.4.2: advance commit to the largest index on a quorum — only for current-term entries. */
  private maybeCommit(): boolean {
    const matches: number[] = [];
    for (const id of this.voters) matches.push(this.prs.get(id)?.match ?? 0);
    if (matches.length === 0) return false;
    matches.sort((a, b) => b - a);
    const candidate = matches[this.quorum() - 1];
    if (candidate <= this.log.committed) return false;
    if (this.log.term(candidate) !== this.term) {
      if (!this.bugs.has('commit-old-term')) return false;
      this.traceEvent(`BUG commit-old-term: committing index ${candidate} of term ${this.log.term(candidate)} by counting`);
    }
    const before = this.log.committed;
    this.log.commitTo(candidate);
    this.reduceUncommittedBytes(before, candidate);
    this.releasePendingReads();
    return true;
  }

  /** Entries (from, to] just committed: those of this leader's term leave the uncommitted count. */
  private reduceUncommittedBytes(from: number, to: number): void {
    if (this.uncommittedBytes === 0) return;
    for (let i = from + 1; i <= to; i++) {
      const e = this.log.entryAt(i);
      if (e && e.term === this.term) this.uncommittedBytes -= e.data.byteLength;
    }
    invariant(this.uncommittedBytes >= 0, `uncommitted bytes went negative (${this.uncommittedBytes})`);
  }

  private bcastAppend(): void {
    for (const id of this.prs.keys()) if (id !== this.id) this.sendAppend(id);
  }

  private sendAppend(to: NodeId): void {
    this.maybeSendAppend(to, true);
  }

  private maybeSendAppend(to: NodeId, sendIfEmpty: boolean): boolean {
    const pr = this.prs.get(to);
    if (!pr || pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    const prevTerm = this.log.term(prevIndex);
    const ents = this.log.slice(pr.next, this.log.lastIndex() + 1, this.cfg.maxSizePerMsgBytes);
    if (prevTerm === undefined || ents === undefined) return this.sendSnapshot(to, pr);
    if (ents.length === 0 && !sendIfEmpty) return false;
    this.send({
      ...emptyMessage(MessageType.App, this.id, to, this.term),
      index: prevIndex,
      logTerm: prevTerm,
      entries: ents,
      commit: this.log.committed,
    });
    if (ents.length > 0) {
      const last = ents[ents.length - 1].index;
      if (pr.state === ProgressState.Replicate) {
        pr.optimisticUpdate(last);
        pr.inflights.add(last, payloadBytes(ents));
      } else {
        pr.probeSent = true;
      }
    } else if (pr.state === ProgressState.Probe) {
      pr.probeSent = true;
    }
    return true;
  }

  private sendSnapshot(to: NodeId, pr: Progress): boolean {
    if (!pr.recentActive) return false;
    const snap = this.log.snapshot;
    invariant(snap.meta.index > 0, 'need a snapshot but the log was never compacted');
    this.send({ ...emptyMessage(MessageType.Snap, this.id, to, this.term), snapshot: snap });
    pr.becomeSnapshot(snap.meta.index);
    this.traceEvent(`sending snapshot index=${snap.meta.index} to ${to}`);
    return true;
  }

  private bcastHeartbeat(context: Uint8Array): void {
    for (const [id, pr] of this.prs) {
      if (id === this.id) continue;
      this.send({
        ...emptyMessage(MessageType.Heartbeat, this.id, id, this.term),
        commit: Math.min(pr.match, this.log.committed),
        context,
      });
    }
  }

  // ---------------------------------------------------------------- reads

  private committedInCurrentTerm(): boolean {
    return this.log.term(this.log.committed) === this.term;
  }

  private handleReadIndex(m: Message): boolean {
    if (!this.committedInCurrentTerm()) {
      // §6.4 step 1: the leader must first commit an entry of its term to know the commit index.
      if (this.pendingReads.length >= 1024) return false;
      this.pendingReads.push(m);
      return true;
    }
    // Bug 'read-without-quorum' answers at once, as if a leader could not have been deposed.
    if ((this.voters.size === 1 && this.voters.has(this.id)) || this.bugs.has('read-without-quorum')) {
      this.respondRead(m.from, this.log.committed, m.context);
      return true;
    }
    if (!this.readOnly.add(this.log.committed, m.from, m.context)) return false;
    this.readOnly.ack(m.context, this.id);
    // One heartbeat round for every request that arrives before the next Ready (ready() sends
    // it with the newest request's context): a quorum's acknowledgement of that context releases
    // every request queued before it too (ReadOnly.advance), and it was sent after they arrived.
    this.readHeartbeatDue = true;
    return true;
  }

  /** The heartbeat round the reads that arrived since the last Ready wait for. */
  private sendReadHeartbeat(): void {
    if (!this.readHeartbeatDue) return;
    this.readHeartbeatDue = false;
    const context = this.readOnly.lastPendingContext();
    if (this.role === Role.Leader && context) this.bcastHeartbeat(context);
  }

  private releasePendingReads(): void {
    if (this.pendingReads.length === 0 || !this.committedInCurrentTerm()) return;
    const reads = this.pendingReads;
    this.pendingReads = [];
    for (const m of reads) this.handleReadIndex(m);
  }

  private handleReadAck(m: Message): void {
    const acks = this.readOnly.ack(m.context, m.from);
    if (!acks) return;
    let voters = 0;
    for (const id of acks) if (this.voters.has(id)) voters++;
    if (voters < this.quorum()) return;
    for (const req of this.readOnly.advance(m.context)) this.respondRead(req.from, req.index, req.context);
  }

  private respondRead(to: NodeId, index: number, context: Uint8Array): void {
    if (to === this.id) this.readStates.push({ index, context });
    else this.send({ ...emptyMessage(MessageType.ReadIndexResp, this.id, to, this.term), index, context });
  }

  // ---------------------------------------------------------------- leadership transfer

  private handleTransferLeader(transferee: NodeId): void {
    if (!this.voters.has(transferee)) return;
    if (transferee === this.id || transferee === this.leadTransferee) return;
    this.leadTransferee = transferee;
    this.electionElapsed = 0;
    this.traceEvent(`transferring leadership to ${transferee}`);
    const pr = this.prs.get(transferee)!;
    if (pr.match === this.log.lastIndex()) this.send(emptyMessage(MessageType.TimeoutNow, this.id, transferee, this.term));
    else this.sendAppend(transferee);
  }

  // ---------------------------------------------------------------- membership

  private validateConfChange(cc: ConfChange): string | undefined {
    if (cc.node === NONE) return 'node id must not be empty';
    if (cc.type === ConfChangeType.RemoveNode) {
      if (!this.voters.has(cc.node) && !this.learners.has(cc.node)) return `node ${cc.node} is not a member`;
      if (this.voters.has(cc.node) && this.voters.size === 1) return 'cannot remove the last voter';
    }
    if (cc.type === ConfChangeType.AddLearner && this.voters.has(cc.node) && this.voters.size === 1) {
      return 'cannot demote the last voter';
    }
    return undefined;
  }

  private applyConfChange(cc: ConfChange): void {
    const conf = { voters: new Set(this.voters), learners: new Set(this.learners) };
    switch (cc.type) {
      case ConfChangeType.AddVoter:
        conf.learners.delete(cc.node);
        conf.voters.add(cc.node);
        break;
      case ConfChangeType.AddLearner:
        conf.voters.delete(cc.node);
        conf.learners.add(cc.node);
        break;
      case ConfChangeType.RemoveNode:
        conf.voters.delete(cc.node);
        conf.learners.delete(cc.node);
        break;
    }
    this.setConf({ voters: [...conf.voters], learners: [...conf.learners] });
    // The configuration now speaks for this node itself: a vouch is needed no longer (voter) or
    // no more (demoted, removed).
    this.vouched.delete(cc.node);
    this.traceEvent(`conf ${ConfChangeType[cc.type]} ${cc.node} -> voters=[${[...this.voters].join(',')}] learners=[${[...this.learners].join(',')}]`);
    if (this.role !== Role.Leader) return;
    if (!this.voters.has(this.id)) {
      // A leader removed (or demoted) steps down once the change is applied (§4.2.2).
      this.becomeFollower(this.term, NONE);
      return;
    }
    if (this.leadTransferee !== NONE && !this.voters.has(this.leadTransferee)) this.leadTransferee = NONE;
    // The quorum changed: commit may advance, and new members need the log.
    this.maybeCommit();
    this.bcastAppend();
  }

  private setConf(conf: ConfState): void {
    this.voters.clear();
    this.learners.clear();
    for (const id of conf.voters) this.voters.add(id);
    for (const id of conf.learners) this.learners.add(id);
    for (const id of [...this.prs.keys()]) if (!this.voters.has(id) && !this.learners.has(id)) this.prs.delete(id);
    for (const id of [...this.voters, ...this.learners]) {
      if (this.prs.has(id)) continue;
      const pr = this.newProgress(id === this.id ? this.log.persisted : 0);
      // A member the leader adds is probed from index 1 while the log still starts there, not at
      // its last index: a new member almost always has an empty log (omnid join needs an empty
      // data dir), so a probe at the last index is refused and costs a round trip before anything
      // is sent — at a cold start the learners' promotion waits for it. (etcd's confchange notes
      // the same: "using the first index would be better".) A member that does hold the entries
      // accepts them again. Once the log is compacted an empty member needs a snapshot anyway,
      // so the probe stays at the last index (an empty message, not a refused batch of entries).
      if (this.role === Role.Leader && id !== this.id && this.log.firstIndex() === 1) pr.next = 1;
      this.prs.set(id, pr);
    }
  }

  /** Nodes that conf entries after the applied index make voters (cached per log state). */
  private pendingVoters(): ReadonlySet<NodeId> {
    const applied = this.log.applied;
    const lastIndex = this.log.lastIndex();
    const lastTerm = this.log.lastTerm();
    const c = this.pendingVotersCache;
    if (c && c.applied === applied && c.lastIndex === lastIndex && c.lastTerm === lastTerm) return c.voters;
    const voters = new Set<NodeId>();
    for (let i = Math.max(applied, this.log.firstIndex() - 1) + 1; i <= lastIndex; i++) {
      const e = this.log.entryAt(i);
      if (e?.type !== EntryType.ConfChange) continue;
      const cc = decodeConfChange(e.data);
      if (cc.type === ConfChangeType.AddVoter) voters.add(cc.node);
    }
    this.pendingVotersCache = { applied, lastIndex, lastTerm, voters };
    return voters;
  }

  private quorum(): number {
    return Math.floor(this.voters.size / 2) + 1;
  }

  // ---------------------------------------------------------------- helpers

  private applyLimit(): number {
    // Bug 'apply-before-commit' hands out entries that are persisted but not yet committed.
    return this.bugs.has('apply-before-commit') ? this.log.persisted : Math.min(this.log.committed, this.log.persisted);
  }

  private send(m: Message): void {
    invariant(m.to !== this.id, `message to self: ${MessageType[m.type]}`);
    if (m.term === 0 && m.type !== MessageType.ReadIndex && m.type !== MessageType.TransferLeader) m.term = this.term;
    this.msgs.push(m);
  }

  private traceEvent(event: string): void {
    this.cfg.trace?.(`${this.id}: ${event}`);
  }
}

function sameHardState(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

/** Entry bytes of an append message, as counted by the log (entrySizeBytes). */
function payloadBytes(ents: readonly Entry[]): number {
  let n = 0;
  for (const e of ents) n += entrySizeBytes(e);
  return n;
}
