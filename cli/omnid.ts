// omnid: the Omni daemon. One file per subcommand under cli/omnid/.
// Subcommands are imported when run: `omnid --help` and `omnid leave` do not load the daemon.
import { helpAsFlag, helpOrVersion, runMain, UsageError } from './common.js';
import { mapBundleStackTraces } from './stack-traces.js';
import { installProcessGuard } from '../node/process-guard.js';
import { createLogger } from '../node/logger.js';
import { dropLauncherEnv } from './runtime-env.js';

mapBundleStackTraces(import.meta.url);
dropLauncherEnv(process.env);

const USAGE = `usage: omnid <command> [flags]

commands:
  init     create a new cluster with this host as its first (root) node
  join     join an existing cluster:  omnid join <multiaddr> --token TOKEN
  start    restart a member from its data dir
  leave    remove the local node from the cluster cleanly
  join-token  print a new join token, for hosts that start together (omnid init --join-token)
  version  omnid's version (also --version)

Run omnid <command> --help for the flags of a command.
`;

type Command = (argv: string[]) => Promise<number>;
const COMMANDS: Record<string, () => Promise<Command>> = {
  init: async () => (await import('./omnid/init.js')).init,
  join: async () => (await import('./omnid/join.js')).join,
  start: async () => (await import('./omnid/start.js')).start,
  leave: async () => (await import('./omnid/leave.js')).leave,
  'join-token': async () => (await import('./omnid/join-token.js')).joinToken,
};

// Uncaught exceptions and unhandled rejections are logged with a code; only unsafe ones stop the
// daemon (node/process-guard.ts). The running daemon attaches its logger and clean shutdown.
installProcessGuard({ log: createLogger('omnid') });

// not a top-level await: the prebuilt bundle is CommonJS (scripts/build.mjs)
void runMain(async () => {
  const { cmd, rest } = helpAsFlag(process.argv.slice(2), (c) => Object.hasOwn(COMMANDS, c));
  const word = helpOrVersion(cmd, USAGE, 'omnid');
  if (word !== undefined) return word;
  const load = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
  if (!load) throw new UsageError(`unknown command ${cmd}\n\n${USAGE}`);
  const code = await (await load())(rest);
  // Libraries may keep timers alive after a clean shutdown; the daemon is done.
  process.exit(code);
}).then(() => process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0));
