// .omni/config.yaml: a project directory's app (issue 16). Pure: parsing (the `yaml` package),
// validation with errors that name the field, and the app spec the config gives. The CLI
// (cli/omni/config.ts, cli/omni/project.ts) reads and writes the file.
//
//   name: api                    # the app's name (default: the directory's name)
//   type: service                # service | job | lab (cron and its fields are passed to the spec)
//   command: [python3, app.py]   # or a string (run by sh -c), or image: REF; neither: built
//                                # from this directory by Forge (a lab: the notebook server)
//   ports: [8080]                # or [{name, port}]
//   health: /healthz             # HTTP check on the first port (default for a build: TCP)
//   replicas: 1
//   compute: small               # small | medium | large | xlarge, or {size, cpu, memory, gpus}
//   disk: 10G                    # the workspace's disk size: reserved by the scheduler, enforced for the synced workspace
//   storage: [data]              # shared storage names → volumes at /storage/<name>
//   env: { MODE: dev }           # values; envFile's variables win over these
//   envFile: .env
//   build: { repo: team/api, runner: host, maxSource: 256M }
//   retries: 3                   # jobs
//   lab: { ip: 127.0.0.1 }       # labs
//   schedule: ...                # cron apps (passed through; the spec validates it)
import { parse as parseYaml, parseDocument, stringify } from 'yaml';
import { parseCpu, parseMemoryMB } from '../apps/spec.js';

export const CONFIG_DIR = '.omni';
export const CONFIG_PATH = '.omni/config.yaml';
export const MAX_CONFIG_BYTES = 64 * 1024;

/** Named compute sizes (the seed's compute_size codes). */
export const COMPUTE_PRESETS: Record<string, { cpu: number; memory: string }> = {
  small: { cpu: 0.5, memory: '512M' },
  medium: { cpu: 1, memory: '2G' },
  large: { cpu: 2, memory: '4G' },
  xlarge: { cpu: 4, memory: '16G' },
};

export type ProjectType = 'service' | 'job' | 'lab' | 'cron';
export const PROJECT_TYPES: ProjectType[] = ['service', 'job', 'lab', 'cron'];

export interface ProjectConfig {
  name: string;
  type: ProjectType;
  command?: string[];
  image?: string;
  ports: { name: string; port: number }[];
  health?: string;
  replicas?: number;
  compute?: { size?: string; cpu: number; memoryMB: number; gpus: number };
  diskMB?: number;
  storage: string[];
  env: Record<string, string>;
  envFile?: string;
  build: { repo?: string; runner?: 'host' | 'docker'; maxSource?: string };
  retries?: number;
  lab?: { ip: string };
  driver?: string;
  /** Passed to the spec untouched (cron apps: schedule, cron, …). */
  passThrough: Record<string, unknown>;
}

export interface FieldError {
  field: string;
  message: string;
}
export type ConfigResult = { ok: true; config: ProjectConfig } | { ok: false; errors: FieldError[] };

const FIELDS = ['name', 'type', 'command', 'image', 'ports', 'health', 'replicas', 'compute', 'disk', 'storage', 'env', 'envFile', 'build', 'retries', 'lab', 'driver'];
/** Fields of cron apps and `service` + `schedule`: passed through to the spec, which validates them. */
export const PASS_THROUGH = ['schedule', 'cron', 'concurrency', 'startingDeadline', 'historyLimit', 'timeZone', 'timezone'];
const NAME = /^[a-z][a-z0-9-]{0,39}$/;
const STORAGE = /^[a-z][a-z0-9-]{0,14}$/;
const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
const PORT_NAME = /^[a-z][a-z0-9-]{0,14}$/;

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);

function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) for (let j = 1; j <= b.length; j++) d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length][b.length];
}

function didYouMean(k: string, allowed: string[]): string {
  const near = k.length > 40 ? undefined : allowed.find((a) => distance(k.toLowerCase(), a.toLowerCase()) <= 2);
  return near ? ` (did you mean '${near}'?)` : '';
}

/** Parses the YAML text of .omni/config.yaml and validates it. */
export function parseProjectConfig(text: string, dirName = 'app'): ConfigResult {
  if (text.length > MAX_CONFIG_BYTES) return { ok: false, errors: [{ field: '(file)', message: `larger than ${MAX_CONFIG_BYTES} bytes` }] };
  let doc: unknown;
  try {
    doc = parseYaml(text, { maxAliasCount: 50 });
  } catch (err) {
    return { ok: false, errors: [{ field: '(file)', message: `not valid YAML: ${(err as Error).message.split('\n')[0]}` }] };
  }
  return validateProjectConfig(doc ?? {}, dirName);
}

