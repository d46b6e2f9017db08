// omni: the Omni CLI; talks to any node's HTTP API. One file per command under cli/omni/.
import { runMain, UsageError } from './common.js';
import { status } from './omni/status.js';
import { nodes } from './omni/nodes.js';
import { kv } from './omni/kv.js';
import { token } from './omni/token.js';

const USAGE = `usage: omni <command> [flags]

commands:
  status   leader, term, commit index, voters and health
  nodes    nodes with role, status, resources and last heartbeat
  kv       get/put/delete/list in the replicated key space
  token    create join or admin tokens

Every command takes --addr, --token and --json; run omni <command> --help for more.
`;

const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = { status, nodes, kv, token };

await runMain(async () => {
  const [cmd, ...rest] = process.argv.slice(2);
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(USAGE);
    return cmd === undefined ? 2 : 0;
  }
  const run = COMMANDS[cmd];
  if (!run) throw new UsageError(`unknown command ${cmd}\n\n${USAGE}`);
  return run(rest);
});
