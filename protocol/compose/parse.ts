// A Compose file → a stack: one Omni app spec per service (app PROJECT-SERVICE), the
// dependency graph with its conditions, and the build blocks Forge must build. Pure: files the
// stack names (env_file, secrets, configs) are read through `readFile`, which the CLI gives.
// Every key is supported, refused (an error naming it) or warned about (keys.ts): nothing is
// silently dropped.
import { parseDocument } from 'yaml';
import { interpolateTree, parseEnvText, InterpolationError } from './interpolate.js';
import { BUILD_KEYS, DEPLOY_KEYS, HEALTHCHECK_KEYS, SERVICE_KEYS, TOP_KEYS, type KeyRule } from './keys.js';
import { parseConstraint, parseCpu, parseMemoryMB, validateAppSpec, MAX_TASK_FILE_BYTES } from '../apps/spec.js';

export type DependCondition = 'service_started' | 'service_healthy' | 'service_completed_successfully';
export interface Dependency { service: string; condition: DependCondition; required: boolean }
export interface BuildBlock { context: string; dockerfile: string; args: Record<string, string>; target?: string }

export interface StackService {
  service: string;
  /** The Omni app: PROJECT-SERVICE. */
  app: string;
  /** Omni app spec input (validated by validateAppSpec once its image is known). */
  spec: Record<string, unknown>;
  /** The service's image as written (for a build: where the built image goes, if given). */
  image?: string;
  build?: BuildBlock;
  dependsOn: Dependency[];
  /** false: `x-omni-critical: false` (or label omni.critical=false): down makes the stack degraded, not unhealthy. */
  critical: boolean;
}

export interface Stack {
  project: string;
  /** In dependency order: every service after those it depends on. */
  services: StackService[];
  /** Services left out because none of their profiles is active. */
  inactive: string[];
  volumes: string[];
  networks: string[];
  warnings: string[];
  /** The interpolated document (for omni compose config). */
  doc: Record<string, unknown>;
}

export interface ComposeInput {
  /** The file's text (YAML). */
  text: string;
  /** The file's name in messages. */
  file: string;
  /** The project name (-p, else `name:`, else the directory's name). */
  project?: string;
  /** Name of the directory holding the file (the default project name). */
  dirName: string;
  /** Variables for interpolation (the CLI's environment over .env). */
  env: Readonly<Record<string, string>>;
  /** Active profiles (--profile, COMPOSE_PROFILES). */
  profiles?: string[];
  /** A file relative to the compose file's directory: its text, or undefined when it does not exist. */
  readFile(path: string): string | undefined;
}

export class ComposeError extends Error {
  constructor(readonly errors: string[], readonly warnings: string[] = []) {
    super(errors.length === 1 ? errors[0] : `${errors.length} problems:\n${errors.map((e) => `  - ${e}`).join('\n')}`);
  }
}

export const MAX_COMPOSE_BYTES = 1024 * 1024;
export const MAX_SERVICES = 200;
const SERVICE_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);

class Report {
  errors: string[] = [];
  warnings: string[] = [];
  err(where: string, msg: string): undefined {
    this.errors.push(`${where}: ${msg}`);
    return undefined;
  }
  warn(where: string, msg: string): void {
    this.warnings.push(`${where}: ${msg}`);
  }
  /** Applies a key table to an object: unknown keys and refused keys are errors, warned keys warnings. */
  keys(o: Obj, where: string, table: Record<string, KeyRule>): void {
    for (const k of Object.keys(o)) {
      if (k.startsWith('x-')) continue;
      const rule = Object.hasOwn(table, k) ? table[k] : undefined;
      const at = `${where}.${k}`;
      if (!rule) this.err(at, `unknown key '${k}'${near(k, Object.keys(table))}`);
      else if (rule.kind === 'refused') this.err(at, `not supported: ${rule.why}`);
      else if (rule.kind === 'warn') this.warn(at, `ignored: ${rule.why}`);
    }
  }
}

/** Edit distance (for "did you mean"), small strings only. */
function distance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const t = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = t;
    }
  }
  return d[b.length];
}

function near(k: string, known: string[]): string {
  const n = known.find((a) => a.replace(/_/g, '') === k.replace(/[_-]/g, '').toLowerCase() || (k.length > 3 && distance(k, a) <= 2)) ?? known.find((a) => k.length > 2 && (a.startsWith(k) || k.startsWith(a)));
  return n ? ` (did you mean '${n}'?)` : '';
}

/** "1m30s", "10s", "500ms", "1h", "1.5s", a bare number (seconds) → milliseconds. */
export function parseDuration(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) && v >= 0 ? Math.round(v * 1000) : undefined;
  if (typeof v !== 'string') return undefined;
  const s = v.trim();
  if (s === '') return undefined;
  const re = /(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)/gy;
  let total = 0;
  let at = 0;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    total += Number(m[1]) * { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001, 'µs': 0.001, ns: 0.000001 }[m[2]]!;
    at = re.lastIndex;
  }
  if (at !== s.length || at === 0) return undefined;
  return Math.round(total);
}

/** Shell-like split of a command string (quotes and backslashes; no expansion), as compose does. */
export function splitCommand(s: string): string[] | undefined {
  const out: string[] = [];
  let cur = '';
  let has = false;
  let q: '"' | "'" | '' = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (q === "'") {
      if (c === "'") q = '';
      else cur += c;
    } else if (q === '"') {
      if (c === '"') q = '';
      else if (c === '\\' && i + 1 < s.length && '"\\$`'.includes(s[i + 1])) cur += s[++i];
      else cur += c;
    } else if (c === "'" || c === '"') {
      q = c;
      has = true;
    } else if (c === '\\' && i + 1 < s.length) {
      cur += s[++i];
      has = true;
    } else if (/\s/.test(c)) {
      if (has || cur) out.push(cur);
      cur = '';
      has = false;
    } else cur += c;
  }
  if (q) return undefined;
  if (has || cur) out.push(cur);
  return out;
}

/** A service name that can be a host name on the stack's network (protocol/apps/spec.ts NET_NAME). */
const SERVICE_ALIAS = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Most networks a service may be on (protocol/apps/spec.ts MAX_NETWORKS_PER_APP). */
const MAX_SERVICE_NETWORKS = 8;

/**
 * A service's `networks:` (a list, or a mapping whose values may give `aliases`) as Omni
 * networks; absent: the stack's default network. Fixed addresses and the like are warned about.
 */
function serviceNetworks(r: Report, v: unknown, where: string, defined: ReadonlyMap<string, string>): { name: string; aliases: string[] }[] {
  if (v === undefined || v === null || (Array.isArray(v) && v.length === 0)) return [{ name: defined.get('default')!, aliases: [] }];
  const entries: [string, unknown][] = Array.isArray(v) ? v.map((n) => [n as string, undefined]) : isObj(v) ? Object.entries(v) : (r.err(where, 'must be a list or a mapping'), []);
  const out: { name: string; aliases: string[] }[] = [];
  for (const [key, def] of entries) {
    const net = typeof key === 'string' ? defined.get(key) : undefined;
    if (net === undefined) {
      r.err(where, `${String(key)} is not defined under top-level networks:`);
      continue;
    }
    const aliases: string[] = [];
    if (isObj(def)) {
      for (const k of Object.keys(def)) {
        if (k.startsWith('x-')) continue;
        if (k === 'aliases') {
          if (!Array.isArray(def.aliases)) r.err(`${where}.${key}.aliases`, 'must be a list of host names');
          else for (const a of def.aliases) {
            if (typeof a === 'string' && SERVICE_ALIAS.test(a) && a !== 'localhost') {
              if (!aliases.includes(a)) aliases.push(a);
            } else r.err(`${where}.${key}.aliases`, `${String(a)} is not a host name (lowercase letters, digits and -, at most 63)`);
          }
        } else if (['ipv4_address', 'ipv6_address', 'link_local_ips', 'mac_address', 'priority', 'gw_priority', 'driver_opts', 'interface_name'].includes(k)) r.warn(`${where}.${key}.${k}`, 'ignored: services are reached by name, through the mesh, not by fixed addresses');
        else r.err(`${where}.${key}.${k}`, `unknown key '${k}'`);
      }
    } else if (def !== undefined && def !== null) r.err(`${where}.${key}`, 'must be a mapping (aliases) or empty');
    const same = out.find((o) => o.name === net);
    if (same) same.aliases.push(...aliases.filter((a) => !same.aliases.includes(a)));
    else out.push({ name: net, aliases });
  }
  if (out.length > MAX_SERVICE_NETWORKS) {
    r.err(where, `a service may be on at most ${MAX_SERVICE_NETWORKS} networks`);
    return out.slice(0, MAX_SERVICE_NETWORKS);
  }
  return out;
}

