// omni token create: mint a join token (adds hosts), an admin token (API access) or a pull
// token (read-only access to the image registry: docker login / docker pull).
import { parse, printJson, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect } from './connection.js';

const USAGE = `usage: omni token create --role join|admin|pull [--name LABEL] [flags]
${CONNECTION_HELP}
`;

export async function token(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...CONNECTION_FLAGS, role: { type: 'string' }, name: { type: 'string' } }, USAGE);
  if (positionals[0] !== 'create' || positionals.length !== 1) throw new UsageError(USAGE);
  const role = values.role as string | undefined;
  if (role !== 'join' && role !== 'admin' && role !== 'pull') throw new UsageError(`--role must be join, admin or pull\n\n${USAGE}`);
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
