// Admin removal of a member that is gone for good (a dead host, or a node whose data dir is
// damaged and refuses to start with STORAGE_CORRUPT): DELETE /v1/nodes/NAME, `omni nodes
// remove NAME`. The node is marked left and taken out of the Raft configuration, so the
// cluster stops counting it toward quorum; a host may then join again under the same name
// with a fresh data dir (a new identity: the old one never comes back).
import type { ClusterAccess, MembershipChanger, RemovedMemberNotice } from '../cluster/ports.js';
import type { Logger } from '../logger.js';
import type { ApiServer } from './server.js';
import { OmniError } from '../errors.js';
import { ConfChangeType } from '../../protocol/raft/types.js';
import { isNodeId } from '../../protocol/cluster/commands.js';
import type { Caller } from '../cluster/caller.js';

/** Node names are at most 63 of [a-zA-Z0-9._-] (protocol/cluster/commands.ts). */
const NODE_NAME = /^[a-zA-Z0-9._-]{1,63}$/;
/** How long the configuration change may take to show on the answering node. */
const CONF_VISIBLE_TIMEOUT_MS = 10_000;
const POLL_MS = 100;
const REMOVED_NOTICE_TIMEOUT_MS = 3000;

export interface RemovedMember {
  removed: string;
  id: string;
  wasVoter: boolean;
}

/** What removing a member uses. */
export interface MemberRemovalDeps extends ClusterAccess, MembershipChanger {
  readonly id: string;
  readonly log: Logger;
  readonly peers: RemovedMemberNotice;
}

export function registerNodeRoutes(api: ApiServer, d: MemberRemovalDeps): void {
  api.route('DELETE', /^\/v1\/nodes\/([^/]+)$/, async (_req, url, [name], _res, caller) => [200, await removeMember(d, name, url.searchParams.get('force') === 'true', caller)]);
}

/**
 * Removes the member called `nameOrId`. Refuses this node itself and the leader (both are
 * alive: they use `omnid leave`), the last voter, and a node still heard from unless `force`.
 */
export async function removeMember(d: MemberRemovalDeps, nameOrId: string, force: boolean, caller: Caller): Promise<RemovedMember> {
  if (!NODE_NAME.test(nameOrId) && !isNodeId(nameOrId)) throw new OmniError('BAD_REQUEST', 'expected a node name (1-63 of [a-zA-Z0-9._-]) or a node id');
  await d.readBarrier();
  const state = d.raft.state;
  const node = state.nodeByName(nameOrId) ?? state.node(nameOrId);
  if (!node || node.status === 'left') throw new OmniError('NOT_FOUND', `no member named ${nameOrId} (omni nodes lists them)`);
  const raft = d.raft.raft;
  if (node.id === d.id) throw new OmniError('CONFLICT', `${node.name} is the node answering this request: ask another member, or run omnid leave on it`);
  if (node.id === raft.lead) throw new OmniError('CONFLICT', `${node.name} is the leader and therefore alive: run omnid leave on it instead`);
  if (node.status === 'up' && !force) {
    throw new OmniError('CONFLICT', `${node.name} is up (still heard from): stop it first and wait until omni nodes shows it down, or pass --force`);
  }
  const wasVoter = raft.voters.has(node.id);
  if (wasVoter && raft.voters.size === 1) throw new OmniError('CONFLICT', `${node.name} is the last voter; removing it would end the cluster`);
  d.log.warn(`removing member ${node.name} (${node.id}) on an operator's request`);
  await d.proposeOk({ type: 'node.remove', id: node.id }, caller);
  // The autopilot would also take a left node out of the configuration; doing it here lets the
  // caller know when the cluster has stopped counting it. Either may win the race.
  await d.changeMembership({ type: ConfChangeType.RemoveNode, node: node.id }, caller).catch((err: OmniError) => {
    if (!(err.code === 'INVALID' && /not a member/.test(err.message))) throw err;
  });
  const deadline = Date.now() + CONF_VISIBLE_TIMEOUT_MS;
  while (raft.voters.has(node.id) || raft.learners.has(node.id)) {
    if (Date.now() > deadline) throw new OmniError('TIMEOUT', `${node.name} is marked left but still in the Raft configuration; the autopilot will remove it`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  d.peers.dropPeer(node.id);
  // If it is alive after all (--force), it learns it was removed and stops.
  void d.peers.tellRemoved(node.id, 'removed by an operator', REMOVED_NOTICE_TIMEOUT_MS);
  return { removed: node.name, id: node.id, wasVoter };
}