/** The stack's network: the project name as a host-name label. */
export function networkName(project: string): string {
  return project.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+/, '').slice(0, 63).replace(/-+$/, '') || 'stack';
}

/**
 * The Omni network of a compose network: `default` is the stack's own (networkName(project)),
 * another is `<project>-<key>` (compose's `<project>_<key>`), or its `name:` as given (external
 * ones too: that is how a stack joins another's network, e.g. `external: true, name: shop`).
 */
export function composeNetworkName(project: string, key: string, def: { name?: string; external?: boolean } = {}): string {
  // Docker names a project's default network `<project>_default`; Omni's is `<project>`
  if (def.external) return networkName((def.name ?? key).replace(/_default$/, ''));
  if (def.name !== undefined) return networkName(def.name);
  return key === 'default' ? networkName(project) : networkName(`${project}-${key}`);
}

/** A project name as compose normalizes it: lower case, letters, digits, - and _. */
export function normalizeProject(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9_-]+/g, '').replace(/^[^a-z0-9]+/, '');
}

/** The Omni app name of a service: PROJECT-SERVICE with _ and . as -, starting with a letter. */
export function appName(project: string, service: string): string {
  return `${project}-${service}`.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^[^a-z]+/, '').replace(/-+/g, '-');
}

/** A volume name for the app spec (lower case, letters, digits, -, at most 15): long names get a short hash. */
export function volumeName(name: string): string {
  const base = name.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^[^a-z]+/, '').replace(/-+$/, '') || 'v';
  if (base.length <= 15 && base === name) return base;
  let h = 0x811c9dc5;
  for (const ch of name) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return `${base.slice(0, 10).replace(/-+$/, '')}-${h.toString(16).padStart(8, '0').slice(0, 4)}`;
}

function strList(r: Report, v: unknown, where: string): string[] | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'string') return [v];
  if (Array.isArray(v) && v.every((x) => typeof x === 'string' || typeof x === 'number')) return v.map(String);
  return r.err(where, 'must be a string or a list of strings');
}

const SPEC_TO_COMPOSE: Record<string, string> = { shmSizeMB: 'shm_size', ulimits: 'ulimits', tmpfs: 'tmpfs', readOnly: 'read_only', capDrop: 'cap_drop' };

/** A size in bytes (a number) or with a unit (64m, 2gb) → whole MiB, rounded up. */
function sizeMB(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) && v > 0 ? Math.ceil(v / 1024 / 1024) : undefined;
  if (typeof v !== 'string') return undefined;
  const t = v.trim().toLowerCase().replace(/b$/, '');
  if (/^\d+$/.test(t)) return Math.ceil(Number(t) / 1024 / 1024);
  const mb = parseMemoryMB(t);
  return mb !== undefined && mb > 0 ? mb : undefined;
}

/** shm_size, ulimits, tmpfs, read_only, cap_drop → the spec's shmSizeMB, ulimits, tmpfs, readOnly, capDrop. */
function containerLimits(r: Report, s: Obj, where: string): Obj {
  const out: Obj = {};
  if (s.shm_size !== undefined) out.shmSizeMB = sizeMB(s.shm_size) ?? r.err(`${where}.shm_size`, 'must be a size (bytes, or 64m, 2g)');
  if (s.ulimits !== undefined) {
    if (!isObj(s.ulimits)) r.err(`${where}.ulimits`, 'must be a mapping (nofile: {soft: 20000, hard: 40000}, nproc: 65535)');
    else {
      const u: Record<string, { soft: unknown; hard: unknown }> = {};
      for (const [name, l] of Object.entries(s.ulimits)) u[name] = typeof l === 'number' ? { soft: l, hard: l } : isObj(l) ? { soft: l.soft, hard: l.hard } : { soft: undefined, hard: undefined };
      out.ulimits = u;
    }
  }
  if (s.tmpfs !== undefined) {
    const list = typeof s.tmpfs === 'string' ? [s.tmpfs] : Array.isArray(s.tmpfs) ? s.tmpfs : undefined;
    if (!list || list.some((x) => typeof x !== 'string')) r.err(`${where}.tmpfs`, 'must be a path or a list of paths (/run, /tmp:size=64m)');
    else
      out.tmpfs = (list as string[]).map((x, i) => {
        const [path, opts = ''] = x.split(/:(.*)/s);
        let size: number | undefined;
        for (const o of opts.split(',').filter(Boolean)) {
          const [k, val] = o.split('=');
          if (k === 'size') size = sizeMB(val) ?? r.err(`${where}.tmpfs[${i}]`, `size=${val}: not a size`);
          else r.warn(`${where}.tmpfs[${i}]`, `option ${k} ignored (size is taken)`);
        }
        return { path, ...(size !== undefined ? { sizeMB: size } : {}) };
      });
  }
  if (s.read_only !== undefined) out.readOnly = typeof s.read_only === 'boolean' ? s.read_only : r.err(`${where}.read_only`, 'must be true or false');
  if (s.cap_drop !== undefined) out.capDrop = Array.isArray(s.cap_drop) && s.cap_drop.every((c) => typeof c === 'string') ? s.cap_drop.map((c: string) => c.toUpperCase()) : r.err(`${where}.cap_drop`, 'must be a list of capability names');
  return out;
}

function argvOf(r: Report, v: unknown, where: string): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return splitCommand(v) ?? r.err(where, 'unbalanced quotes');
  if (Array.isArray(v) && v.every((x) => typeof x === 'string' || typeof x === 'number')) return v.map(String);
  return r.err(where, 'must be a string or a list of strings');
}

/** environment: a mapping (null values: taken from the CLI's environment) or a list of KEY=VALUE / KEY. */
function envOf(r: Report, v: unknown, where: string, env: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  if (v === undefined) return out;
  const fromEnv = (k: string) => {
    if (env[k] !== undefined) out[k] = env[k];
    else r.warn(`${where}.${k}`, 'has no value and is not set in the environment: left out');
  };
  if (Array.isArray(v)) {
    for (const x of v) {
      if (typeof x !== 'string') r.err(where, 'list entries must be KEY=VALUE strings');
      else if (x.includes('=')) out[x.slice(0, x.indexOf('='))] = x.slice(x.indexOf('=') + 1);
      else fromEnv(x);
    }
  } else if (isObj(v)) {
    for (const [k, x] of Object.entries(v)) {
      if (x === null) fromEnv(k);
      else if (typeof x === 'string' || typeof x === 'number' || typeof x === 'boolean') out[k] = String(x);
      else r.err(`${where}.${k}`, 'must be a string, number or boolean');
    }
  } else r.err(where, 'must be a mapping or a list of KEY=VALUE');
  return out;
}

