// Leader duties as a pure decision: given what the leader knows (replicated state, Raft
// membership and progress, heartbeat ages), return the next actions. node/cluster/autopilot.ts runs
// it every interval and carries the actions out. At most one membership change per round,
// because Raft accepts one at a time.
import type { ClusterConfig, NodeRecord } from './state.js';

export interface AutopilotInput {
  self: string;
  config: ClusterConfig;
  nodes: readonly NodeRecord[];
  voters: ReadonlySet<string>;
  learners: ReadonlySet<string>;
  /** Milliseconds since each node was last heard from (absent: never heard). */
  silenceMs: ReadonlyMap<string, number>;
  /** Milliseconds since each node was marked down, as observed by this leader. */
  downForMs: ReadonlyMap<string, number>;
  /** Log entries each member is behind the leader (absent: unknown). */
  lagEntries: ReadonlyMap<string, number>;
  confChangePending: boolean;
  downAfterMs: number;
  replaceAfterMs: number;
  /** A learner is caught up (promotable) when it lags at most this many entries. */
  maxPromotableLagEntries: number;
}

export type AutopilotAction =
  | { kind: 'markDown'; node: string; reason: string }
  | { kind: 'markUp'; node: string }
  | { kind: 'promote'; node: string; reason: string }
  | { kind: 'demote'; node: string; reason: string }
  | { kind: 'removeMember'; node: string; reason: string }
  | { kind: 'transferLeadership'; to: string; reason: string }
  | { kind: 'retireRoot'; reason: string }
  | { kind: 'markLeft'; node: string; reason: string };

export function planAutopilot(input: AutopilotInput): AutopilotAction[] {
  if (input.config.clusterId === '') return [];
  const actions: AutopilotAction[] = [...statusActions(input)];
  const membership = membershipAction(input);
  if (membership) actions.push(membership);
  const root = rootAction(input);
  if (root) actions.push(root);
  return actions;
}

function statusActions(input: AutopilotInput): AutopilotAction[] {
  const out: AutopilotAction[] = [];
  for (const n of input.nodes) {
    if (n.status === 'left') continue;
    if (n.id === input.self) {
      if (n.status === 'down') out.push({ kind: 'markUp', node: n.id });
      continue;
    }
    const silence = input.silenceMs.get(n.id) ?? Number.POSITIVE_INFINITY;
    if (n.status === 'up' && silence > input.downAfterMs) {
      const secs = Number.isFinite(silence) ? `${Math.round(silence / 1000)}s` : 'ever';
      out.push({ kind: 'markDown', node: n.id, reason: `no heartbeat for ${secs}` });
    } else if (n.status === 'down' && silence <= input.downAfterMs) {
      out.push({ kind: 'markUp', node: n.id });
    }
  }
  return out;
}

/** Voters that count toward the target: an ephemeral root never does. */
function countedVoters(input: AutopilotInput): string[] {
  const { config } = input;
  return [...input.voters].filter((v) => !(config.ephemeralRoot && v === config.rootNodeId));
}

function isUp(input: AutopilotInput, id: string): boolean {
  const n = input.nodes.find((x) => x.id === id);
  return n !== undefined && n.status === 'up';
}

/** Learners that are up, recently heard from, and have replicated (nearly) the whole log. */
function promotableLearners(input: AutopilotInput): string[] {
  const { config } = input;
  return [...input.learners]
    .filter((id) => isUp(input, id) && !(config.ephemeralRoot && id === config.rootNodeId))
    .filter((id) => (input.silenceMs.get(id) ?? Number.POSITIVE_INFINITY) <= input.downAfterMs)
    .filter((id) => (input.lagEntries.get(id) ?? Number.POSITIVE_INFINITY) <= input.maxPromotableLagEntries)
    .sort((a, b) => (input.lagEntries.get(a) ?? 0) - (input.lagEntries.get(b) ?? 0) || (a < b ? -1 : 1));
}

function membershipAction(input: AutopilotInput): AutopilotAction | undefined {
  if (input.confChangePending) return undefined;
  const { config } = input;
  const voters = countedVoters(input);
  const learners = promotableLearners(input);
  const deadVoters = voters
    .filter((v) => !isUp(input, v) && (input.downForMs.get(v) ?? 0) >= input.replaceAfterMs)
    .sort();
  // A member whose record says it left is removed from the Raft configuration.
  for (const id of [...input.voters, ...input.learners].sort()) {
    const n = input.nodes.find((x) => x.id === id);
    if (n?.status === 'left' && id !== input.self) return { kind: 'removeMember', node: id, reason: 'node left the cluster' };
  }
  if (voters.length < config.voterTarget && learners.length > 0) {
    return { kind: 'promote', node: learners[0], reason: `voters ${voters.length} < target ${config.voterTarget}` };
  }
  if (deadVoters.length > 0 && voters.length <= config.voterTarget && learners.length > 0) {
    return { kind: 'promote', node: learners[0], reason: `replacing voter ${deadVoters[0]} that is down` };
  }
  if (deadVoters.length > 0 && voters.length > config.voterTarget && deadVoters[0] !== input.self) {
    return { kind: 'demote', node: deadVoters[0], reason: `voter down for ${Math.round((input.downForMs.get(deadVoters[0]) ?? 0) / 1000)}s and replaced` };
  }
  return undefined;
}

function rootAction(input: AutopilotInput): AutopilotAction | undefined {
  const { config } = input;
  if (config.rootNodeId === '') return undefined;
  const voters = countedVoters(input);
  const targetReached = voters.length >= config.voterTarget && voters.every((v) => isUp(input, v));
  if (!config.rootRetired) {
    if (!targetReached) return undefined;
    if (input.self !== config.rootNodeId) return { kind: 'retireRoot', reason: `voter target ${config.voterTarget} reached` };
    const successor = bestSuccessor(input, voters);
    if (successor === undefined) return undefined;
    return { kind: 'transferLeadership', to: successor, reason: 'root steps down: voter target reached' };
  }
  if (!config.ephemeralRoot) return undefined;
  // A retired ephemeral root leaves: first out of the Raft configuration while it is still
  // alive to vote for its own removal (it may be one of only two voters), then its record is
  // marked left and it is told to exit. If it became leader again, it hands leadership off.
  const rootIsMember = input.voters.has(config.rootNodeId) || input.learners.has(config.rootNodeId);
  if (rootIsMember) {
    if (input.self === config.rootNodeId) {
      const successor = bestSuccessor(input, voters);
      return successor === undefined ? undefined : { kind: 'transferLeadership', to: successor, reason: 'retired ephemeral root must not lead' };
    }
    if (input.confChangePending) return undefined;
    return { kind: 'removeMember', node: config.rootNodeId, reason: 'ephemeral root retired' };
  }
  const rootRecord = input.nodes.find((n) => n.id === config.rootNodeId);
  if (rootRecord && rootRecord.status !== 'left') return { kind: 'markLeft', node: config.rootNodeId, reason: 'ephemeral root retired' };
  return undefined;
}

/** The most caught-up other voter that is up (ties broken by id, deterministically). */
function bestSuccessor(input: AutopilotInput, voters: string[]): string | undefined {
  const lag = (id: string) => input.lagEntries.get(id) ?? Number.POSITIVE_INFINITY;
  return voters.filter((v) => v !== input.self && isUp(input, v)).sort((a, b) => lag(a) - lag(b) || (a < b ? -1 : 1))[0];
}
