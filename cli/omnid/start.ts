// omnid start: restart an existing member from its data dir.
import { Omnid } from '../../node/daemon.js';
import { parse, UsageError } from '../common.js';
import { DAEMON_FLAGS, DAEMON_FLAGS_HELP, daemonOptions, serveUntilStopped } from './daemon-flags.js';
import { loadFlags, mergeFlags, saveFlags } from './saved-flags.js';
import { defaultDataDir } from '../common.js';

const USAGE = `usage: omnid start [flags]

Restarts a node that was created by omnid init or omnid join, from its data dir.
Without --listen it listens where it did before. Every other flag given to omnid init or
join (API address, TLS, name, labels, timing) is reused; a flag given here overrides the saved
one and is saved in its place (DIR/omnid-flags.json).
${DAEMON_FLAGS_HELP}
`;

export async function start(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, DAEMON_FLAGS, USAGE);
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0]}\n\n${USAGE}`);
  const dataDir = (values.data as string | undefined) ?? defaultDataDir();
  const flags = mergeFlags(await loadFlags(dataDir), values);
  const opts = daemonOptions(flags, true);
  const daemon = await Omnid.start(opts);
  await saveFlags(dataDir, flags, daemon.apiUrl);
  // A join resumed here (its omnid join was stopped before it got in) knows no cluster yet.
  const where = daemon.clusterId ? `in cluster ${daemon.clusterId}` : 'joining (no cluster yet: its join resumes)';
  process.stdout.write(`omnid: started ${daemon.name} (${daemon.id}) ${where}; API ${daemon.apiUrl}\n`);
  return serveUntilStopped(daemon);
}