interface FileEntry { source: string; content: string }

/** Top-level secrets/configs: {file}, {environment} or (configs) {content}; external is refused. */
function readFileObjects(r: Report, v: unknown, kind: 'secrets' | 'configs', input: ComposeInput): Map<string, FileEntry> {
  const out = new Map<string, FileEntry>();
  if (v === undefined) return out;
  if (!isObj(v)) return r.err(kind, 'must be a mapping') ?? out;
  for (const [name, def] of Object.entries(v)) {
    const at = `${kind}.${name}`;
    if (!isObj(def)) {
      r.err(at, 'must be {file: PATH}');
      continue;
    }
    for (const k of Object.keys(def)) {
      if (k === 'file' || k === 'environment' || (kind === 'configs' && k === 'content') || k.startsWith('x-')) continue;
      if (k === 'external') r.err(`${at}.external`, `not supported: ${kind} come from files next to the compose file`);
      else if (k === 'name' || k === 'labels' || k === 'template_driver' || k === 'driver' || k === 'driver_opts') r.warn(`${at}.${k}`, 'ignored');
      else r.err(`${at}.${k}`, `unknown key '${k}'`);
    }
    let content: string | undefined;
    if (typeof def.file === 'string') {
      content = input.readFile(def.file);
      if (content === undefined) r.err(`${at}.file`, `${def.file} not found (relative to ${input.file})`);
    } else if (typeof def.environment === 'string') {
      content = input.env[def.environment];
      if (content === undefined) r.err(`${at}.environment`, `variable ${def.environment} is not set`);
    } else if (typeof def.content === 'string') content = def.content;
    else if (def.external === undefined) r.err(at, kind === 'configs' ? 'needs file, environment or content' : 'needs file or environment');
    if (content !== undefined && Buffer.byteLength(content) > MAX_TASK_FILE_BYTES) r.err(at, `larger than ${MAX_TASK_FILE_BYTES} bytes`);
    if (content !== undefined) out.set(name, { source: name, content });
  }
  return out;
}


