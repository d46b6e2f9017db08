// omnid init: create a new cluster whose first (root) node is this host.
import { mkdir } from 'node:fs/promises';
import { writeFileAtomic } from '../../node/files.js';
import { dirname, resolve } from 'node:path';
import { Omnid } from '../../node/daemon.js';
import { caCertPath } from '../../node/api/cluster-ca.js';
import { parse, clientConfigPath, UsageError } from '../common.js';
import { DAEMON_FLAGS, DAEMON_FLAGS_HELP, daemonOptions, serveUntilStopped } from './daemon-flags.js';
import { saveFlags } from './saved-flags.js';
import { networkKeyFromChosenJoinToken } from '../../node/api/tokens.js';
import { DEFAULT_MAX_STATE_BYTES, MAX_MAX_STATE_BYTES, MIN_MAX_STATE_BYTES } from '../../protocol/cluster/state.js';

const USAGE = `usage: omnid init [flags]

Creates a one-voter cluster on this host (the root node), prints the command that joins
other hosts and the environment for the omni CLI, then keeps serving in the foreground.
${DAEMON_FLAGS_HELP}
  --voters N              voter target, odd (default 3)
  --ephemeral-root        once the target is reached without this node, leave and exit
  --join-token TOKEN      use this join token (from omnid join-token) instead of a new one:
                          hosts given it can run omnid join at the same time as this init
                          (they retry until this node answers); default: $OMNI_JOIN_TOKEN
                          when set (as omnid join reads it: the token stays out of ps)
  --max-state-bytes N     state quota: bytes of keys, apps, tokens and node records that
                          admin writes may fill (default ${DEFAULT_MAX_STATE_BYTES}, from ${MIN_MAX_STATE_BYTES}
                          to ${MAX_MAX_STATE_BYTES}); writes past it get 429 before they are logged
`;

export async function init(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...DAEMON_FLAGS, voters: { type: 'string' }, 'ephemeral-root': { type: 'boolean' }, 'max-state-bytes': { type: 'string' }, 'join-token': { type: 'string' } }, USAGE);
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0]}\n\n${USAGE}`);
  const voters = Number(values.voters ?? 3);
  if (!Number.isInteger(voters) || voters < 1 || voters > 9 || voters % 2 === 0) throw new UsageError('--voters must be an odd number from 1 to 9');
  const quota = values['max-state-bytes'] === undefined ? undefined : Number(values['max-state-bytes']);
  if (quota !== undefined && (!/^\d+$/.test(String(values['max-state-bytes'])) || quota < MIN_MAX_STATE_BYTES || quota > MAX_MAX_STATE_BYTES)) {
    throw new UsageError(`--max-state-bytes must be an integer from ${MIN_MAX_STATE_BYTES} to ${MAX_MAX_STATE_BYTES}`);
  }
  const envToken = values['join-token'] === undefined ? process.env.OMNI_JOIN_TOKEN || undefined : undefined;
  // said, so a token left in the environment from another cluster is not used unnoticed
  if (envToken) process.stderr.write('omnid: using the join token in OMNI_JOIN_TOKEN (unset it for a new one)\n');
  const chosenToken = (values['join-token'] as string | undefined) ?? envToken;
  if (chosenToken !== undefined) networkKeyFromChosenJoinToken(chosenToken); // a bad token is refused before anything is created
  const opts = { ...daemonOptions(values), voterTarget: voters, ephemeralRoot: values['ephemeral-root'] === true, ...(quota !== undefined ? { maxStateBytes: quota } : {}), ...(chosenToken !== undefined ? { joinToken: chosenToken } : {}) };
  const { daemon, client, joinCommand } = await Omnid.init(opts);
  await saveFlags(opts.dataDir, values, daemon.apiUrl);
  const cfgPath = clientConfigPath();
  await mkdir(dirname(cfgPath), { recursive: true });
  await writeFileAtomic(cfgPath, JSON.stringify({ addr: client.addr, token: client.token, ca: client.ca }, null, 2) + '\n', 0o600);
  process.stdout.write(
    `omnid: initialised cluster ${daemon.clusterId}; this node (${daemon.name}) is the root\n` +
      `omnid: to add a host, run on it:\n` +
      `${joinCommand}\n` +
      `omnid: to use the omni CLI (also saved to ${cfgPath}):\n` +
      `export OMNI_ADDR=${client.addr} OMNI_TOKEN=${client.token}${client.addr.startsWith('https:') ? ` OMNI_CA=${resolve(caCertPath(opts.dataDir))}` : ''}\n`,
  );
  return serveUntilStopped(daemon);
}
