// The omni CLI's main: usage, version, and the command named by argv[2], from the module under
// cli/omni/ that cli/omni-commands.json names. `load` brings that module: cli/omni.ts (run from the
// sources) imports any of them when run; each prebuilt bundle (scripts/build.mjs) holds one module
// and its dependencies only, so a command reads and compiles its own code and nothing else.
import { helpAsFlag, helpOrVersion, runMain, UsageError } from './common.js';
import { mapBundleStackTraces } from './stack-traces.js';
import COMMANDS from './omni-commands.json' with { type: 'json' };

/** A command's module: its exports, the command functions among them. */
export type CommandModule = Record<string, unknown>;
type Command = (argv: string[]) => Promise<number>;

const USAGE = `usage: omni <command> [flags]

commands:
  status   leader, term, commit index, voters and health
  nodes    nodes with role, status, eligibility, resources and last heartbeat;
           omni nodes remove NAME | drain NODE [--undo] | eligible NODE | ineligible NODE
  kv       get/put/delete/list in the replicated key space
  sync     sync a project directory with an app's workspace on the cluster (--watch: keep syncing)
  token    create, list and revoke join, admin and pull tokens
  quota    the replicated state quota: bytes held, the alarm;  omni quota set SIZE (an admin)
  run      run an app from an image or a command:  omni run --name web IMAGE | -- CMD...
  deploy   deploy or update an app from a YAML/JSON spec (rolling update, auto-rollback)
  ps       list apps;  inspect APP  spec, tasks, states, reasons, events
  logs     omni logs APP [-f] [--since 10m]
  scale    omni scale APP N;  stop / start / rm APP (stop asks first: --yes)
  schedule omni schedule enable|disable|trigger APP: a schedule ON / OFF, or one run now
  watch    omni watch APP: follow its logs while it lives, reconnecting; then what was kept
  config   the project directory's .omni/config.yaml: init, set KEY=VALUE, get, show, validate
           (omni run / stop / inspect / watch with no APP use the project's app)
  endpoints  host:port of every healthy replica
  stats    omni stats [APP]: CPU and memory of each task, sampled now by its node
  images   the cluster's image registry: ls, inspect, tag, rm, import, export, push, pull, gc,
           replicas, registry (its /v2/ address)
  registry ca: the cluster CA (PEM) for docker/skopeo to trust a registry served over HTTPS
  build    build DIR from source into an image of the cluster's registry (Forge):
           detection, cached dependency layer, reproducible layers, REPO:sha-<source digest>
  compose  a Compose file as a stack: omni compose up|down|ps|logs|config|pull|build [-f FILE]
  bundle   air-gap bundle: export APP... -o FILE (specs + images), import FILE on another cluster

  version  omni's version (also --version)

Every command takes --addr, --token and --json; run omni <command> --help for more.
`;

/** The module (file under cli/omni/, without .ts) and export of each command. */
export const COMMAND_MODULES: Readonly<Record<string, readonly [string, string]>> = COMMANDS as unknown as Record<string, [string, string]>;

export function runOmni(load: (module: string) => Promise<CommandModule>): void {
  mapBundleStackTraces(import.meta.url);
  // not a top-level await: the prebuilt bundles are CommonJS (scripts/build.mjs)
  void runMain(async () => {
    const { cmd, rest } = helpAsFlag(process.argv.slice(2), (c) => Object.hasOwn(COMMAND_MODULES, c));
    const code = helpOrVersion(cmd, USAGE, 'omni');
    if (code !== undefined) return code;
    const entry = Object.hasOwn(COMMAND_MODULES, cmd) ? COMMAND_MODULES[cmd] : undefined;
    if (!entry) throw new UsageError(`unknown command ${cmd}\n\n${USAGE}`);
    const fn = (await load(entry[0]))[entry[1]];
    if (typeof fn !== 'function') throw new Error(`omni: command ${cmd}: cli/omni/${entry[0]} has no function ${entry[1]}`);
    return (fn as Command)(rest);
  }, { exitWhenDone: true });
}
