// The narrow things node components are given instead of the daemon object. daemon.ts builds
// one of each from its parts and hands every component only what it uses; components never
// import daemon.ts (no import cycle), and the simulator can give them simulated parts.
import type { ClusterState, Command, KvRecord } from '../../protocol/cluster/state.js';
import type { Raft } from '../../protocol/raft/raft.js';
import type { ConfChange } from '../../protocol/raft/types.js';
import type { Logger } from '../logger.js';
import type { Caller } from './caller.js';
import type { PeerLiveness } from './heartbeats.js';

/** This node's replica: the applied cluster state (read-only to components). */
export interface StateView {
  readonly state: ClusterState;
}

/** Kv records with their values, which may live on disk (RaftNode.kvGet / kvList). */
export interface KvReader {
  kvGet(key: string): Promise<KvRecord | undefined>;
  kvList(prefix: string, limit: number): Promise<KvRecord[]>;
}

/** The replica plus this node's Raft role and configuration (read-only). */
export interface RaftView extends StateView {
  readonly raft: Raft;
  readonly isLeader: boolean;
  /** On the leader: how long it is sure it has not heard from a node (RaftNode.silentForMs); absent: never assumed. */
  silentForMs?(nodeId: string): number;
}

/** Proposes a command through the leader on behalf of `caller`; throws OmniError when refused. */
export interface Proposer {
  proposeOk(cmd: Command, caller: Caller): Promise<unknown>;
}

/** A linearizable read barrier (ReadIndex): afterwards the replica reflects every earlier commit. */
export interface ReadBarrier {
  readBarrier(): Promise<void>;
}

/** Membership changes, decided by the leader. */
export interface MembershipChanger {
  changeMembership(cc: ConfChange, caller: Caller): Promise<void>;
}

/** What a component needs to read and change the replicated state. */
export interface ClusterAccess extends Proposer, ReadBarrier {
  readonly raft: RaftView;
}

/** When each peer was last heard from (gossiped heartbeats). */
export interface LivenessView {
  readonly seen: ReadonlyMap<string, PeerLiveness>;
}

/** Tells a node it is no longer a member and forgets its connection. */
export interface RemovedMemberNotice {
  /** Drops this node's Raft stream and connection to a removed member. */
  dropPeer(nodeId: string): void;
  /** Tells a removed member so, best effort (Raft no longer replicates to it). */
  tellRemoved(nodeId: string, reason: string, timeoutMs: number): Promise<void>;
}

/** The identity of the node a component runs on. */
export interface NodeIdentity {
  readonly id: string;
  readonly name: string;
  readonly log: Logger;
}
