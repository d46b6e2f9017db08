// omni nodes: every node's role, status, eligibility, resources and last heartbeat;
// omni nodes drain / eligible / ineligible NODE: whether the scheduler may place tasks there;
// omni nodes remove NAME: take a dead member out of the cluster.
import { parse, printJson, table, formatBytes, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect } from './connection.js';
import type { ApiClient } from '../../node/api/client.js';

const USAGE = `usage: omni nodes [flags]
       omni nodes remove NAME [--force] [flags]
       omni nodes drain NODE [--undo] [--detach] [--timeout SECONDS] [flags]
       omni nodes ineligible NODE | omni nodes eligible NODE [flags]

Lists the cluster's nodes: role (leader, voter, non-voter), status, scheduling eligibility,
resources and how long ago the answering node last heard a heartbeat from each.

  drain NODE        move the node's tasks to other nodes (a replacement starts and runs stable
                    before each task stops), then leave it ineligible; waits until it is empty
                    unless --detach. --undo (or omni nodes eligible NODE) makes it eligible again.
  ineligible NODE   place no new tasks on NODE; the tasks it runs stay
  eligible NODE     place tasks on NODE again
  remove NAME       take a member that is gone for good (a dead host, or a node that refuses to
                    start with STORAGE_CORRUPT) out of the cluster: it is marked left and leaves
                    the Raft configuration. A host may then join again under the same name with
                    a fresh data dir. --force: even though it is still heard from (it is told to stop)
${CONNECTION_HELP}
`;

/** How long `omni nodes drain` waits for the node to empty by default. */
const DRAIN_TIMEOUT_S = 600;
const POLL_MS = 500;

interface NodeView {
  name: string;
  id: string;
  role: string;
  status: string;
  statusReason: string;
  eligibility?: string;
  resources: { cpuCores: number; memoryBytes: number; diskBytes: number; arch: string; gpus: unknown[]; drivers?: string[] };
  lastHeartbeatAgoMs: number | null;
  apiUrl: string;
}

interface NodeTasks { name: string; eligibility: string; tasks: { id: string; app: string }[] }

export async function nodes(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...CONNECTION_FLAGS, force: { type: 'boolean' }, undo: { type: 'boolean' }, detach: { type: 'boolean', short: 'd' }, timeout: { type: 'string' } }, USAGE);
  const [sub, node, ...extra] = positionals;
  if (sub === 'remove' || sub === 'rm') {
    if (!node || extra.length > 0) throw new UsageError(`need exactly one node name\n\n${USAGE}`);
    return removeNode(values, node);
  }
  if (values.force) throw new UsageError(`--force goes with omni nodes remove\n\n${USAGE}`);
  if (sub !== undefined) {
    if (!['drain', 'eligible', 'ineligible'].includes(sub)) throw new UsageError(`unknown subcommand ${sub}\n\n${USAGE}`);
    if (!node || extra.length > 0) throw new UsageError(`need exactly one NODE\n\n${USAGE}`);
    const eligibility = sub === 'drain' ? (values.undo ? 'eligible' : 'draining') : sub;
    return setEligibility(values, node, eligibility);
  }
  const client = connect(values);
  try {
    const res = await client.get<{ nodes: NodeView[] }>('/v1/nodes');
    if (values.json) {
      printJson(res);
      return 0;
    }
    const rows = [['NAME', 'ROLE', 'STATUS', 'ELIGIBILITY', 'CPU', 'MEMORY', 'DISK', 'ARCH', 'GPUS', 'DRIVERS', 'HEARTBEAT', 'API']];
    for (const n of res.nodes) {
      const hb = n.lastHeartbeatAgoMs === null ? 'never' : `${(n.lastHeartbeatAgoMs / 1000).toFixed(1)}s ago`;
      const status = n.statusReason ? `${n.status} (${n.statusReason})` : n.status;
      rows.push([n.name, n.role, status, n.eligibility ?? 'eligible', String(n.resources.cpuCores), formatBytes(n.resources.memoryBytes), formatBytes(n.resources.diskBytes), n.resources.arch, String(n.resources.gpus.length), (n.resources.drivers ?? []).filter((d) => d !== 'mock').join(',') || '?', hb, n.apiUrl]);
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

async function setEligibility(values: Record<string, unknown>, node: string, eligibility: string): Promise<number> {
  const client = connect(values);
  const path = `/v1/nodes/${encodeURIComponent(node)}`;
  try {
    const r = await client.post<{ name: string; eligibility: string }>(`${path}/eligibility`, { eligibility });
    if (eligibility !== 'draining' || values.detach) {
      if (values.json) printJson(r);
      else process.stdout.write(`${r.name}: ${r.eligibility}${r.eligibility === 'draining' ? ' (its tasks are moving to other nodes)' : ''}\n`);
      return 0;
    }
    const timeoutS = Number(values.timeout ?? DRAIN_TIMEOUT_S);
    if (!(timeoutS > 0)) throw new UsageError('--timeout must be a number of seconds');
    const done = await waitDrained(client, path, timeoutS * 1000, (line) => !values.json && process.stderr.write(`${r.name}: ${line}\n`));
    if (values.json) printJson({ ...r, drained: done.ok, message: done.message });
    else process.stdout.write(`${r.name}: ${done.message}\n`);
    return done.ok ? 0 : 1;
  } finally {
    client.close();
  }
}

async function waitDrained(client: ApiClient, path: string, timeoutMs: number, progress: (line: string) => void): Promise<{ ok: boolean; message: string }> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  // The first look is linearizable (the node asked may not have applied the drain yet).
  let query = '';
  while (Date.now() < deadline) {
    const n = await client.get<NodeTasks>(`${path}${query}`);
    query = '?stale=true';
    if (n.eligibility === 'ineligible' && n.tasks.length === 0) return { ok: true, message: 'drained (ineligible; omni nodes eligible to undo)' };
    if (n.eligibility === 'eligible') return { ok: false, message: 'the drain was cancelled (the node is eligible again)' };
    const line = `${n.tasks.length} task${n.tasks.length === 1 ? '' : 's'} left: ${n.tasks.slice(0, 5).map((t) => t.id).join(', ')}${n.tasks.length > 5 ? ', ...' : ''}`;
    if (line !== last) progress(line);
    last = line;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  return { ok: false, message: `still draining after ${Math.round(timeoutMs / 1000)}s (${last}); omni ps shows why a task cannot move` };
}