/** Validates a parsed config (every problem, each naming its field). */
export function validateProjectConfig(input: unknown, dirName = 'app'): ConfigResult {
  const errors: FieldError[] = [];
  const err = (field: string, message: string) => void errors.push({ field, message });
  if (!isObj(input)) return { ok: false, errors: [{ field: '(file)', message: 'the top level must be a mapping of config fields' }] };
  const passThrough: Obj = {};
  for (const k of Object.keys(input)) {
    if (PASS_THROUGH.includes(k)) passThrough[k] = input[k];
    else if (!FIELDS.includes(k)) err(k, `unknown field '${k}'${didYouMean(k, [...FIELDS, ...PASS_THROUGH])}`);
  }
  const name = input.name === undefined ? dirName : input.name;
  if (typeof name !== 'string' || !NAME.test(name)) err('name', 'lowercase letters, digits and -, starting with a letter, at most 40 characters');
  const type = input.type === undefined ? 'service' : input.type;
  if (typeof type !== 'string' || !PROJECT_TYPES.includes(type as ProjectType)) err('type', `must be ${PROJECT_TYPES.slice(0, 3).join(', ')} (or cron)`);
  const cfg: ProjectConfig = { name: String(name), type: type as ProjectType, ports: [], storage: [], env: {}, build: {}, passThrough };

  if (input.command !== undefined) {
    if (typeof input.command === 'string' && input.command.trim() !== '') cfg.command = ['sh', '-c', input.command];
    else if (Array.isArray(input.command) && input.command.length > 0 && input.command.length <= 256 && input.command.every((a) => typeof a === 'string' || typeof a === 'number')) cfg.command = input.command.map(String);
    else err('command', 'a list of arguments, or a string run by sh -c');
  }
  if (input.image !== undefined) {
    if (typeof input.image === 'string' && input.image !== '' && input.image.length <= 512) cfg.image = input.image;
    else err('image', 'an image reference (e.g. team/api:1 or team/api@sha256:…)');
  }
  if (cfg.command && cfg.image) err('image', 'give command or image, not both (neither: the directory is built by Forge)');

  if (input.ports !== undefined) {
    if (!Array.isArray(input.ports) || input.ports.length > 16) err('ports', 'a list of at most 16 ports');
    else input.ports.forEach((p, i) => {
      const o = typeof p === 'number' ? { name: i === 0 ? 'http' : `p${i}`, port: p } : isObj(p) ? p : undefined;
      if (!o) return err(`ports[${i}]`, 'a port number or {name, port}');
      for (const k of Object.keys(o)) if (k !== 'name' && k !== 'port') err(`ports[${i}].${k}`, `unknown field '${k}'`);
      const pn = o.name ?? (i === 0 ? 'http' : `p${i}`);
      if (typeof pn !== 'string' || !PORT_NAME.test(pn)) return err(`ports[${i}].name`, 'lowercase letters, digits and -, at most 15');
      if (typeof o.port !== 'number' || !Number.isInteger(o.port) || o.port < 1 || o.port > 65535) return err(`ports[${i}].port`, 'a port number from 1 to 65535');
      if (cfg.ports.some((q) => q.name === pn)) return err(`ports[${i}].name`, `duplicate port name ${pn}`);
      cfg.ports.push({ name: pn, port: o.port });
    });
  }
  if (input.health !== undefined) {
    if (typeof input.health === 'string' && input.health.startsWith('/') && input.health.length <= 1024) cfg.health = input.health;
    else err('health', 'an HTTP path starting with / (checked on the first port)');
  }
  if (input.replicas !== undefined) {
    if (typeof input.replicas === 'number' && Number.isInteger(input.replicas) && input.replicas >= 0 && input.replicas <= 1000) cfg.replicas = input.replicas;
    else err('replicas', 'a whole number from 0 to 1000');
  }
  readCompute(input.compute, cfg, err);
  if (input.disk !== undefined) {
    const mb = parseMemoryMB(typeof input.disk === 'number' ? `${input.disk}G` : input.disk);
    if (mb === undefined || mb < 1) err('disk', 'a size like 10G or 500M (a bare number is GB)');
    else cfg.diskMB = mb;
  }
  if (input.storage !== undefined) {
    const list = typeof input.storage === 'string' ? input.storage.split(',').map((s) => s.trim()).filter(Boolean) : input.storage;
    if (!Array.isArray(list) || list.length > 15) err('storage', 'a list of at most 15 shared storage names');
    else list.forEach((s, i) => {
      if (typeof s !== 'string' || !STORAGE.test(s) || s === 'workspace') return err(`storage[${i}]`, typeof s === 'string' && s === 'workspace' ? "'workspace' is the lab's own volume: pick another name" : 'lowercase letters, digits and -, at most 15 characters');
      if (cfg.storage.includes(s)) return err(`storage[${i}]`, `duplicate storage name ${s}`);
      cfg.storage.push(s);
    });
  }
  if (input.env !== undefined) {
    if (!isObj(input.env) || Object.keys(input.env).length > 256) err('env', 'a mapping of at most 256 variables');
    else for (const [k, v] of Object.entries(input.env)) {
      if (!ENV_KEY.test(k)) err(`env.${k}`, 'variable names are letters, digits and _, not starting with a digit');
      else if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') err(`env.${k}`, 'must be a string');
      else cfg.env[k] = String(v);
    }
  }
  if (input.envFile !== undefined) {
    if (typeof input.envFile === 'string' && input.envFile !== '' && !input.envFile.startsWith('/') && !input.envFile.split('/').includes('..')) cfg.envFile = input.envFile;
    else err('envFile', 'a path relative to the project directory, inside it (e.g. .env)');
  }
  if (input.build !== undefined) {
    if (!isObj(input.build)) err('build', 'a mapping: {repo, runner, maxSource}');
    else {
      for (const k of Object.keys(input.build)) if (!['repo', 'runner', 'maxSource'].includes(k)) err(`build.${k}`, `unknown field '${k}' (build has repo, runner, maxSource)`);
      const b = input.build;
      if (b.repo !== undefined) typeof b.repo === 'string' && /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$/.test(b.repo) ? (cfg.build.repo = b.repo) : err('build.repo', 'a repository name (lower case letters, digits, . _ - and / between parts)');
      if (b.runner !== undefined) b.runner === 'host' || b.runner === 'docker' ? (cfg.build.runner = b.runner) : err('build.runner', 'host or docker');
      if (b.maxSource !== undefined) typeof b.maxSource === 'string' && /^\d+[KMG]?$/i.test(b.maxSource) ? (cfg.build.maxSource = b.maxSource) : err('build.maxSource', 'a size like 64M or 1G');
    }
    if (cfg.command || cfg.image) err('build', 'only for a directory built by Forge (no command or image)');
  }
  if (input.retries !== undefined) {
    if (type !== 'job' && type !== 'cron') err('retries', 'only for type job (or cron)');
    else if (typeof input.retries === 'number' && Number.isInteger(input.retries) && input.retries >= 0 && input.retries <= 100) cfg.retries = input.retries;
    else err('retries', 'a whole number from 0 to 100');
  }
  if (input.lab !== undefined) {
    if (type !== 'lab') err('lab', 'only for type lab');
    else if (!isObj(input.lab) || Object.keys(input.lab).some((k) => k !== 'ip') || (input.lab.ip !== undefined && input.lab.ip !== '127.0.0.1' && input.lab.ip !== '0.0.0.0')) err('lab', "{ip: 127.0.0.1 | 0.0.0.0} (the token is generated by the cluster, not kept here)");
    else cfg.lab = { ip: (input.lab.ip as string | undefined) ?? '127.0.0.1' };
  }
  if (input.driver !== undefined) {
    if (input.driver === 'process' || input.driver === 'docker') cfg.driver = input.driver;
    else err('driver', 'process or docker');
  }
  if (type === 'job' || type === 'cron') {
    if (cfg.ports.length > 0) err('ports', 'a job has no ports: it runs to completion');
    if (cfg.health !== undefined) err('health', 'a job has no health check: its exit code says whether it succeeded');
  }
  if (type === 'lab' && cfg.replicas !== undefined && cfg.replicas > 1) err('replicas', 'a lab runs one notebook server');
  if (type === 'lab' && !cfg.command && !cfg.image && cfg.driver === 'docker') err('driver', 'a lab without an image runs Debian\'s jupyter-notebook through the process driver: give image: for docker');
  if (cfg.health !== undefined && cfg.ports.length === 0 && (cfg.command || cfg.image)) err('health', 'needs a port in ports');
  if (type !== 'cron' && Object.keys(passThrough).length > 0 && type !== 'service' && type !== 'job') err(Object.keys(passThrough)[0], `not for type ${type}`);
  return errors.length > 0 ? { ok: false, errors } : { ok: true, config: cfg };
}