/** Parses, interpolates, checks and translates a compose file. Throws ComposeError listing every problem. */
export function parseCompose(input: ComposeInput): Stack {
  const r = new Report();
  if (input.text.length > MAX_COMPOSE_BYTES) throw new ComposeError([`${input.file}: larger than ${MAX_COMPOSE_BYTES} bytes`]);
  const ydoc = parseDocument(input.text, { uniqueKeys: true, merge: true });
  if (ydoc.errors.length > 0) throw new ComposeError(ydoc.errors.map((e) => `${input.file}: ${e.message.split('\n')[0]}`));
  const raw = ydoc.toJS({ maxAliasCount: 100 }) as unknown;
  if (!isObj(raw)) throw new ComposeError([`${input.file}: the top level must be a mapping with services:`]);
  const missing = new Set<string>();
  let doc: Obj;
  try {
    doc = interpolateTree(raw, input.env, (name) => missing.add(name)) as Obj;
  } catch (err) {
    if (err instanceof InterpolationError) throw new ComposeError([err.message]);
    throw err;
  }
  for (const name of missing) r.warnings.push(`variable ${name} is not set: an empty string is used`);
  r.keys(doc, input.file, TOP_KEYS);
  const projectRaw = input.project ?? (typeof doc.name === 'string' && doc.name ? doc.name : input.dirName);
  const project = normalizeProject(projectRaw);
  if (!project) r.err('project', `'${projectRaw}' gives an empty project name: use -p NAME`);
  if (!isObj(doc.services) || Object.keys(doc.services).length === 0) throw new ComposeError([...r.errors, `${input.file}: services: must be a mapping of at least one service`], r.warnings);
  const services = doc.services;
  if (Object.keys(services).length > MAX_SERVICES) throw new ComposeError([`${input.file}: more than ${MAX_SERVICES} services`]);

  // top-level volumes and networks
  const volumes = new Set<string>();
  if (doc.volumes !== undefined && doc.volumes !== null) {
    if (!isObj(doc.volumes)) r.err('volumes', 'must be a mapping of volume names');
    else for (const [name, def] of Object.entries(doc.volumes)) {
      volumes.add(name);
      if (def === null || def === undefined) continue;
      if (!isObj(def)) {
        r.err(`volumes.${name}`, 'must be a mapping or empty');
        continue;
      }
      for (const k of Object.keys(def)) {
        if (k.startsWith('x-')) continue;
        if (k === 'driver' && (def.driver === 'local' || def.driver === undefined)) continue;
        if (['driver', 'driver_opts', 'labels', 'name', 'external'].includes(k)) r.warn(`volumes.${name}.${k}`, 'ignored: an Omni volume lives on the node of the task that uses it');
        else r.err(`volumes.${name}.${k}`, `unknown key '${k}'`);
      }
    }
  }
  // compose network key → the Omni network it is (composeNetworkName)
  const networks = new Map<string, string>([['default', composeNetworkName(project, 'default')]]);
  if (doc.networks !== undefined && doc.networks !== null) {
    if (!isObj(doc.networks)) r.err('networks', 'must be a mapping of network names');
    else {
      for (const [name, def] of Object.entries(doc.networks)) {
        const d: { name?: string; external?: boolean } = {};
        if (isObj(def)) {
          for (const k of Object.keys(def)) {
            if (k.startsWith('x-')) continue;
            if (k === 'name') {
              if (typeof def.name === 'string' && def.name !== '') d.name = def.name;
              else r.err(`networks.${name}.name`, 'must be a non-empty string');
            } else if (k === 'external') {
              if (def.external === true || (isObj(def.external) && typeof def.external.name === 'string')) {
                d.external = true;
                if (isObj(def.external)) d.name = def.external.name as string;
              } else if (def.external !== false) r.err(`networks.${name}.external`, 'must be true or false');
            } else if (k === 'driver' && (def.driver === 'bridge' || def.driver === 'overlay')) continue;
            else if (['driver', 'driver_opts', 'attachable', 'enable_ipv6', 'ipam', 'internal', 'labels'].includes(k)) r.warn(`networks.${name}.${k}`, "ignored: a network scopes service names (Omni's mesh), not addresses or drivers");
            else r.err(`networks.${name}.${k}`, `unknown key '${k}'`);
          }
        }
        networks.set(name, composeNetworkName(project, name, d));
      }
    }
  }
  const secrets = readFileObjects(r, doc.secrets, 'secrets', input);
  const configs = readFileObjects(r, doc.configs, 'configs', input);

  // profiles: a service with profiles runs only when one of them is active
  const active = new Set(input.profiles ?? []);
  const enabled: string[] = [];
  const inactive: string[] = [];
  for (const [name, s] of Object.entries(services)) {
    if (!SERVICE_NAME.test(name)) r.err(`services.${name}`, 'a service name is letters, digits, _ . and -, starting with a letter or digit');
    const profs = isObj(s) ? strList(r, s.profiles, `services.${name}.profiles`) : undefined;
    if (profs && profs.length > 0 && !active.has('*') && !profs.some((p) => active.has(p))) inactive.push(name);
    else enabled.push(name);
  }

  const out: StackService[] = [];
  const apps = new Map<string, string>();
  const volumeUsers = new Map<string, string[]>();
  for (const name of enabled) {
    const s = services[name];
    const where = `services.${name}`;
    if (!isObj(s)) {
      r.err(where, 'must be a mapping');
      continue;
    }
    r.keys(s, where, SERVICE_KEYS);
    const app = appName(project, name);
    if (!/^[a-z][a-z0-9-]{0,39}$/.test(app)) r.err(where, `the app name ${app} (PROJECT-SERVICE) is longer than 40 characters or invalid: use a shorter -p PROJECT or service name`);
    const clash = apps.get(app);
    if (clash) r.err(where, `its app name ${app} is the same as service ${clash}'s`);
    apps.set(app, name);

    const driver = s['x-omni-driver'] === undefined ? 'docker' : s['x-omni-driver'];
    if (driver !== 'docker' && driver !== 'process') r.err(`${where}.x-omni-driver`, 'must be docker or process');
    const spec: Obj = { name: app };
    // image / build
    const image = s.image === undefined ? undefined : typeof s.image === 'string' && s.image ? s.image : r.err(`${where}.image`, 'must be a non-empty string');
    let build: BuildBlock | undefined;
    if (s.build !== undefined) build = buildOf(r, s.build, `${where}.build`, input.env);
    const command = argvOf(r, s.command, `${where}.command`);
    const entrypoint = argvOf(r, s.entrypoint, `${where}.entrypoint`);
    if (driver === 'process') {
      if (image !== undefined || build !== undefined) r.err(where, 'x-omni-driver: process runs entrypoint + command on the node, not an image or a build');
      const argv = [...(entrypoint ?? []), ...(command ?? [])];
      if (argv.length === 0) r.err(where, 'x-omni-driver: process needs a command (or entrypoint)');
      spec.command = argv;
      spec.driver = 'process';
    } else {
      if (image === undefined && build === undefined) r.err(where, 'needs image or build');
      if (image !== undefined && build === undefined) spec.image = image;
      if (command !== undefined) spec.args = command;
      // replaces the image's ENTRYPOINT (and, as in Compose, its CMD unless command is given); [] or '': none
      if (entrypoint !== undefined) spec.entrypoint = entrypoint;
      spec.driver = 'docker';
    }
    // container options: the docker driver's (a process service runs on the node as omnid's user)
    for (const [key, field] of [['user', 'user'], ['working_dir', 'workingDir'], ['hostname', 'hostname'], ['stop_signal', 'stopSignal']] as const) {
      const v = s[key];
      if (v === undefined) continue;
      if (driver === 'process') r.err(`${where}.${key}`, 'only for an image service (a container option): a process service runs on the node');
      else if (typeof v === 'string' || (key === 'user' && typeof v === 'number')) spec[field] = String(v);
      else r.err(`${where}.${key}`, 'must be a string');
    }
    // container options that limit what it may use (never what it may do beyond Docker's defaults)
    const limits = containerLimits(r, s, where);
    for (const [key, v] of Object.entries(limits)) {
      if (driver === 'process') r.err(`${where}.${SPEC_TO_COMPOSE[key]}`, 'only for an image service (a container option): a process service runs on the node');
      else spec[key] = v;
    }
    if (s.stop_grace_period !== undefined) {
      const ms = parseDuration(s.stop_grace_period);
      if (ms === undefined || ms > 600_000) r.err(`${where}.stop_grace_period`, 'must be a duration of at most 10m (1m30s, 10s…)');
      else spec.stopTimeoutMs = Math.round(ms);
    }

    // environment: env_file(s) first, environment over them, then secrets and configs
    const env: Record<string, string> = {};
    for (const ef of envFiles(r, s.env_file, `${where}.env_file`)) {
      const text = input.readFile(ef.path);
      if (text === undefined) {
        if (ef.required) r.err(`${where}.env_file`, `${ef.path} not found (relative to ${input.file})`);
        continue;
      }
      try {
        Object.assign(env, parseEnvText(text, ef.path));
      } catch (err) {
        r.err(`${where}.env_file`, (err as Error).message);
      }
    }
    Object.assign(env, envOf(r, s.environment, `${where}.environment`, input.env));
    // secrets and configs: read-only files (docker: /run/secrets/NAME, a config at its target or
    // /NAME; process: in the task's directory, its path in OMNI_SECRET_FILE_<NAME>) — not env vars.
    const files: Obj[] = [];
    for (const [kind, table] of [['secrets', secrets], ['configs', configs]] as const) {
      const refs = s[kind];
      if (refs === undefined) continue;
      if (!Array.isArray(refs)) {
        r.err(`${where}.${kind}`, 'must be a list');
        continue;
      }
      for (const ref of refs) {
        const src = typeof ref === 'string' ? ref : isObj(ref) && typeof ref.source === 'string' ? ref.source : r.err(`${where}.${kind}`, 'entries are NAME or {source, target, mode}');
        if (src === undefined) continue;
        const entry = table.get(src);
        if (!entry) {
          r.err(`${where}.${kind}`, `${src} is not defined under top-level ${kind}:`);
          continue;
        }
        if (isObj(ref)) {
          for (const k of Object.keys(ref)) {
            if (k === 'uid' || k === 'gid') r.warn(`${where}.${kind}.${src}.${k}`, 'ignored: the file belongs to the node user running omnid (readable by all unless mode says otherwise)');
            else if (!['source', 'target', 'mode'].includes(k)) r.err(`${where}.${kind}.${src}.${k}`, `unknown key '${k}'`);
          }
        }
        const t = isObj(ref) && ref.target !== undefined ? (typeof ref.target === 'string' && ref.target !== '' ? ref.target : r.err(`${where}.${kind}.${src}.target`, 'must be a path')) : undefined;
        const base = kind === 'secrets' ? '/run/secrets/' : '/';
        const target = t === undefined ? `${base}${src}` : t.startsWith('/') ? t : `${base}${t}`;
        const mode = isObj(ref) && ref.mode !== undefined ? fileMode(r, ref.mode, `${where}.${kind}.${src}.mode`) : 0o444;
        files.push({ kind: kind === 'secrets' ? 'secret' : 'config', name: src, target, data: Buffer.from(entry.content, 'utf8').toString('base64'), mode });
      }
    }
    if (files.length > 0) spec.files = files;
    if (Object.keys(env).length > 0) spec.env = env;

    // ports
    const ports = portsOf(r, s.ports, `${where}.ports`);
    if (ports.length > 0) spec.ports = ports;
    // Service networking: a service is on the networks it names (none named: the stack's default
    // network, named after the project), reachable there by its service name and its aliases
    // (README "Service networking"); a service on several sees the names of all of them.
    const attachments = serviceNetworks(r, s.networks, `${where}.networks`, networks);
    if (SERVICE_ALIAS.test(name)) {
      const nets = attachments.map((a) => ({ name: a.name, aliases: [name, ...a.aliases.filter((x) => x !== name)] }));
      if (nets.length === 1) spec.network = nets[0];
      else if (nets.length > 1) spec.networks = nets;
    } else r.warn(where, `'${name}' is not a host name (lowercase letters, digits and -, at most 63): the other services cannot reach it by name`);

    // volumes
    const bindFiles: Obj[] = [];
    const vols = volumesOf(r, s.volumes, `${where}.volumes`, volumes, driver === 'docker' ? { readFile: (p) => input.readFile(p), files: bindFiles } : undefined);
    for (const v of vols) volumeUsers.set(v.source, [...(volumeUsers.get(v.source) ?? []), name]);
    if (vols.length > 0) spec.volumes = vols.map((v) => ({ name: v.name, path: v.path }));
    if (bindFiles.length > 0) spec.files = [...((spec.files as Obj[] | undefined) ?? []), ...bindFiles];


    // healthcheck
    const health = healthOf(r, s.healthcheck, `${where}.healthcheck`);
    if (health) spec.healthCheck = health;
    // A docker service's check runs inside its container (docker exec); a process service's on the node.
    if (health && driver === 'docker') health.inContainer = true;

    // restart, deploy
    const restart = restartOf(r, s.restart, `${where}.restart`);
    if (restart) spec.restart = restart;
    if (s.scale !== undefined) spec.replicas = s.scale;
    if (s.cpus !== undefined || s.mem_limit !== undefined || s.mem_reservation !== undefined) {
      const res: Obj = {};
      if (s.cpus !== undefined) res.cpu = parseCpu(s.cpus) ?? r.err(`${where}.cpus`, 'must be a number of CPUs');
      const mem = s.mem_limit ?? s.mem_reservation;
      if (mem !== undefined) res.memoryMB = parseMemoryMB(String(mem).replace(/b$/i, '')) ?? r.err(`${where}.mem_limit`, 'must be a size like 512m or 1g');
      spec.resources = res;
    }
    if (s.platform !== undefined) {
      const m = typeof s.platform === 'string' ? /^linux\/(amd64|arm64|x86_64|aarch64)(\/.*)?$/.exec(s.platform) : null;
      if (!m) r.err(`${where}.platform`, 'supported: linux/amd64 or linux/arm64');
      else spec.constraints = [`arch==${archName(m[1])}`];
    }
    if (s.deploy !== undefined) deployOf(r, s.deploy, `${where}.deploy`, spec);
    // As in Compose, a service is limited only by limits the file gives (cpus, mem_limit,
    // deploy.resources.limits); otherwise its resources are reserved for placement only (Omni's
    // default of 0.1 CPU would otherwise cap the container, and the health checks run in it).
    const d = isObj(s.deploy) && isObj(s.deploy.resources) ? s.deploy.resources : undefined;
    const limited = s.cpus !== undefined || s.mem_limit !== undefined || (d !== undefined && isObj(d.limits) && (d.limits.cpus !== undefined || d.limits.memory !== undefined));
    if (!limited && driver === 'docker') spec.resources = { ...(isObj(spec.resources) ? spec.resources : {}), limit: false };
    // A process-driver service is limited (its cgroup) only when the file gives both limits: with one,
    // the other would be Omni's default (0.1 CPU or 64 MB) enforced as a hard limit.
    const cpuLimit = s.cpus !== undefined || (d !== undefined && isObj(d.limits) && d.limits.cpus !== undefined);
    const memLimit = s.mem_limit !== undefined || (d !== undefined && isObj(d.limits) && d.limits.memory !== undefined);
    if (driver === 'process' && cpuLimit && memLimit) spec.resources = { ...(isObj(spec.resources) ? spec.resources : {}), limit: true };
    else if (driver === 'process' && limited) r.warn(where, `a process service is hard-limited only when the file gives both a CPU and a memory limit; ${cpuLimit ? 'cpus' : 'the memory limit'} is reserved for placement only`);
    if (isObj(s.labels) || Array.isArray(s.labels)) {
      const labels = Array.isArray(s.labels) ? Object.fromEntries(s.labels.map((l) => String(l).split('=', 2))) : s.labels;
      const other = Object.keys(labels).filter((k) => k !== 'omni.critical');
      if (other.length > 0) r.warn(`${where}.labels`, `ignored: ${other.join(', ')} (labels are not applied to tasks; omni.critical is read)`);
    } else if (s.labels !== undefined) r.err(`${where}.labels`, 'must be a mapping or a list');
    const labelCritical = isObj(s.labels) ? s.labels['omni.critical'] : Array.isArray(s.labels) ? s.labels.find((l) => String(l).startsWith('omni.critical='))?.toString().slice('omni.critical='.length) : undefined;
    const criticalRaw = s['x-omni-critical'] ?? labelCritical;
    if (criticalRaw !== undefined && ![true, false, 'true', 'false'].includes(criticalRaw as string)) r.err(`${where}.x-omni-critical`, 'must be true or false');
    const critical = !(criticalRaw === false || criticalRaw === 'false');

    out.push({ service: name, app, spec, ...(image !== undefined ? { image } : {}), ...(build ? { build } : {}), dependsOn: dependsOf(r, s.depends_on, `${where}.depends_on`), critical });
  }
  for (const [v, users] of volumeUsers) if (new Set(users).size > 1) r.warnings.push(`volume ${v} is used by services ${[...new Set(users)].join(', ')}: Omni volumes are per app and per node, these services do not share its data`);

  // dependencies: known, enabled, no cycle; completed_successfully makes the dependency a job
  const byName = new Map(out.map((s) => [s.service, s]));
  for (const s of out) {
    for (const d of s.dependsOn) {
      if (!Object.hasOwn(services, d.service)) r.err(`services.${s.service}.depends_on`, `${d.service} is not a service of this file`);
      else if (!byName.has(d.service) && d.required) r.err(`services.${s.service}.depends_on`, `${d.service} is not enabled (its profiles are not active): activate one with --profile`);
    }
  }
  for (const s of out) {
    const asJob = out.some((o) => o.dependsOn.some((d) => d.service === s.service && d.condition === 'service_completed_successfully'));
    if (asJob) toJob(r, s);
    if (s.spec.healthCheck === undefined && out.some((o) => o.dependsOn.some((d) => d.service === s.service && d.condition === 'service_healthy'))) {
      r.err(`services.${s.service}`, `has no healthcheck, but ${out.filter((o) => o.dependsOn.some((d) => d.service === s.service && d.condition === 'service_healthy')).map((o) => o.service).join(', ')} wait(s) for it with condition service_healthy`);
    }
  }
  const cycle = findCycle(out);
  if (cycle) r.errors.push(`depends_on has a cycle: ${cycle.join(' → ')}`);
  for (const s of out) s.dependsOn = s.dependsOn.filter((d) => byName.has(d.service));

  // every spec must pass the app spec's own validation (a build's image is filled in later)
  for (const s of out) {
    const v = validateAppSpec(s.spec.image === undefined && s.build ? { ...s.spec, image: 'built-by-forge' } : s.spec);
    if (!v.ok) for (const e of v.errors) r.err(`services.${s.service}`, `${e.field}: ${e.message}`);
  }
  if (r.errors.length > 0) throw new ComposeError(r.errors, r.warnings);
  return { project, services: cycle ? out : topoOrder(out), inactive, volumes: [...volumes], networks: [...networks.keys()], warnings: r.warnings, doc };
}

