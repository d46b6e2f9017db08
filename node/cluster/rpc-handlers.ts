// The cluster's node-to-node RPC methods (over libp2p, node/p2p/rpc.ts) and who may call them.
// Every caller is an authenticated libp2p peer; these checks decide which peers count as members.
import type { Raft } from '../../protocol/raft/raft.js';
import { OmniError } from '../errors.js';
import type { StateView } from './ports.js';
import type { ClusterWrites } from './writes.js';
import type { Membership } from './membership.js';

/** The parts of the Raft driver membership checks read. */
export type MemberView = StateView & { readonly raft: Raft };

/** Current voters and non-voters only; a node that left (or was removed) is refused. */
export function requireMember(view: MemberView, peer: string): void {
  const raft = view.raft;
  const inConf = raft.voters.has(peer) || raft.learners.has(peer);
  if (!inConf || view.state.node(peer)?.status === 'left') throw new OmniError('FORBIDDEN', 'only current cluster members may call this');
}

/** Raft messages are taken from members (and, before this node has a configuration, from its leader-to-be). */
export function isTrustedSender(view: MemberView, peer: string): boolean {
  const raft = view.raft;
  if (raft.voters.size === 0 && raft.learners.size === 0) return true;
  if (raft.voters.has(peer) || raft.learners.has(peer)) return true;
  const n = view.state.node(peer);
  return n !== undefined && n.status !== 'left';
}

export interface ClusterRpcDeps {
  readonly raft: MemberView;
  readonly rpc: { on(method: string, handler: (params: unknown, from: string) => Promise<unknown>): void };
  readonly writes: Pick<ClusterWrites, 'confForwarded'>;
  readonly membership: Pick<Membership, 'handleJoin' | 'handleRemoved'>;
  /** The cluster CA (members fetch it when they have none). */
  clusterCa(): Promise<unknown>;
}

export function registerClusterRpc(d: ClusterRpcDeps): void {
  // A membership change forwarded to the leader: a member may only remove itself (leave),
  // an admin token may remove a member; promotions are the autopilot's alone.
  d.rpc.on('conf', async (params, from) => {
    requireMember(d.raft, from);
    return d.writes.confForwarded(from, params);
  });
  d.rpc.on('join', async (params, from) => d.membership.handleJoin(params, from));
  // Which voters this node's applied configuration has: a member that refuses a leader it
  // does not know as a voter asks its own voters (Membership.checkLeaderClaims).
  d.rpc.on('raft-voters', async (_params, from) => {
    requireMember(d.raft, from);
    return { voters: [...d.raft.raft.voters] };
  });
  d.rpc.on('cluster-ca', async (_params, from) => {
    requireMember(d.raft, from);
    return d.clusterCa();
  });
  // The leader tells a node it removed (Raft cannot: the node is no longer replicated to).
  d.rpc.on('removed', async (_params, from) => d.membership.handleRemoved(from));
}
