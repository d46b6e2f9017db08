// omni nodes: every node's role, status, resources and last heartbeat.
import { parse, printJson, table, formatBytes, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect } from './connection.js';

const USAGE = `usage: omni nodes [flags]

Lists the cluster's nodes: role (leader, voter, non-voter), status, resources and how long
ago the answering node last heard a heartbeat from each.
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
  const { values, positionals } = parse(argv, CONNECTION_FLAGS, USAGE);
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0]}\n\n${USAGE}`);
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