function archName(a: string): string {
  return a === 'x86_64' ? 'amd64' : a === 'aarch64' ? 'arm64' : a;
}

function buildOf(r: Report, v: unknown, where: string, env: Readonly<Record<string, string>>): BuildBlock | undefined {
  if (typeof v === 'string') return { context: v, dockerfile: 'Dockerfile', args: {} };
  if (!isObj(v)) return r.err(where, 'must be a path or {context, dockerfile, args, target}');
  r.keys(v, where, BUILD_KEYS);
  const context = v.context === undefined ? '.' : typeof v.context === 'string' ? v.context : r.err(`${where}.context`, 'must be a path');
  if (context !== undefined && /^[a-z][a-z0-9+.-]*:\/\//i.test(context)) r.err(`${where}.context`, 'a URL context is not supported: give a directory');
  const dockerfile = v.dockerfile === undefined ? 'Dockerfile' : typeof v.dockerfile === 'string' ? v.dockerfile : r.err(`${where}.dockerfile`, 'must be a path');
  const args: Record<string, string> = {};
  // A bare NAME (or NAME: with no value) takes the CLI's environment; unset, it is left out (the Dockerfile's default applies).
  const fromEnv = (k: string) => {
    if (env[k] !== undefined) args[k] = env[k];
  };
  if (Array.isArray(v.args)) for (const a of v.args) String(a).includes('=') ? (args[String(a).slice(0, String(a).indexOf('='))] = String(a).slice(String(a).indexOf('=') + 1)) : fromEnv(String(a));
  else if (isObj(v.args)) for (const [k, x] of Object.entries(v.args)) x === null ? fromEnv(k) : (args[k] = String(x));
  else if (v.args !== undefined) r.err(`${where}.args`, 'must be a mapping or a list');
  const target = v.target === undefined ? undefined : typeof v.target === 'string' ? v.target : r.err(`${where}.target`, 'must be a stage name');
  if (context === undefined || dockerfile === undefined) return undefined;
  return { context, dockerfile, args, ...(target ? { target } : {}) };
}

function envFiles(r: Report, v: unknown, where: string): { path: string; required: boolean }[] {
  if (v === undefined) return [];
  const list = Array.isArray(v) ? v : [v];
  return list.flatMap((x) => {
    if (typeof x === 'string') return [{ path: x, required: true }];
    if (isObj(x) && typeof x.path === 'string') {
      for (const k of Object.keys(x)) if (!['path', 'required', 'format'].includes(k)) r.err(`${where}.${k}`, `unknown key '${k}'`);
      return [{ path: x.path, required: x.required !== false }];
    }
    return r.err(where, 'entries are PATH or {path, required}') ?? [];
  });
}

function portsOf(r: Report, v: unknown, where: string): { name: string; port: number; publish?: number; protocol?: 'udp' }[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) return r.err(where, 'must be a list') ?? [];
  const out: { name: string; port: number; publish?: number; protocol?: 'udp' }[] = [];
  v.forEach((p, i) => {
    const at = `${where}[${i}]`;
    let target: number | undefined;
    let published: number | undefined;
    let proto = 'tcp';
    if (typeof p === 'number') target = p;
    else if (typeof p === 'string') {
      const m = /^(?:(?:\[[^\]]*\]|\d+\.\d+\.\d+\.\d+):)?(?:(\d+(?:-\d+)?):)?(\d+(?:-\d+)?)(?:\/(tcp|udp|sctp))?$/.exec(p.trim());
      if (!m) return r.err(at, `"${p}" is not [HOST_IP:][PUBLISHED:]TARGET[/PROTOCOL]`);
      if (m[1]?.includes('-') || m[2].includes('-')) return r.err(at, 'port ranges are not supported: list each port');
      if (/^(?:\[[^\]]*\]|\d+\.\d+\.\d+\.\d+):/.test(p.trim())) r.warn(at, 'the host IP is ignored: a published port listens on every address of the node');
      target = Number(m[2]);
      published = m[1] !== undefined ? Number(m[1]) : undefined;
      proto = m[3] ?? 'tcp';
    } else if (isObj(p)) {
      for (const k of Object.keys(p)) {
        if (['target', 'published', 'protocol', 'mode', 'name'].includes(k)) continue;
        if (k === 'host_ip' || k === 'app_protocol') r.warn(`${at}.${k}`, 'ignored');
        else r.err(`${at}.${k}`, `unknown key '${k}'`);
      }
      target = typeof p.target === 'number' ? p.target : typeof p.target === 'string' && /^\d+$/.test(p.target) ? Number(p.target) : r.err(`${at}.target`, 'required: the container port');
      if (p.published !== undefined) {
        if (typeof p.published === 'string' && p.published.includes('-')) return r.err(`${at}.published`, 'port ranges are not supported');
        published = Number(p.published);
      }
      proto = typeof p.protocol === 'string' ? p.protocol : 'tcp';
    } else return r.err(at, 'must be a port, "PUBLISHED:TARGET" or {target, published}');
    if (proto !== 'tcp' && proto !== 'udp') return r.err(at, `protocol ${proto} is not supported (tcp or udp)`);
    if (target === undefined || !Number.isInteger(target) || target < 1 || target > 65535) return r.err(at, 'the container port must be from 1 to 65535');
    if (published !== undefined && (!Number.isInteger(published) || published < 0 || published > 65535)) return r.err(at, 'the published port must be from 0 to 65535');
    let name = proto === 'udp' ? `u${target}` : `p${target}`;
    if (out.some((o) => o.name === name)) name = `${name}-${i}`;
    // Published as Swarm does: the port answers on every node and routes to a serving replica (the routing mesh).
    out.push({ name, port: target, ...(published ? { publish: published } : {}), ...(proto === 'udp' ? { protocol: 'udp' as const } : {}) });
    return undefined;
  });
  return out;
}