function readCompute(v: unknown, cfg: ProjectConfig, err: (f: string, m: string) => void): void {
  if (v === undefined) return;
  const o: Obj | undefined = typeof v === 'string' ? { size: v } : isObj(v) ? v : undefined;
  if (!o) return err('compute', `a size (${Object.keys(COMPUTE_PRESETS).join(', ')}) or {size, cpu, memory, gpus}`);
  for (const k of Object.keys(o)) if (!['size', 'cpu', 'memory', 'gpus'].includes(k)) err(`compute.${k}`, `unknown field '${k}' (compute has size, cpu, memory, gpus)`);
  let cpu: number | undefined;
  let memoryMB: number | undefined;
  let size: string | undefined;
  if (o.size !== undefined) {
    const p = typeof o.size === 'string' ? COMPUTE_PRESETS[o.size] : undefined;
    if (!p || !Object.hasOwn(COMPUTE_PRESETS, o.size as string)) err('compute.size', `one of ${Object.keys(COMPUTE_PRESETS).map((k) => `${k} (${COMPUTE_PRESETS[k].cpu} CPU, ${COMPUTE_PRESETS[k].memory})`).join(', ')}`);
    else {
      size = o.size as string;
      cpu = p.cpu;
      memoryMB = parseMemoryMB(p.memory);
    }
  }
  if (o.cpu !== undefined) {
    const c = parseCpu(o.cpu);
    if (c === undefined || !(c > 0) || c > 1024) err('compute.cpu', 'a number of cores above 0 (e.g. 2 or "500m")');
    else cpu = c;
  }
  if (o.memory !== undefined) {
    const m = parseMemoryMB(o.memory);
    if (m === undefined || m < 1) err('compute.memory', 'a size like 512M or 4G');
    else memoryMB = m;
  }
  let gpus = 0;
  if (o.gpus !== undefined) {
    if (typeof o.gpus === 'number' && Number.isInteger(o.gpus) && o.gpus >= 0 && o.gpus <= 64) gpus = o.gpus;
    else err('compute.gpus', 'a whole number from 0 to 64');
  }
  if (cpu === undefined && memoryMB === undefined && gpus === 0) return;
  cfg.compute = { ...(size ? { size } : {}), cpu: cpu ?? 0.1, memoryMB: memoryMB ?? 64, gpus };
}

