// omni token create | ls | revoke: mint a join token (adds hosts), an admin token (API access) or
// a pull token (read-only access to the image registry: docker login / docker pull); list the
// cluster's tokens (never their secrets); revoke one at once on every node.
import { parse, printJson, table, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect } from './connection.js';

const USAGE = `usage: omni token create --role join|admin|pull [--name LABEL] [flags]
       omni token ls [flags]
       omni token revoke ID [flags]

create   prints a new token (its secret is shown once; the cluster keeps only its hash)
ls       every token of the cluster: id, role, name (omnid init's are named so)
revoke   the token stops working on every node as soon as they apply it (the last admin
         token is refused: create another first). Revoke omnid init's join token once the
         hosts of a new cluster have joined, and mint a join token per host added later.
${CONNECTION_HELP}
`;

interface TokenRow {
  id: string;
  role: string;
  name: string;
  createdIndex: number;
}

export async function token(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...CONNECTION_FLAGS, role: { type: 'string' }, name: { type: 'string' } }, USAGE);
  const [sub, ...rest] = positionals;
  const role = values.role as string | undefined;
  if (sub === 'create') {
    if (rest.length > 0) throw new UsageError(USAGE);
    if (role !== 'join' && role !== 'admin' && role !== 'pull') throw new UsageError(`--role must be join, admin or pull\n\n${USAGE}`);
  } else {
    if (!((sub === 'ls' && rest.length === 0) || (sub === 'revoke' && rest.length === 1))) throw new UsageError(USAGE);
    if (role !== undefined || values.name !== undefined) throw new UsageError(`--role and --name are for omni token create\n\n${USAGE}`);
  }
  const client = connect(values);
  try {
    if (sub === 'create') {
      const r = await client.post<{ id: string; role: string; token: string }>('/v1/tokens', { role, name: values.name ?? '' });
      if (values.json) printJson(r);
      else process.stdout.write(`${r.token}\n`);
    } else if (sub === 'ls') {
      const r = await client.get<{ tokens: TokenRow[] }>('/v1/tokens');
      if (values.json) printJson(r);
      else process.stdout.write(table([['ID', 'ROLE', 'NAME'], ...r.tokens.map((t) => [t.id, t.role, t.name || '-'])]));
    } else {
      const r = await client.delete<{ revoked: string; role: string; name: string }>(`/v1/tokens/${encodeURIComponent(rest[0])}`);
      if (values.json) printJson(r);
      else process.stdout.write(`revoked ${r.role} token ${r.revoked}${r.name ? ` (${r.name})` : ''}\n`);
    }
    return 0;
  } finally {
    client.close();
  }
}
