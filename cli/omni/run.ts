// omni run: start an app from an image or a command in one line (like docker run).
import { parse, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP } from './connection.js';
import { submit } from './deploy.js';
import { readEnvFile } from './app-io.js';

const USAGE = `usage: omni run --name NAME [flags] IMAGE [ARGS...]
       omni run --name NAME [flags] -- COMMAND [ARGS...]

  --name NAME            app name (required)
  --port [NAME=]PORT[:HOSTPORT]   port the app listens on (repeatable; host port auto if omitted)
  --env KEY=VALUE        environment (repeatable);  --env-file FILE
  --replicas N           (default 1)
  --cpu CORES            e.g. 0.5 or 500m;  --memory SIZE  e.g. 256M, 1G
  --constraint EXPR      e.g. arch==amd64, label.zone==a, node.name!=n3 (repeatable)
  --spread               at most one replica per node (anti-affinity)
  --health-http PATH     HTTP health check on the first port
  --restart POLICY       always | on-failure | never (default always; services only)
  --job                  a job (same as --type job): each replica runs to completion once;
                         exit 0 succeeded (never run again), a failure is retried as a new
                         task after a backoff (1 s doubling, at most 60 s); waits until it
                         finished and exits 0 if it succeeded, 1 if it failed
  --type TYPE            service (default) | job
  --retries N            jobs: failures retried per run (default 3)
  --exclusive            at most once: each replica runs on one node at a time, even across
                         partitions and crashes (its node stops it when cut off from the quorum
                         for a lease, 10 s; a replacement starts only after that); stop-first updates
  --driver NAME          docker | process (default: docker for an image, process for a command)
  --replace              replace an app of the same name (a rolling update to this spec);
                         without it an existing name is refused (CONFLICT), as docker run --name does
  --detach, -d           don't wait for the app to be healthy;  --timeout SECONDS (default 120)

Waits until every replica is healthy and stable (update.minHealthyMs, 5 s by default, without
a restart); a crash loop is reported with its cause, exit code and last output lines (exit 1).
A command's $PORT, \${PORT}, $OMNI_PORT_<NAME> (any variable of the task's own environment)
are expanded by Omni — quote them so your shell does not: -- redis-server --port '$PORT'.
$$ is a literal $.
${CONNECTION_HELP}
`;

export async function run(argv: string[]): Promise<number> {
  const dash = argv.indexOf('--');
  const flagArgs = dash >= 0 ? argv.slice(0, dash) : argv;
  const command = dash >= 0 ? argv.slice(dash + 1) : undefined;
  const { values, positionals } = parse(
    flagArgs,
    {
      ...CONNECTION_FLAGS,
      name: { type: 'string' }, port: { type: 'string', multiple: true }, env: { type: 'string', multiple: true }, 'env-file': { type: 'string' },
      replicas: { type: 'string' }, cpu: { type: 'string' }, memory: { type: 'string' }, constraint: { type: 'string', multiple: true },
      spread: { type: 'boolean' }, 'health-http': { type: 'string' }, restart: { type: 'string' }, driver: { type: 'string' },
      detach: { type: 'boolean', short: 'd' }, timeout: { type: 'string' }, replace: { type: 'boolean' }, exclusive: { type: 'boolean' },
      job: { type: 'boolean' }, type: { type: 'string' }, retries: { type: 'string' },
    },
    USAGE,
  );
  if (!values.name) throw new UsageError(`--name is required\n\n${USAGE}`);
  if (!command && positionals.length === 0) throw new UsageError(`give an IMAGE, or -- COMMAND\n\n${USAGE}`);
  if (command && command.length === 0) throw new UsageError('nothing after --');
  const env: Record<string, string> = values['env-file'] ? await readEnvFile(values['env-file'] as string) : {};
  for (const e of (values.env as string[] | undefined) ?? []) {
    const eq = e.indexOf('=');
    if (eq <= 0) throw new UsageError(`--env must be KEY=VALUE, got ${e}`);
    env[e.slice(0, eq)] = e.slice(eq + 1);
  }
  const ports = ((values.port as string[] | undefined) ?? []).map((p, i) => {
    const m = /^(?:([a-z][a-z0-9-]*)=)?(\d+)(?::(\d+))?$/.exec(p);
    if (!m) throw new UsageError(`--port must be [NAME=]PORT[:HOSTPORT], got ${p}`);
    return { name: m[1] ?? (i === 0 ? 'http' : `p${i}`), port: Number(m[2]), ...(m[3] ? { hostPort: Number(m[3]) } : {}) };
  });
  const type = values.job ? 'job' : (values.type as string | undefined);
  if (values.job && values.type && values.type !== 'job') throw new UsageError(`--job and --type ${values.type} disagree`);
  if (values.retries !== undefined && !/^\d+$/.test(values.retries as string)) throw new UsageError(`--retries must be a whole number, got ${values.retries}`);
  const spec: Record<string, unknown> = {
    name: values.name,
    ...(command ? { command } : { image: positionals[0], args: positionals.slice(1) }),
    env,
    ports,
    replicas: values.replicas !== undefined ? Number(values.replicas) : 1,
    resources: { ...(values.cpu ? { cpu: values.cpu } : {}), ...(values.memory ? { memory: values.memory } : {}) },
    constraints: values.constraint ?? [],
    antiAffinity: values.spread === true,
    ...(values['health-http'] ? { healthCheck: { type: 'http', port: ports[0]?.name ?? 'http', path: values['health-http'] } } : {}),
    ...(values.restart ? { restart: { policy: values.restart } } : {}),
    ...(values.driver ? { driver: values.driver } : {}),
    ...(values.exclusive ? { exclusive: true } : {}),
    ...(type ? { type } : {}),
    ...(values.retries !== undefined ? { retries: Number(values.retries) } : {}),
  };
  // A job has no ports or health check: leave the empty list out so the server's check reads naturally.
  if (type === 'job' && ports.length === 0) delete spec.ports;
  return submit(values, spec, { createOnly: values.replace !== true });
}
