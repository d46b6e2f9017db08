// omnid leave: ask the local daemon (through its control socket) to leave the cluster.
import { ApiClient } from '../../node/api/client.js';
import { controlSocketPath } from '../../node/daemon.js';
import { parse, defaultDataDir, printJson, UsageError } from '../common.js';

const USAGE = `usage: omnid leave [--data DIR] [--json]

Removes the node running from DIR from the cluster cleanly: it hands off leadership if it
has it, leaves the Raft configuration and exits. The rest of the cluster keeps running.
  --data DIR    the node's data directory (default $OMNI_DATA or ~/.omni/data)
  --json        machine-readable output
`;

export async function leave(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { data: { type: 'string' }, json: { type: 'boolean' } }, USAGE);
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0]}\n\n${USAGE}`);
  const dataDir = (values.data as string | undefined) ?? defaultDataDir();
  const client = new ApiClient(`unix:${controlSocketPath(dataDir)}`, undefined);
  try {
    const res = await client.post<{ node: string }>('/v1/leave', {});
    if (values.json) printJson(res);
    else process.stdout.write(`omnid: ${res.node} left the cluster\n`);
    return 0;
  } finally {
    client.close();
  }
}
