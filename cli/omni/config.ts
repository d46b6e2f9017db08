// omni config: the project directory's .omni/config.yaml (protocol/project/config.ts): init (from
// detection), set KEY=VALUE…, get KEY, show, validate. A change is refused while the project's
// app runs (the seed: configuration cannot change while processes run; it takes effect on the
// next omni run). init adds .omni/ to .gitignore.
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { parse, printJson, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect } from './connection.js';
import { writeFileAtomic } from '../../node/files.js';
import { OmniError } from '../../node/errors.js';
import { CONFIG_DIR, CONFIG_PATH, COMPUTE_PRESETS, gitignoreAdditions, initialConfig, parseProjectConfig, PROJECT_TYPES, setConfigValues, type ProjectType } from '../../protocol/project/config.js';
import { isActive, stateLabel, userState, type StateInput } from '../../protocol/apps/user-state.js';
import { appNameFromDir } from './run.js';
import { findProjectDir } from './project.js';
import { detect } from '../../protocol/forge/detect.js';
import { dirView, ignoreRules } from '../../node/forge/builder.js';

const USAGE = `usage: omni config init [DIR] [--name NAME] [--type service|job|lab] [--force]
       omni config set KEY=VALUE... [--offline]
       omni config get KEY | show | validate   [--json]

The project directory's ${CONFIG_PATH} (README.md, "Project directories"): what omni run, stop,
inspect and watch do there. init creates it (a lab when the directory holds notebooks, else a
service that Forge builds from the directory, or the --type given) and adds .omni/ to .gitignore
(.omni/* and !.omni/build.yaml when the project has a Forge build.yaml, which must stay visible);
set changes fields (KEY may be dotted: env.MODE=dev, compute.cpu=2; VALUE is read as YAML:
replicas=2, storage=[data,models]; an empty VALUE removes the key) and validates the result.
Changes are refused while the app runs: stop it first (omni stop NAME). Fields: name, type
(service | job | lab; cron fields are passed through), command, image, ports, health, replicas,
compute (${Object.keys(COMPUTE_PRESETS).join(' | ')} or {size, cpu, memory, gpus}), disk, storage, env, envFile,
build {repo, runner, maxSource}, retries (jobs), lab {ip}, driver.
  --dir DIR    the project directory (default: the current one, or the nearest parent with ${CONFIG_PATH})
  --offline    change the config without asking the cluster whether the app runs
  --force      init: replace an existing config
${CONNECTION_HELP}
`;

const FLAGS = { ...CONNECTION_FLAGS, dir: { type: 'string' as const }, name: { type: 'string' as const }, type: { type: 'string' as const }, force: { type: 'boolean' as const }, offline: { type: 'boolean' as const } };

/** Refuses while the app runs; passes when it does not, or no cluster is configured (nothing can run). */
async function refuseWhileRunning(values: Record<string, unknown>, name: string): Promise<void> {
  if (values.offline) return;
  let client;
  try {
    client = connect(values);
  } catch (err) {
    if (err instanceof UsageError && /no node address/.test(err.message)) return;
    throw err;
  }
  try {
    const r = await client.raw('GET', `/v1/apps/${encodeURIComponent(name)}`);
    if (r.status === 404) return;
    if (r.status !== 200) {
      const e = (r.body as { error?: { message?: string } })?.error;
      throw new OmniError(`HTTP_${r.status}`, `cannot tell whether ${name} runs: ${e?.message ?? `HTTP ${r.status}`}`);
    }
    const a = r.body as StateInput & { deployment?: { status: string } };
    const v = userState({ ...a, deploy: a.deployment?.status ?? 'stable' });
    if (isActive(v) || v.state === 'BUSY') throw new OmniError('CONFLICT', `${name} is running (${stateLabel(v)}): stop it first: omni stop ${name} (the config takes effect on the next omni run)`, { app: name });
  } catch (err) {
    if (err instanceof OmniError && err.code === 'UNAVAILABLE') throw new OmniError('UNAVAILABLE', `cannot tell whether ${name} runs (${err.message}): try again, or pass --offline to change the config anyway`);
    throw err;
  } finally {
    client.close();
  }
}

function projectDir(values: Record<string, unknown>): string {
  if (values.dir) {
    const d = resolve(values.dir as string);
    if (!existsSync(join(d, CONFIG_PATH))) throw new UsageError(`${d} has no ${CONFIG_PATH} (omni config init ${values.dir} creates it)`);
    return d;
  }
  const d = findProjectDir(process.cwd());
  if (!d) throw new UsageError(`no ${CONFIG_PATH} here or in a parent directory: omni config init creates one`);
  return d;
}

async function readConfigText(dir: string): Promise<string> {
  return readFile(join(dir, CONFIG_PATH), 'utf8');
}

/** Adds .omni/ (or .omni/* and !.omni/build.yaml) to DIR/.gitignore when it does not ignore it yet. */
async function ensureGitignore(dir: string): Promise<string[]> {
  const path = join(dir, '.gitignore');
  const cur = await readFile(path, 'utf8').catch(() => '');
  const add = gitignoreAdditions(cur, existsSync(join(dir, CONFIG_DIR, 'build.yaml')));
  if (add.length === 0) return [];
  await writeFileAtomic(path, cur + (cur === '' || cur.endsWith('\n') ? '' : '\n') + add.join('\n') + '\n', 0o644);
  return add;
}

