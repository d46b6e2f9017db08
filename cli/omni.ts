// omni: the Omni CLI; talks to any node's HTTP API. One file per command under cli/omni/.
import { runMain, UsageError, versionLine } from './common.js';
import { status } from './omni/status.js';
import { nodes } from './omni/nodes.js';
import { kv } from './omni/kv.js';
import { token } from './omni/token.js';
import { deploy } from './omni/deploy.js';
import { run } from './omni/run.js';
import { ps, inspect, stop, start, rm, scale, endpoints, logs } from './omni/apps.js';
import { images } from './omni/images.js';
import { bundle } from './omni/bundle.js';
import { registry } from './omni/registry.js';

const USAGE = `usage: omni <command> [flags]

commands:
  status   leader, term, commit index, voters and health
  nodes    nodes with role, status, eligibility, resources and last heartbeat;
           omni nodes remove NAME | drain NODE [--undo] | eligible NODE | ineligible NODE
  kv       get/put/delete/list in the replicated key space
  token    create join or admin tokens
  run      run an app from an image or a command:  omni run --name web IMAGE | -- CMD...
  deploy   deploy or update an app from a YAML/JSON spec (rolling update, auto-rollback)
  ps       list apps;  inspect APP  spec, tasks, states, reasons, events
  logs     omni logs APP [-f] [--since 10m]
  scale    omni scale APP N;  stop / start / rm APP
  endpoints  host:port of every healthy replica
  images   the cluster's image registry: ls, inspect, tag, rm, import, export, push, pull, gc,
           replicas, registry (its /v2/ address)
  registry ca: the cluster CA (PEM) for docker/skopeo to trust a registry served over HTTPS
  bundle   air-gap bundle: export APP... -o FILE (specs + images), import FILE on another cluster

  version  omni's version (also --version)

Every command takes --addr, --token and --json; run omni <command> --help for more.
`;

const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = { status, nodes, kv, token, run, deploy, ps, inspect, logs, scale, stop, start, rm, endpoints, images, bundle, registry };

await runMain(async () => {
  const [cmd, ...rest] = process.argv.slice(2);
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(USAGE);
    return cmd === undefined ? 2 : 0;
  }
  if (cmd === '--version' || cmd === '-v' || cmd === 'version') {
    process.stdout.write(versionLine('omni'));
    return 0;
  }
  const run = COMMANDS[cmd];
  if (!run) throw new UsageError(`unknown command ${cmd}\n\n${USAGE}`);
  return run(rest);
});