/**
 * A bind mount of a text file at a path relative to the compose file (`./nginx.conf:/etc/nginx/nginx.conf:ro`)
 * becomes a config of the service (read-only at the target, a copy of the file taken at `up`):
 * the file is on the CLI's host, not on the nodes. Directories and other host paths are refused.
 */
export interface BindFiles {
  readFile(path: string): string | undefined;
  /** Where the configs made of bind-mounted files go (spec files). */
  files: Obj[];
}

function volumesOf(r: Report, v: unknown, where: string, declared: Set<string>, bindFiles?: BindFiles): { source: string; name: string; path: string }[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) return r.err(where, 'must be a list') ?? [];
  const out: { source: string; name: string; path: string }[] = [];
  const refuse = (at: string, src: string) => r.err(at, `bind mount of ${src} refused: a host path is not the same on every node a task may run on; use a named volume (declared under top-level volumes:), or configs/secrets for files (a text file of up to ${MAX_TASK_FILE_BYTES / 1024} KiB at a path relative to the compose file becomes one by itself)`);
  const bind = (at: string, src: string, target?: string, readOnly?: boolean) => {
    // only paths relative to the compose file: an absolute one (/etc/localtime) means the node's own file
    const text = bindFiles && target && src.startsWith('.') ? bindFiles.readFile(src) : undefined;
    if (text === undefined) return refuse(at, src);
    if (text.includes('\uFFFD')) return r.err(at, `bind mount of ${src} refused: not a text file (a config is text); use a named volume`);
    if (Buffer.byteLength(text) > MAX_TASK_FILE_BYTES) return r.err(at, `bind mount of ${src} refused: larger than ${MAX_TASK_FILE_BYTES / 1024} KiB, a config's limit; use a named volume`);
    r.warn(at, `${src} is shipped with the stack as a config at ${target}: a copy taken now (run up again after editing it)${readOnly ? '' : ', read-only in the container'}`);
    bindFiles!.files.push({ kind: 'config', name: `bind-mount-${bindFiles!.files.length}`, target, data: Buffer.from(text, 'utf8').toString('base64'), mode: 0o444 });
    return undefined;
  };
  v.forEach((x, i) => {
    const at = `${where}[${i}]`;
    let source: string | undefined;
    let target: string | undefined;
    if (typeof x === 'string') {
      const parts = x.split(':');
      if (parts.length === 1) {
        target = parts[0];
      } else {
        [source, target] = parts;
        const mode = parts[2];
        if (parts.length > 3 || (mode !== undefined && !/^(rw|ro|z|Z|nocopy|ro,z|ro,Z)$/.test(mode))) return r.err(at, `"${x}" is not SOURCE:TARGET[:MODE]`);
        if (source !== undefined && (source.startsWith('.') || source.startsWith('/') || source.startsWith('~'))) return bind(at, source, target?.startsWith('/') ? target : undefined, mode?.startsWith('ro'));
        if (mode?.startsWith('ro')) r.warn(at, 'read-only is ignored: a volume is mounted read-write');
      }
    } else if (isObj(x)) {
      for (const k of Object.keys(x)) {
        if (['type', 'source', 'target', 'read_only', 'volume', 'bind', 'tmpfs', 'consistency'].includes(k)) continue;
        r.err(`${at}.${k}`, `unknown key '${k}'`);
      }
      if (x.type === 'bind') return bind(at, String(x.source), typeof x.target === 'string' && x.target.startsWith('/') ? x.target : undefined, x.read_only === true);
      if (x.type !== undefined && x.type !== 'volume') return r.err(`${at}.type`, `${String(x.type)} mounts are not supported: use a named volume`);
      if (x.read_only === true) r.warn(at, 'read_only is ignored: a volume is mounted read-write');
      if (x.volume !== undefined) r.warn(`${at}.volume`, 'ignored (nocopy, subpath)');
      source = typeof x.source === 'string' ? x.source : undefined;
      target = typeof x.target === 'string' ? x.target : undefined;
    } else return r.err(at, 'must be "VOLUME:/path" or {type: volume, source, target}');
    if (!target || !target.startsWith('/')) return r.err(at, 'the target must be an absolute path in the container');
    if (source === undefined) {
      r.warn(at, `an anonymous volume at ${target} becomes a named volume of the app (it survives a redeploy)`);
      source = `anon-${i}`;
    } else if (source.startsWith('.') || source.startsWith('/') || source.startsWith('~')) return bind(at, source);
    else if (!declared.has(source)) return r.err(at, `volume ${source} is not declared under top-level volumes:`);
    out.push({ source, name: volumeName(source), path: target });
    return undefined;
  });
  return out;
}

