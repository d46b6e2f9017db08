// omnid join: add this host to an existing cluster through any member.
import { Omnid } from '../../node/daemon.js';
import { parse, UsageError } from '../common.js';
import { DAEMON_FLAGS, DAEMON_FLAGS_HELP, daemonOptions, serveUntilStopped } from './daemon-flags.js';
import { saveFlags } from './saved-flags.js';

const USAGE = `usage: omnid join <multiaddr> --token TOKEN [flags]

Joins the cluster through the member at <multiaddr> (as printed by omnid init) as a
non-voter; the leader promotes it to voter while the cluster is below its voter target.
  --token TOKEN           join token (from omnid init, or omni token create --role join)
${DAEMON_FLAGS_HELP}
`;

export async function join(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...DAEMON_FLAGS, token: { type: 'string' } }, USAGE);
  if (positionals.length !== 1) throw new UsageError(`need exactly one peer multiaddr\n\n${USAGE}`);
  const token = (values.token as string | undefined) ?? process.env.OMNI_JOIN_TOKEN;
  if (!token) throw new UsageError(`--token is required\n\n${USAGE}`);
  const opts = daemonOptions(values);
  const daemon = await Omnid.join(opts, positionals[0], token);
  await saveFlags(opts.dataDir, values);
  process.stdout.write(`omnid: joined cluster ${daemon.clusterId} as ${daemon.name} (${daemon.id}); API ${daemon.apiUrl}\n`);
  return serveUntilStopped(daemon);
}
