// omni token create: mint a join token (adds hosts) or an admin token (API access).
import { parse, printJson, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect } from './connection.js';

const USAGE = `usage: omni token create --role join|admin [--name LABEL] [flags]
${CONNECTION_HELP}
`;

export async function token(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...CONNECTION_FLAGS, role: { type: 'string' }, name: { type: 'string' } }, USAGE);
  if (positionals[0] !== 'create' || positionals.length !== 1) throw new UsageError(USAGE);
  const role = values.role as string | undefined;
  if (role !== 'join' && role !== 'admin') throw new UsageError(`--role must be join or admin\n\n${USAGE}`);
  const client = connect(values);
  try {
    const r = await client.post<{ id: string; role: string; token: string }>('/v1/tokens', { role, name: values.name ?? '' });
    if (values.json) printJson(r);
    else process.stdout.write(`${r.token}\n`);
    return 0;
  } finally {
    client.close();
  }
}