function healthOf(r: Report, v: unknown, where: string): Obj | undefined {
  if (v === undefined) return undefined;
  if (!isObj(v)) return r.err(where, 'must be a mapping');
  r.keys(v, where, HEALTHCHECK_KEYS);
  if (v.disable === true) return undefined;
  let command: string[] | undefined;
  const t = v.test;
  if (typeof t === 'string') command = ['/bin/sh', '-c', t];
  else if (Array.isArray(t) && t.every((x) => typeof x === 'string')) {
    const [kind, ...rest] = t as string[];
    if (kind === 'NONE') return undefined;
    if (kind === 'CMD') command = rest;
    else if (kind === 'CMD-SHELL') command = ['/bin/sh', '-c', rest.join(' ')];
    else return r.err(`${where}.test`, 'a list must start with CMD, CMD-SHELL or NONE');
  } else return r.err(`${where}.test`, 'required: a command string or [CMD, ...] / [CMD-SHELL, "..."]');
  if (command.length === 0) return r.err(`${where}.test`, 'an empty command');
  const dur = (k: string, dflt: number, min: number): number => {
    if (v[k] === undefined) return dflt;
    const ms = parseDuration(v[k]);
    if (ms === undefined) return r.err(`${where}.${k}`, `"${String(v[k])}" is not a duration like 10s or 1m30s`) ?? dflt;
    return Math.max(ms, min);
  };
  const retries = v.retries === undefined ? 3 : typeof v.retries === 'number' && Number.isInteger(v.retries) && v.retries >= 1 ? Math.min(v.retries, 100) : r.err(`${where}.retries`, 'must be a whole number of at least 1') ?? 3;
  return { type: 'command', command, intervalMs: dur('interval', 2000, 100), timeoutMs: dur('timeout', 1000, 50), retries, startPeriodMs: dur('start_period', 0, 0) };
}

/** A file mode: 0440 (read as octal, as YAML 1.1 and Compose do), 288, "0440" or "440". */
function fileMode(r: Report, v: unknown, where: string): number {
  let m: number | undefined;
  // YAML 1.2 reads 0440 as the decimal 440: digits that are all octal are read as octal.
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) m = /^[0-7]{1,3}$/.test(String(v)) ? parseInt(String(v), 8) : v;
  else if (typeof v === 'string' && /^0?[0-7]{1,3}$/.test(v)) m = parseInt(v, 8);
  if (m === undefined || m > 0o777) return r.err(where, 'must be a file mode such as 0440') ?? 0o444;
  return m;
}

function restartOf(r: Report, v: unknown, where: string): Obj | undefined {
  if (v === undefined) return undefined;
  if (v === 'no' || v === false) return { policy: 'never' };
  if (v === 'always' || v === 'unless-stopped') return { policy: 'always' };
  if (typeof v === 'string') {
    const m = /^on-failure(?::(\d+))?$/.exec(v);
    if (m) return { policy: 'on-failure', ...(m[1] ? { maxRestarts: Number(m[1]) } : {}) };
  }
  return r.err(where, 'must be no, always, unless-stopped or on-failure[:N]');
}

