// omni status: leader, term, commit index, voters and health of the cluster.
import { formatBytes, parse, printJson, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect } from './connection.js';

const USAGE = `usage: omni status [flags]

Shows the cluster's leader, term, commit index, voters and health as seen by one node.

Health is healthy, degraded (writes work but the cluster tolerates fewer failures than it
was set up for: a node down, a voter silent, fewer voters than the target) or unhealthy (no
leader or no quorum: writes stop), with the reasons.
Exit status: 0 healthy, 2 degraded, 1 unhealthy (or any error).
${CONNECTION_HELP}
`;

export interface StatusView {
  clusterId: string;
  node: string;
  role: string;
  leader: string | null;
  term: number;
  commitIndex: number;
  appliedIndex: number;
  voters: string[];
  nonVoters: string[];
  voterTarget: number;
  root: string | null;
  rootRetired: boolean;
  health: string;
  /** Why the cluster is not healthy (absent from older nodes). */
  healthReasons?: string[];
  /** Raft messages refused from non-voters (absent from older nodes). */
  refusedRaftMessages?: number;
  /** Bytes of replicated records, and the quota an admin's writes stop at. */
  stateBytes?: number;
  maxStateBytes?: number;
}

export async function status(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, CONNECTION_FLAGS, USAGE);
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0]}\n\n${USAGE}`);
  const client = connect(values);
  try {
    const s = await client.get<StatusView>('/v1/status');
    if (values.json) printJson(s);
    else process.stdout.write(formatStatus(s));
    return s.health === 'unhealthy' ? 1 : s.health === 'degraded' ? 2 : 0;
  } finally {
    client.close();
  }
}

export function formatStatus(s: StatusView): string {
  const rootLine = s.root === null ? 'none' : `${s.root}${s.rootRetired ? ' (retired)' : ' (bootstrapping)'}`;
  return [
    `cluster       ${s.clusterId}`,
    `health        ${s.health}`,
    ...(s.healthReasons ?? []).map((r) => `              - ${r}`),
    `leader        ${s.leader ?? '(none)'}`,
    `term          ${s.term}`,
    `commit index  ${s.commitIndex}`,
    `voters        ${s.voters.join(', ')} (target ${s.voterTarget})`,
    `non-voters    ${s.nonVoters.length > 0 ? s.nonVoters.join(', ') : '-'}`,
    `root node     ${rootLine}`,
    ...(s.stateBytes !== undefined && s.maxStateBytes ? [`state         ${formatBytes(s.stateBytes)} of its ${formatBytes(s.maxStateBytes)} quota (${((100 * s.stateBytes) / s.maxStateBytes).toFixed(1)}%; omni quota)`] : []),
    `answered by   ${s.node} (${s.role})`,
    '',
  ].join('\n');
}