/** Path where a storage name is mounted (docker) — the process driver gives OMNI_VOLUME_<NAME>. */
export const storagePath = (name: string) => `/storage/${name}`;

/** Whether the app is built from the directory by Forge (no command and no image, not a lab). */
export function needsBuild(c: ProjectConfig): boolean {
  return !c.command && !c.image && c.type !== 'lab';
}

/**
 * The app spec a config gives (without what a build adds: image, its ports and health check).
 * `fileEnv` are the env file's variables: they win over `env` values (the seed's rule).
 */
export function specFromConfig(c: ProjectConfig, fileEnv: Record<string, string> = {}): Record<string, unknown> {
  const spec: Record<string, unknown> = { name: c.name, ...c.passThrough };
  if (c.type !== 'service') spec.type = c.type;
  if (c.command) spec.command = c.command;
  if (c.image) spec.image = c.image;
  const env = { ...c.env, ...fileEnv };
  if (Object.keys(env).length > 0) spec.env = env;
  if (c.ports.length > 0) spec.ports = c.ports;
  if (c.health !== undefined && c.ports.length > 0) spec.healthCheck = { type: 'http', port: c.ports[0].name, path: c.health };
  if (c.replicas !== undefined) spec.replicas = c.replicas;
  if (c.compute || c.diskMB !== undefined) spec.resources = { ...(c.compute ? { cpu: c.compute.cpu, memoryMB: c.compute.memoryMB, gpus: c.compute.gpus } : {}), ...(c.diskMB !== undefined ? { diskMB: c.diskMB } : {}) };
  if (c.storage.length > 0) spec.volumes = c.storage.map((name) => ({ name, path: storagePath(name) }));
  if (c.retries !== undefined) spec.retries = c.retries;
  if (c.lab) spec.lab = { ip: c.lab.ip };
  if (c.driver) spec.driver = c.driver;
  return spec;
}