function deployOf(r: Report, v: unknown, where: string, spec: Obj): void {
  if (!isObj(v)) return void r.err(where, 'must be a mapping');
  r.keys(v, where, DEPLOY_KEYS);
  if (v.mode === 'global') {
    // one task on every node that fits (Swarm's global mode)
    spec.mode = 'global';
    if (v.replicas !== undefined) r.err(`${where}.replicas`, 'not with mode: global (one task per node)');
  } else if (v.mode !== undefined && v.mode !== 'replicated') r.err(`${where}.mode`, 'must be replicated or global');
  if (v.replicas !== undefined && v.mode !== 'global') spec.replicas = v.replicas;
  if (v.resources !== undefined) {
    const res = v.resources;
    if (!isObj(res)) r.err(`${where}.resources`, 'must be {limits, reservations}');
    else {
      for (const k of Object.keys(res)) if (k !== 'limits' && k !== 'reservations') r.err(`${where}.resources.${k}`, `unknown key '${k}'`);
      const out: Obj = { ...(isObj(spec.resources) ? spec.resources : {}) };
      for (const part of ['reservations', 'limits'] as const) {
        const p = res[part];
        if (p === undefined) continue;
        if (!isObj(p)) {
          r.err(`${where}.resources.${part}`, 'must be {cpus, memory}');
          continue;
        }
        for (const k of Object.keys(p)) {
          const at = `${where}.resources.${part}.${k}`;
          if (k === 'cpus') out.cpu = parseCpu(typeof p.cpus === 'number' ? p.cpus : String(p.cpus)) ?? r.err(at, 'must be a number of CPUs');
          else if (k === 'memory') out.memoryMB = parseMemoryMB(String(p.memory).replace(/b$/i, '')) ?? r.err(at, 'must be a size like 512M or 1G');
          else if (k === 'devices' && part === 'reservations') {
            const gpus = Array.isArray(p.devices) ? p.devices.reduce<number>((n, d) => n + (isObj(d) && Array.isArray(d.capabilities) && d.capabilities.includes('gpu') ? (typeof d.count === 'number' ? d.count : r.err(`${at}`, 'give count: N (all is not supported)') ?? 0) : (r.err(at, 'only devices with capabilities [gpu] are supported'), 0)), 0) : r.err(at, 'must be a list') ?? 0;
            out.gpus = gpus;
          } else if (k === 'pids' || k === 'generic_resources') r.warn(at, 'ignored');
          else r.err(at, `unknown key '${k}'`);
        }
      }
      if (isObj(res.limits) && isObj(res.reservations)) r.warn(`${where}.resources`, 'Omni places and limits a task by one figure per resource: limits are used, reservations only where limits give none');
      spec.resources = out;
    }
  }
  if (v.placement !== undefined) {
    const p = v.placement;
    if (!isObj(p)) r.err(`${where}.placement`, 'must be {constraints, preferences, max_replicas_per_node}');
    else {
      for (const k of Object.keys(p)) if (!['constraints', 'preferences', 'max_replicas_per_node'].includes(k)) r.err(`${where}.placement.${k}`, `unknown key '${k}'`);
      const cons: string[] = Array.isArray(spec.constraints) ? [...(spec.constraints as string[])] : [];
      if (p.constraints !== undefined) {
        if (!Array.isArray(p.constraints)) r.err(`${where}.placement.constraints`, 'must be a list');
        else p.constraints.forEach((c, i) => {
          const t = typeof c === 'string' ? swarmConstraint(c) : undefined;
          if (t && parseConstraint(t)) cons.push(t);
          else r.err(`${where}.placement.constraints[${i}]`, `"${String(c)}": supported are node.labels.KEY==VALUE, node.hostname==NAME, node.platform.arch==ARCH (and !=)`);
        });
      }
      if (cons.length > 0) spec.constraints = cons;
      if (p.max_replicas_per_node !== undefined) {
        if (p.max_replicas_per_node === 1) spec.antiAffinity = true;
        else r.err(`${where}.placement.max_replicas_per_node`, 'only 1 is supported (at most one replica per node)');
      }
      if (p.preferences !== undefined) {
        const prefs = Array.isArray(p.preferences) ? p.preferences : [];
        const spread = prefs.map((x) => (isObj(x) && typeof x.spread === 'string' ? /^node\.labels\.(.+)$/.exec(x.spread)?.[1] : undefined));
        if (prefs.length !== 1 || !spread[0]) r.err(`${where}.placement.preferences`, 'supported: one [{spread: node.labels.KEY}]');
        else spec.spreadBy = spread[0];
      }
    }
  }
  if (v.update_config !== undefined) {
    const u = v.update_config;
    if (!isObj(u)) r.err(`${where}.update_config`, 'must be a mapping');
    else {
      const out: Obj = {};
      for (const k of Object.keys(u)) {
        const at = `${where}.update_config.${k}`;
        if (k === 'parallelism') out.parallel = u.parallelism === 0 ? 1000 : u.parallelism;
        else if (k === 'failure_action') {
          if (u.failure_action === 'rollback') out.autoRollback = true;
          else if (u.failure_action === 'pause' || u.failure_action === 'continue') {
            out.autoRollback = false;
            if (u.failure_action === 'continue') r.warn(at, 'continue stops the update like pause (it is not rolled back)');
          } else r.err(at, 'must be rollback, pause or continue');
        } else if (k === 'monitor') {
          const ms = parseDuration(u.monitor);
          if (ms === undefined) r.err(at, 'must be a duration');
          else out.minHealthyMs = ms;
        } else if (k === 'delay' || k === 'max_failure_ratio' || k === 'order') r.warn(at, 'ignored: tasks are replaced update.parallel at a time, start-first once each is healthy');
        else r.err(at, `unknown key '${k}'`);
      }
      if (typeof out.minHealthyMs === 'number') out.healthyTimeoutMs = Math.max(30_000, out.minHealthyMs * 2 + 1000);
      spec.update = out;
    }
  }
  if (v.restart_policy !== undefined) {
    const rp = v.restart_policy;
    if (!isObj(rp)) r.err(`${where}.restart_policy`, 'must be a mapping');
    else {
      const out: Obj = { ...(isObj(spec.restart) ? spec.restart : {}) };
      for (const k of Object.keys(rp)) {
        const at = `${where}.restart_policy.${k}`;
        if (k === 'condition') out.policy = rp.condition === 'none' ? 'never' : rp.condition === 'on-failure' ? 'on-failure' : rp.condition === 'any' ? 'always' : r.err(at, 'must be none, on-failure or any');
        else if (k === 'delay') out.delayMs = parseDuration(rp.delay) ?? r.err(at, 'must be a duration');
        else if (k === 'max_attempts') out.maxRestarts = rp.max_attempts;
        else if (k === 'window') r.warn(at, 'ignored');
        else r.err(at, `unknown key '${k}'`);
      }
      spec.restart = out;
    }
  }
}

/** Swarm's placement constraint → Omni's (label.KEY==V, node.name==N, arch==A), or undefined. */
export function swarmConstraint(c: string): string | undefined {
  const m = /^\s*(node\.labels\.([A-Za-z0-9._/-]+)|node\.hostname|node\.platform\.arch)\s*(==|!=)\s*(\S+)\s*$/.exec(c);
  if (!m) return undefined;
  if (m[2]) return `label.${m[2]}${m[3]}${m[4]}`;
  if (m[1] === 'node.hostname') return `node.name${m[3]}${m[4]}`;
  return `arch${m[3]}${archName(m[4])}`;
}

function dependsOf(r: Report, v: unknown, where: string): Dependency[] {
  if (v === undefined) return [];
  if (Array.isArray(v)) return v.flatMap((x) => (typeof x === 'string' ? [{ service: x, condition: 'service_started' as const, required: true }] : (r.err(where, 'list entries must be service names'), [])));
  if (!isObj(v)) return r.err(where, 'must be a list of services or a mapping of service → {condition}') ?? [];
  return Object.entries(v).flatMap(([service, d]) => {
    const at = `${where}.${service}`;
    if (d === null) return [{ service, condition: 'service_started' as const, required: true }];
    if (!isObj(d)) return r.err(at, 'must be {condition, required}') ?? [];
    for (const k of Object.keys(d)) {
      if (k === 'restart') r.warn(`${at}.restart`, 'ignored: a dependency’s restart does not restart this service');
      else if (k !== 'condition' && k !== 'required') r.err(`${at}.${k}`, `unknown key '${k}'`);
    }
    const condition = d.condition === undefined ? 'service_started' : d.condition;
    if (condition !== 'service_started' && condition !== 'service_healthy' && condition !== 'service_completed_successfully') return r.err(`${at}.condition`, 'must be service_started, service_healthy or service_completed_successfully') ?? [];
    return [{ service, condition, required: d.required !== false }];
  });
}

/** A service others wait for with service_completed_successfully runs once to completion: an Omni job. */
function toJob(r: Report, s: StackService): void {
  const spec = s.spec;
  const where = `services.${s.service}`;
  spec.type = 'job';
  const restart = spec.restart as Obj | undefined;
  spec.retries = restart?.policy === 'on-failure' && typeof restart.maxRestarts === 'number' ? restart.maxRestarts : 0;
  if (restart?.policy === 'always') r.warn(`${where}.restart`, 'ignored: others wait for it with service_completed_successfully, so it runs once to completion (an Omni job)');
  for (const k of ['restart', 'update', 'healthCheck'] as const) delete spec[k];
  if (spec.ports !== undefined) {
    r.warn(`${where}.ports`, 'ignored: it runs once to completion (an Omni job has no ports)');
    delete spec.ports;
  }
}

/** A cycle in depends_on as service names (first repeated at the end), or undefined. */
export function findCycle(services: { service: string; dependsOn: { service: string }[] }[]): string[] | undefined {
  const deps = new Map(services.map((s) => [s.service, s.dependsOn.map((d) => d.service)]));
  const state = new Map<string, 1 | 2>();
  const stack: string[] = [];
  const visit = (n: string): string[] | undefined => {
    if (state.get(n) === 2 || !deps.has(n)) return undefined;
    if (state.get(n) === 1) return [...stack.slice(stack.indexOf(n)), n];
    state.set(n, 1);
    stack.push(n);
    for (const d of deps.get(n)!) {
      const c = visit(d);
      if (c) return c;
    }
    stack.pop();
    state.set(n, 2);
    return undefined;
  };
  for (const s of services) {
    const c = visit(s.service);
    if (c) return c;
  }
  return undefined;
}

/** Dependencies first; otherwise the file's order. */
function topoOrder(services: StackService[]): StackService[] {
  const done = new Set<string>();
  const out: StackService[] = [];
  const byName = new Map(services.map((s) => [s.service, s]));
  const visit = (s: StackService) => {
    if (done.has(s.service)) return;
    done.add(s.service);
    for (const d of s.dependsOn) visit(byName.get(d.service)!);
    out.push(s);
  };
  services.forEach(visit);
  return out;
}
