// omni: the Omni CLI; talks to any node's HTTP API. One file per command under cli/omni/.
// Commands are imported when run, so `omni --help` and each command load only what they use.
import { runMain, UsageError, versionLine } from './common.js';
import { mapBundleStackTraces } from './stack-traces.js';

mapBundleStackTraces(import.meta.url);

const USAGE = `usage: omni <command> [flags]

commands:
  status   leader, term, commit index, voters and health
  nodes    nodes with role, status, eligibility, resources and last heartbeat;
           omni nodes remove NAME | drain NODE [--undo] | eligible NODE | ineligible NODE
  kv       get/put/delete/list in the replicated key space
  sync     sync a project directory with an app's workspace on the cluster (--watch: keep syncing)
  token    create join or admin tokens
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

type Command = (argv: string[]) => Promise<number>;
const apps = () => import('./omni/apps.js');
const COMMANDS: Record<string, () => Promise<Command>> = {
  status: async () => (await import('./omni/status.js')).status,
  nodes: async () => (await import('./omni/nodes.js')).nodes,
  kv: async () => (await import('./omni/kv.js')).kv,
  sync: async () => (await import('./omni/sync.js')).sync,
  token: async () => (await import('./omni/token.js')).token,
  run: async () => (await import('./omni/run.js')).run,
  deploy: async () => (await import('./omni/deploy.js')).deploy,
  ps: async () => (await apps()).ps,
  inspect: async () => (await apps()).inspect,
  logs: async () => (await apps()).logs,
  scale: async () => (await apps()).scale,
  stop: async () => (await apps()).stop,
  start: async () => (await apps()).start,
  rm: async () => (await apps()).rm,
  endpoints: async () => (await apps()).endpoints,
  stats: async () => (await apps()).stats,
  schedule: async () => (await import('./omni/schedule.js')).schedule,
  watch: async () => (await apps()).watch,
  config: async () => (await import('./omni/config.js')).config,
  images: async () => (await import('./omni/images.js')).images,
  bundle: async () => (await import('./omni/bundle.js')).bundle,
  build: async () => (await import('./omni/build.js')).build,
  registry: async () => (await import('./omni/registry.js')).registry,
  compose: async () => (await import('./omni/compose.js')).compose,
};

// not a top-level await: the prebuilt bundle is CommonJS (scripts/build.mjs)
void runMain(async () => {
  const [cmd, ...rest] = process.argv.slice(2);
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(USAGE);
    return cmd === undefined ? 2 : 0;
  }
  if (cmd === '--version' || cmd === '-v' || cmd === 'version') {
    process.stdout.write(versionLine('omni'));
    return 0;
  }
  const load = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
  if (!load) throw new UsageError(`unknown command ${cmd}\n\n${USAGE}`);
  return (await load())(rest);
}, { exitWhenDone: true });
