// omnid join: add this host to an existing cluster through any member.
import { Omnid } from '../../node/daemon.js';
import { parse, parseDurationMs, UsageError } from '../common.js';
import { DAEMON_FLAGS, DAEMON_FLAGS_HELP, daemonOptions, serveUntilStopped } from './daemon-flags.js';
import { saveFlags } from './saved-flags.js';

const USAGE = `usage: omnid join <multiaddr> --token TOKEN [flags]

Joins the cluster through the member at <multiaddr> (as printed by omnid init) as a
non-voter; the leader promotes it to voter while the cluster is below its voter target.
The /p2p/<id> part may be left out (hosts provisioned together: omnid join-token, then
omnid init --join-token on the root); the join retries until that member answers.
  --token TOKEN           join token (from omnid init, omnid join-token, or
                          omni token create --role join); default: $OMNI_JOIN_TOKEN
                          (the token stays out of ps)
  --join-timeout D        how long to keep trying (default 30s; e.g. 10m while the hosts of a
                          new cluster boot). If nothing ever accepted a connection, the error is
                          UNREACHABLE and the data dir is removed: the same command can run again
                          (so too when it is stopped with Ctrl-C before anything accepted one)
${DAEMON_FLAGS_HELP}
`;

export async function join(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...DAEMON_FLAGS, token: { type: 'string' }, 'join-timeout': { type: 'string' } }, USAGE);
  if (positionals.length !== 1) throw new UsageError(`need exactly one peer multiaddr\n\n${USAGE}`);
  const token = (values.token as string | undefined) ?? process.env.OMNI_JOIN_TOKEN;
  if (!token) throw new UsageError(`--token is required\n\n${USAGE}`);
  const timeout = values['join-timeout'] as string | undefined;
  const joinTimeoutMs = timeout === undefined ? undefined : parseDurationMs(timeout, '--join-timeout');
  if (joinTimeoutMs !== undefined && (joinTimeoutMs < 1000 || joinTimeoutMs > 7 * 86_400_000)) throw new UsageError('--join-timeout must be from 1s to 7d');
  // Ctrl-C (or SIGTERM) while the join still tries stops it cleanly: when nothing ever accepted a
  // connection the data dir is removed (the same command can run again), else it is kept for
  // omnid start. A second signal ends the process at once.
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const opts = { ...daemonOptions(values), ...(joinTimeoutMs !== undefined ? { joinTimeoutMs } : {}), joinSignal: stop.signal };
  let daemon;
  try {
    daemon = await Omnid.join(opts, positionals[0], token);
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
  if (stop.signal.aborted) {
    // stopped just as the join went through: it stays a member (omnid start resumes it)
    await daemon.shutdown('stopped while joining');
    process.stderr.write(`omnid: stopped; the join went through: omnid start --data ${opts.dataDir} runs this node again\n`);
    return 130;
  }
  await saveFlags(opts.dataDir, values, daemon.apiUrl);
  process.stdout.write(`omnid: joined cluster ${daemon.clusterId} as ${daemon.name} (${daemon.id}); API ${daemon.apiUrl}\n`);
  return serveUntilStopped(daemon);
}