/** What init writes: a lab for a notebook directory, else a service (Forge builds it) unless --type. */
function detectProject(dir: string, type: ProjectType | undefined): { type: ProjectType; note: string } {
  let entries: string[] = [];
  try {
    entries = readdirSync(dir);
  } catch {
    /* empty */
  }
  if (!type && entries.some((f) => f.endsWith('.ipynb'))) return { type: 'lab', note: 'notebooks (*.ipynb) found: a lab (a Jupyter notebook server)' };
  const t = type ?? 'service';
  if (t === 'lab') return { type: t, note: 'a lab (a Jupyter notebook server)' };
  const d = detect(dirView(dir, ignoreRules(dir)));
  if (d.ok) return { type: t, note: `Forge detected ${d.plan.type} (${d.plan.detectedBy.join(', ')}): omni run builds it` };
  return { type: t, note: `nothing Forge can build was found (${d.message.split('\n')[0]}): set a command (omni config set command='python3 app.py') or an image` };
}

export async function config(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    process.stdout.write(USAGE);
    return sub === undefined ? 2 : 0;
  }
  const { values, positionals } = parse(rest, FLAGS, USAGE);
  switch (sub) {
    case 'init': {
      if (positionals.length > 1) throw new UsageError(`init takes at most one DIR\n\n${USAGE}`);
      const dir = resolve(positionals[0] ?? (values.dir as string | undefined) ?? '.');
      if (!existsSync(dir)) throw new UsageError(`${dir}: no such directory`);
      const type = values.type as ProjectType | undefined;
      if (type !== undefined && !PROJECT_TYPES.includes(type)) throw new UsageError(`--type must be service, job or lab, got ${type}`);
      const path = join(dir, CONFIG_PATH);
      const name = (values.name as string | undefined) ?? appNameFromDir(dir);
      if (existsSync(path)) {
        if (!values.force) {
          process.stderr.write(`${path} exists (omni config show; --force replaces it)\n`);
          return 0;
        }
        const old = parseProjectConfig(await readConfigText(dir), appNameFromDir(dir));
        await refuseWhileRunning(values, old.ok ? old.config.name : name);
      }
      const det = detectProject(dir, type);
      const text = initialConfig(name, { type: det.type });
      const check = parseProjectConfig(text, name);
      if (!check.ok) throw new UsageError(`--name ${name}: ${check.errors[0].message}`);
      await mkdir(join(dir, CONFIG_DIR), { recursive: true });
      await writeFileAtomic(path, text, 0o644);
      const added = await ensureGitignore(dir);
      if (values.json) return printJson({ path, config: check.config, gitignoreAdded: added }), 0;
      process.stdout.write(`created ${path}: ${det.note}\n${added.length ? `added ${added.join(', ')} to ${join(dir, '.gitignore')}\n` : ''}\n${text}`);
      return 0;
    }
    case 'set': {
      if (positionals.length === 0) throw new UsageError(`set needs KEY=VALUE...\n\n${USAGE}`);
      const dir = projectDir(values);
      const text = await readConfigText(dir);
      const before = parseProjectConfig(text, appNameFromDir(dir));
      const r = setConfigValues(text, positionals, appNameFromDir(dir));
      if (!r.ok) throw new UsageError(`not changed: ${r.errors.map((e) => `${e.field}: ${e.message}`).join('; ')}`);
      await refuseWhileRunning(values, before.ok ? before.config.name : r.config.name);
      await writeFileAtomic(join(dir, CONFIG_PATH), r.text, 0o644);
      await ensureGitignore(dir);
      if (values.json) return printJson({ path: join(dir, CONFIG_PATH), config: r.config }), 0;
      process.stdout.write(`${join(dir, CONFIG_PATH)}: set ${positionals.map((a) => a.split('=')[0]).join(', ')}\n`);
      return 0;
    }
    case 'get':
    case 'show':
    case 'validate': {
      const dir = projectDir(values);
      const text = await readConfigText(dir);
      const r = parseProjectConfig(text, appNameFromDir(dir));
      if (sub === 'validate') {
        if (values.json) printJson(r.ok ? { ok: true, config: r.config } : r);
        else if (r.ok) process.stdout.write(`${join(dir, CONFIG_PATH)}: valid (${r.config.type} ${r.config.name})\n`);
        else process.stdout.write(`${join(dir, CONFIG_PATH)} is not valid:\n${r.errors.map((e) => `  ${e.field}: ${e.message}`).join('\n')}\n`);
        return r.ok ? 0 : 1;
      }
      if (!r.ok) throw new UsageError(`${join(dir, CONFIG_PATH)} is not valid:\n${r.errors.map((e) => `  ${e.field}: ${e.message}`).join('\n')}`);
      if (sub === 'show') {
        if (values.json) return printJson(r.config), 0;
        process.stdout.write(text.endsWith('\n') ? text : text + '\n');
        return 0;
      }
      if (positionals.length !== 1) throw new UsageError(`get needs one KEY\n\n${USAGE}`);
      let v: unknown = parseYaml(text) ?? {};
      for (const part of positionals[0].split('.')) v = v !== null && typeof v === 'object' && Object.hasOwn(v, part) ? (v as Record<string, unknown>)[part] : undefined;
      if (v === undefined) {
        process.stderr.write(`${positionals[0]}: not set\n`);
        return 1;
      }
      if (values.json) return printJson(v), 0;
      process.stdout.write((typeof v === 'object' ? JSON.stringify(v) : String(v)) + '\n');
      return 0;
    }
    default:
      throw new UsageError(`unknown subcommand config ${sub}\n\n${USAGE}`);
  }
}
