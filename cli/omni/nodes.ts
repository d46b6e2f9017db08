// omni nodes: every node's role, status, resources and last heartbeat;
// omni nodes remove NAME: take a dead member out of the cluster.
import { parse, printJson, table, formatBytes, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect } from './connection.js';

const USAGE = `usage: omni nodes [flags]
       omni nodes remove NAME [--force] [flags]

Lists the cluster's nodes: role (leader, voter, non-voter), status, resources and how long
ago the answering node last heard a heartbeat from each.

remove takes a member that is gone for good (a dead host, or a node that refuses to start
with STORAGE_CORRUPT) out of the cluster: it is marked left and leaves the Raft
configuration. A host may then join again under the same name with a fresh data dir.
  --force        remove it even though it is still heard from (it is told to stop)
${CONNECTION_HELP}
`;

interface NodeView {
  name: string;
  id: string;
  role: string;
  status: string;
  statusReason: string;
  resources: { cpuCores: number; memoryBytes: number; diskBytes: number; arch: string; gpus: unknown[] };
  lastHeartbeatAgoMs: number | null;
  apiUrl: string;
}

export async function nodes(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...CONNECTION_FLAGS, force: { type: 'boolean' } }, USAGE);
  if (positionals[0] === 'remove' || positionals[0] === 'rm') {
    if (positionals.length !== 2) throw new UsageError(`need exactly one node name\n\n${USAGE}`);
    return removeNode(values, positionals[1]);
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0]}\n\n${USAGE}`);
  if (values.force) throw new UsageError(`--force goes with omni nodes remove\n\n${USAGE}`);
  const client = connect(values);
  try {
    const res = await client.get<{ nodes: NodeView[] }>('/v1/nodes');
    if (values.json) {
      printJson(res);
      return 0;
    }
    const rows = [['NAME', 'ROLE', 'STATUS', 'CPU', 'MEMORY', 'DISK', 'ARCH', 'GPUS', 'HEARTBEAT', 'API']];
    for (const n of res.nodes) {
      const hb = n.lastHeartbeatAgoMs === null ? 'never' : `${(n.lastHeartbeatAgoMs / 1000).toFixed(1)}s ago`;
      const status = n.statusReason ? `${n.status} (${n.statusReason})` : n.status;
      rows.push([n.name, n.role, status, String(n.resources.cpuCores), formatBytes(n.resources.memoryBytes), formatBytes(n.resources.diskBytes), n.resources.arch, String(n.resources.gpus.length), hb, n.apiUrl]);
    }
    process.stdout.write(table(rows));
    return 0;
  } finally {
    client.close();
  }
}

async function removeNode(values: Record<string, unknown>, name: string): Promise<number> {
  const client = connect(values);
  try {
    const res = await client.delete<{ removed: string; id: string; wasVoter: boolean }>(`/v1/nodes/${encodeURIComponent(name)}${values.force ? '?force=true' : ''}`);
    if (values.json) printJson(res);
    else process.stdout.write(`omni: removed ${res.wasVoter ? 'voter' : 'node'} ${res.removed} (${res.id}); a host may join again as ${res.removed} with a fresh data dir\n`);
    return 0;
  } finally {
    client.close();
  }
}