/** The starting config `omni config init` writes (detection gives `detected`). */
export function initialConfig(name: string, detected: { type?: ProjectType; command?: string[]; ports?: number[] } = {}): string {
  const o: Obj = { name, type: detected.type ?? 'service' };
  if (detected.command) o.command = detected.command;
  if (detected.ports && detected.ports.length > 0) o.ports = detected.ports;
  o.compute = 'small';
  o.disk = '1G';
  o.storage = [];
  o.env = {};
  const head = '# Omni project config: see README.md, "Project directories". Edit with omni config set KEY=VALUE.\n';
  return head + stringify(o);
}

/** Top-level keys `omni config set` accepts (dotted paths below them). */
export const SETTABLE = [...FIELDS, ...PASS_THROUGH];

/**
 * `omni config set KEY=VALUE…` on the file's text: each value is read as YAML (3 → number,
 * [a, b] → list, plain words → strings); KEY is a dotted path (env.MODE, compute.cpu). Comments
 * and the order of the other keys are kept. Returns the new text, or the errors (the new
 * config is validated as a whole).
 */
export function setConfigValues(text: string, assignments: string[], dirName = 'app'): { ok: true; text: string; config: ProjectConfig } | { ok: false; errors: FieldError[] } {
  const doc = parseDocument(text || '{}\n');
  if (doc.errors.length > 0) return { ok: false, errors: [{ field: '(file)', message: `not valid YAML: ${doc.errors[0].message.split('\n')[0]}` }] };
  const errors: FieldError[] = [];
  for (const a of assignments) {
    const eq = a.indexOf('=');
    const key = eq > 0 ? a.slice(0, eq).trim() : '';
    if (!/^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*$/.test(key)) {
      errors.push({ field: a.slice(0, 40), message: 'expected KEY=VALUE (KEY may be dotted: env.MODE=dev)' });
      continue;
    }
    const path = key.split('.');
    if (!SETTABLE.includes(path[0])) {
      errors.push({ field: key, message: `unknown field '${path[0]}'${didYouMean(path[0], SETTABLE)}` });
      continue;
    }
    const raw = a.slice(eq + 1);
    let value: unknown;
    try {
      value = raw === '' ? null : parseYaml(raw, { maxAliasCount: 0 });
    } catch {
      value = raw;
    }
    // env values stay strings as typed (MODE=010 is "010", not 10)
    if (path[0] === 'env' && path.length === 2 && raw !== '') value = raw;
    // compute: small then compute.cpu=2: the shorthand becomes {size: small}
    for (let i = 1; i < path.length; i++) {
      const at = doc.getIn(path.slice(0, i));
      if (at !== undefined && (at === null || typeof at !== 'object')) doc.setIn(path.slice(0, i), doc.createNode(path[0] === 'compute' && i === 1 && typeof at === 'string' ? { size: at } : {}));
    }
    try {
      if (value === null) doc.deleteIn(path);
      else doc.setIn(path, doc.createNode(value));
    } catch (err) {
      errors.push({ field: key, message: (err as Error).message });
    }
  }
  if (errors.length > 0) return { ok: false, errors };
  const out = doc.toString();
  const r = parseProjectConfig(out, dirName);
  return r.ok ? { ok: true, text: out, config: r.config } : r;
}

/** The lines to add to .gitignore so .omni/ stays out of git, or [] when it already is. */
export function gitignoreAdditions(gitignore: string, keepBuildYaml: boolean): string[] {
  const lines = gitignore.split('\n').map((l) => l.trim());
  if (lines.some((l) => l === '.omni/' || l === '.omni' || l === '/.omni/' || l === '/.omni')) return [];
  // .omni/build.yaml (Forge's build settings) is source: ignore the rest of .omni/ but keep it
  if (keepBuildYaml) return lines.includes('.omni/*') ? [] : ['.omni/*', '!.omni/build.yaml'];
  return ['.omni/'];
}
