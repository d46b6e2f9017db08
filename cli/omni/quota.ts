// omni quota [set SIZE]: the replicated state quota (protocol/cluster/quota.ts) — the bytes of
// keys, apps, tokens and node records that admin writes may fill — what the state holds of it and
// whether the QUOTA_EXCEEDED alarm is raised; `set` changes it on every node at once (an admin).
import { formatBytes, parse, parseByteSize, printJson, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect } from './connection.js';

const USAGE = `usage: omni quota [flags]
       omni quota set SIZE [--force] [flags]

(no command)  the state quota: bytes held, the quota, where the QUOTA_EXCEEDED alarm starts
set SIZE      changes the quota on every node (an admin): 4GiB, 512MiB, 1.5GiB or bytes
              (binary units, as Docker's 512m; a fraction is rounded down to whole bytes).
              omnid init --max-state-bytes sets the first one (default 2 GiB, as etcd's).
  --force     set it below what the state holds: every write that grows the state is
              then refused (past a 2 MiB reserve the cluster's own too) until enough is
              deleted; deletes always pass
${CONNECTION_HELP}
`;

interface QuotaView {
  stateBytes: number;
  maxStateBytes: number;
  alarmAtBytes: number;
  alarm: boolean;
  reserveBytes: number;
  previousMaxStateBytes?: number;
}

export async function quota(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...CONNECTION_FLAGS, force: { type: 'boolean' } }, USAGE);
  const [sub, ...rest] = positionals;
  if (!((sub === undefined && rest.length === 0) || (sub === 'set' && rest.length === 1))) throw new UsageError(USAGE);
  if (values.force && sub !== 'set') throw new UsageError(`--force is for omni quota set\n\n${USAGE}`);
  const size = sub === 'set' ? parseByteSize(rest[0], 'SIZE') : undefined;
  const client = connect(values);
  try {
    const q = size === undefined ? await client.get<QuotaView>('/v1/quota') : await client.put<QuotaView>('/v1/quota', { maxStateBytes: size, ...(values.force ? { force: true } : {}) });
    if (values.json) {
      printJson(q);
      return 0;
    }
    const pct = q.maxStateBytes > 0 ? ((100 * q.stateBytes) / q.maxStateBytes).toFixed(1) : '0';
    const lines = [
      ...(q.previousMaxStateBytes !== undefined ? [`quota changed from ${formatBytes(q.previousMaxStateBytes)} to ${formatBytes(q.maxStateBytes)}`] : []),
      `state held    ${formatBytes(q.stateBytes)} (${q.stateBytes} bytes, ${pct}% of the quota)`,
      `quota         ${formatBytes(q.maxStateBytes)} (${q.maxStateBytes} bytes; the cluster's own writes may use ${formatBytes(q.reserveBytes)} more)`,
      `alarm         ${q.alarm ? 'QUOTA_EXCEEDED: writes that grow the state are refused — delete keys or apps, or raise the quota' : `off (raised at ${formatBytes(q.alarmAtBytes)})`}`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
    return 0;
  } finally {
    client.close();
  }
}
