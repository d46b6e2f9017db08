// omnid start: restart an existing member from its data dir.
import { Omnid } from '../../node/daemon.js';
import { parse, UsageError } from '../common.js';
import { DAEMON_FLAGS, DAEMON_FLAGS_HELP, daemonOptions, serveUntilStopped } from './daemon-flags.js';

const USAGE = `usage: omnid start [flags]

Restarts a node that was created by omnid init or omnid join, from its data dir.
Without --listen it listens where it did before.
${DAEMON_FLAGS_HELP}
`;

export async function start(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, DAEMON_FLAGS, USAGE);
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0]}\n\n${USAGE}`);
  const daemon = await Omnid.start(daemonOptions(values, true));
  process.stdout.write(`omnid: started ${daemon.name} (${daemon.id}) in cluster ${daemon.clusterId}; API ${daemon.apiUrl}\n`);
  return serveUntilStopped(daemon);
}
