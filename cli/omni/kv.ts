// omni kv get|put|delete|list: the replicated, versioned key space.
import { parse, printJson, table, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect } from './connection.js';

const USAGE = `usage: omni kv <get|put|delete|list> [args] [flags]

  omni kv get KEY [--stale]                  linearizable read (--stale: this node's copy)
  omni kv put KEY VALUE [--expect-version N]  write (N=0: only if absent)
  omni kv delete KEY [--expect-version N]
  omni kv list [PREFIX] [--limit N] [--stale]
${CONNECTION_HELP}
`;

interface KvView {
  key: string;
  value: string;
  version: number;
  modIndex: number;
}

export async function kv(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...CONNECTION_FLAGS, stale: { type: 'boolean' }, 'expect-version': { type: 'string' }, limit: { type: 'string' } }, USAGE);
  const [op, ...args] = positionals;
  const client = connect(values);
  const stale = values.stale ? '?stale=true' : '';
  const ev = values['expect-version'] as string | undefined;
  if (ev !== undefined && !/^\d+$/.test(ev)) throw new UsageError('--expect-version must be a non-negative integer');
  const key = (k: string | undefined) => {
    if (!k) throw new UsageError(`missing KEY\n\n${USAGE}`);
    return encodeURIComponent(k);
  };
  try {
    switch (op) {
      case 'get': {
        const r = await client.get<KvView>(`/v1/kv/${key(args[0])}${stale}`);
        if (values.json) printJson(r);
        else process.stdout.write(r.value + '\n');
        return 0;
      }
      case 'put': {
        if (args.length !== 2) throw new UsageError(`put needs KEY and VALUE\n\n${USAGE}`);
        const r = await client.put<{ key: string; version: number }>(`/v1/kv/${key(args[0])}`, { value: args[1], ...(ev !== undefined ? { expectedVersion: Number(ev) } : {}) });
        if (values.json) printJson(r);
        else process.stdout.write(`${args[0]} = version ${r.version}\n`);
        return 0;
      }
      case 'delete': {
        const r = await client.delete(`/v1/kv/${key(args[0])}${ev !== undefined ? `?expectedVersion=${ev}` : ''}`);
        if (values.json) printJson(r);
        else process.stdout.write(`deleted ${args[0]}\n`);
        return 0;
      }
      case 'list': {
        const q = new URLSearchParams({ prefix: args[0] ?? '', limit: String(values.limit ?? 1000) });
        if (values.stale) q.set('stale', 'true');
        const r = await client.get<{ items: KvView[] }>(`/v1/kv?${q}`);
        if (values.json) printJson(r);
        else process.stdout.write(table([['KEY', 'VERSION', 'VALUE'], ...r.items.map((i) => [i.key, String(i.version), i.value.length > 60 ? i.value.slice(0, 57) + '...' : i.value])]));
        return 0;
      }
      default:
        throw new UsageError(`unknown kv operation ${op ?? '(none)'}\n\n${USAGE}`);
    }
  } finally {
    client.close();
  }
}
