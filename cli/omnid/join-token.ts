// omnid join-token: a new join token, for hosts provisioned together (omnid init --join-token).
import { newJoinToken, newNetworkKey } from '../../node/api/tokens.js';
import { parse, printJson, UsageError } from '../common.js';

const USAGE = `usage: omnid join-token [--json]

Prints a new join token (a new cluster network key and a random secret) and does nothing
else. Hand the same token to every host of a new cluster, so they can start at once in any
order (README: Hosts provisioned together):
  root:    omnid init --join-token TOKEN --listen /ip4/0.0.0.0/tcp/7946
  others:  omnid join /ip4/ROOT-IP/tcp/7946 --token TOKEN
A joining host retries until the root answers. Keep the token secret: it admits hosts.
  --json    {"joinToken": "…"}
`;

export async function joinToken(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { json: { type: 'boolean' } }, USAGE);
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0]}\n\n${USAGE}`);
  const token = newJoinToken(newNetworkKey());
  if (values.json) printJson({ joinToken: token });
  else process.stdout.write(`${token}\n`);
  return 0;
}
