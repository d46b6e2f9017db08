// Forge's build of a source directory into a runtime image in the cluster's registry:
//   1. the source, filtered by .gitignore/.dockerignore (root files) and a size limit, written as
//      a reproducible tar; its digest is the source digest; the tar is uploaded as a blob
//      (content-addressed: a second upload of the same source sends nothing);
//   2. detection (protocol/forge/detect.ts) → a plan;
//   3. the runtime base's manifest and config read from the registry;
//   4. the dependency layer: keyed by sha256(base digest, install command, key files' bytes),
//      looked up in the registry (repository forge-cache/deps, tag = the key) — built by the
//      install command on the key files alone only when missing, then stored there for every node;
//   5. build steps (if any) in a workspace copy (full install first; groups run one after the
//      other, the steps of a group at once);
//   6. the app layer (the tree after the build, without the dependency output, caches, .git,
//      .omni), the OCI config and manifest (protocol/forge/image.ts), pushed and tagged
//      REPO:sha-<source digest> and any extra tags.
// Every byte Forge writes is reproducible, so the same source gives the same digest on any node.
import { createHash } from 'node:crypto';
import { cp, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync, lstatSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { detect, type BuildPlan, type SourceView } from '../../protocol/forge/detect.js';
import { buildImage, sourceTag, OCI_CONFIG, OCI_LAYER_GZIP, type BaseConfig, type Descriptor, type ForgeLayer } from '../../protocol/forge/image.js';
import { gitignoreRules, isIgnored, parseIgnore, type IgnoreRule } from '../../protocol/forge/ignore.js';
import { OCI_MANIFEST } from '../../protocol/registry/media-types.js';
import { parseManifest } from '../../protocol/registry/manifest.js';
import { OmniError } from '../errors.js';
import { collectTree, writeLayer, type LayerBlob } from './layer.js';
import type { BuildEnvironment, StepRunner } from './runner.js';
import type { BuildLimits } from './docker-build.js';
import { DEVCONTAINER_PATH, parseDevcontainer, type DevContainer } from '../../protocol/forge/devcontainer.js';
import { DEPS_CACHE_REPO_NAME } from '../../protocol/forge/build-request.js';

export const MAX_SOURCE_BYTES = 256 * 1024 * 1024;
const MAX_VIEW_FILE_BYTES = 1024 * 1024;
export const DEPS_CACHE_REPO = DEPS_CACHE_REPO_NAME;

/** The registry operations a build needs (RegistryClient has them). */
export interface BuildRegistry {
  hasBlob(repo: string, digest: string): Promise<boolean>;
  mountBlob(repo: string, digest: string): Promise<boolean>;
  uploadBlob(repo: string, digest: string, path: string): Promise<void>;
  /** A chunked upload that a rerun resumes (the CLI's registry client); absent: uploadBlob. */
  uploadBlobResumable?(repo: string, digest: string, path: string, o: { stateFile: string }): Promise<unknown>;
  downloadBlob(repo: string, digest: string, dest: string): Promise<number>;
  manifest(repo: string, digest: string): Promise<{ bytes: Buffer; mediaType: string }>;
  resolveTag(repo: string, tag: string): Promise<string | undefined>;
  putManifest(repo: string, ref: string, bytes: Buffer, mediaType: string): Promise<void>;
}

export interface BuildRequest {
  dir: string;
  repo: string;
  tags?: string[];
  maxSourceBytes?: number;
  /** Build even when REPO:sha-<source digest> exists already. */
  rebuild?: boolean;
  /**
   * A Docker build of this Dockerfile (a path in the context), whatever detection would say
   * (compose's build.dockerfile), with these build arguments and target stage. Given any of the
   * three, the image is tagged sha-<digest of the source digest and the three>: the same source
   * built another way is another image.
   */
  dockerfile?: string;
  buildArgs?: Record<string, string>;
  target?: string;
  signal?: AbortSignal;
}

export interface BuildEvents {
  /** A stage began (source, detect, base, deps, step NAME, app, push). */
  stage?(name: string): void;
  /** A line of a step's log. */
  log?(step: string, line: string): void;
}

export interface BuildResult {
  repository: string;
  digest: string;
  sourceDigest: string;
  tags: string[];
  type: BuildPlan['type'];
  detectedBy: string[];
  runtime?: string;
  baseDigest?: string;
  depsKey?: string;
  depsReused: boolean;
  layers: { digest: string; sizeBytes: number; createdBy: string }[];
  imageBytes: number;
  warnings: string[];
  sourceUploaded: boolean;
  /** The image of this source digest was in the registry already: nothing was built. */
  reused: boolean;
  /** How to run it, from detection or .omni/build.yaml (omni run DIR makes the app spec from these). */
  run: RunSettings;
}

/** What an app of the built image needs: ports it listens on, its health check, its start command (also the image's CMD). */
export interface RunSettings {
  ports: number[];
  health?: BuildPlan['health'];
  start?: string[];
}

const runSettings = (plan: BuildPlan): RunSettings => ({ ports: plan.ports, ...(plan.health ? { health: plan.health } : {}), ...(plan.start ? { start: plan.start } : {}) });

const sha256 = (b: string | Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

/**
 * The ignore rules of a tree: every .gitignore (the root's, then those of subdirectories, each
 * scoped to its directory; directories ignored above, and .git, are not looked into), then the
 * root's .dockerignore (anchored).
 */
export function ignoreRules(dir: string): IgnoreRule[] {
  const readSmall = (p: string, name: string): string | undefined => {
    let st;
    try {
      st = lstatSync(p);
    } catch {
      return undefined;
    }
    if (!st.isFile()) return undefined;
    if (st.size > MAX_VIEW_FILE_BYTES) throw new OmniError('TOO_LARGE', `${name} is over ${MAX_VIEW_FILE_BYTES} bytes`);
    return readFileSync(p, 'utf8');
  };
  const subdirs = (d: string): string[] => {
    try {
      return readdirSync(join(dir, d), { withFileTypes: true }).filter((n) => n.isDirectory()).map((n) => n.name);
    } catch {
      return [];
    }
  };
  let rules: IgnoreRule[];
  try {
    rules = gitignoreRules(subdirs, (d) => readSmall(join(dir, d, '.gitignore'), d ? `${d}/.gitignore` : '.gitignore'));
  } catch (err) {
    if (err instanceof OmniError) throw err;
    throw new OmniError('TOO_LARGE', `${dir}: ${(err as Error).message}`);
  }
  const di = readSmall(join(dir, '.dockerignore'), '.dockerignore');
  if (di !== undefined) rules.push(...parseIgnore(di, true));
  return rules;
}

/**
 * A SourceView of a directory: ignored files do not exist; files over 1 MiB cannot be read; a
 * symbolic link is not followed (it counts as no file: its target may be outside the tree).
 */
export function dirView(dir: string, rules: readonly IgnoreRule[]): SourceView {
  const file = (p: string) => {
    if (isIgnored(rules, p, false)) return undefined;
    try {
      const parts = p.split('/');
      for (let i = 1; i < parts.length; i++) if (!lstatSync(join(dir, ...parts.slice(0, i))).isDirectory()) return undefined;
      const st = lstatSync(join(dir, p));
      return st.isFile() ? st : undefined;
    } catch {
      return undefined;
    }
  };
  return {
    has: (p) => file(p) !== undefined,
    read: (p) => {
      const st = file(p);
      if (!st || st.size > MAX_VIEW_FILE_BYTES) return undefined;
      return readFileSync(join(dir, p), 'utf8');
    },
  };
}

/**
 * The source of a build as a reproducible tar.gz at `dest` (what is uploaded; a node-side build
 * extracts it): the tree without ignored files and .git, at most `maxBytes`. Its `diffId` (sha256
 * of the tar) is the source digest; `digest` is the blob's (gzip).
 */
export async function packSource(dir: string, dest: string, maxBytes: number = MAX_SOURCE_BYTES, rules: readonly IgnoreRule[] = ignoreRules(dir)): Promise<LayerBlob> {
  const src = await collectTree(dir, { prefix: '', ignore: rules, excludeNames: ['.git'], maxBytes });
  return writeLayer(src.entries, dest);
}

/** Uploads unless the registry has the blob; `resumeStateFile`: resumable where the registry client can (a rerun sends only what is missing). */
export async function putBlob(reg: BuildRegistry, repo: string, digest: string, path: string, resumeStateFile?: string): Promise<boolean> {
  if ((await reg.hasBlob(repo, digest)) || (await reg.mountBlob(repo, digest))) return false;
  if (resumeStateFile && reg.uploadBlobResumable) await reg.uploadBlobResumable(repo, digest, path, { stateFile: resumeStateFile });
  else await reg.uploadBlob(repo, digest, path);
  return true;
}

function parseRef(ref: string): { repo: string; ref: string } {
  const at = ref.indexOf('@');
  if (at > 0) return { repo: ref.slice(0, at), ref: ref.slice(at + 1) };
  const colon = ref.lastIndexOf(':');
  if (colon > 0 && !ref.slice(colon).includes('/')) return { repo: ref.slice(0, colon), ref: ref.slice(colon + 1) };
  return { repo: ref, ref: 'latest' };
}

/** The manifest and config of an image in the registry. */
async function readImage(reg: BuildRegistry, refText: string, work: string): Promise<{ digest: string; config: BaseConfig; layers: Descriptor[]; repo: string }> {
  const { repo, ref } = parseRef(refText);
  const digest = ref.startsWith('sha256:') ? ref : await reg.resolveTag(repo, ref);
  if (!digest) throw new OmniError('NOT_FOUND', `no runtime base image ${refText} in the cluster's registry: make one with scripts/forge-base.sh (see README, Forge) or set runtime: in .omni/build.yaml`);
  const m = await reg.manifest(repo, digest);
  const parsed = parseManifest(m.bytes, m.mediaType);
  if (!parsed.ok) throw new OmniError('INVALID', `base image ${refText}: ${parsed.message}`);
  if (parsed.manifest.kind !== 'image') throw new OmniError('INVALID', `base image ${refText} is an index (several platforms); give Forge one platform's image`);
  const doc = JSON.parse(m.bytes.toString('utf8')) as { config: Descriptor; layers: Descriptor[] };
  const cfgPath = join(work, 'base-config.json');
  await reg.downloadBlob(repo, doc.config.digest, cfgPath);
  const config = JSON.parse(await readFile(cfgPath, 'utf8')) as BaseConfig;
  return { digest, config, layers: doc.layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })), repo };
}

/**
 * Builds a Dockerfile project (the engine's job) from Forge's context tar and stores the image in
 * REPO; returns its manifest. Supplied by whoever has an engine (the CLI: node/forge/docker-build.ts).
 */
export type DockerfileBuild = (input: { contextPath: string; dockerfile: string; buildArgs?: Record<string, string>; target?: string; limits?: BuildLimits; repo: string; sourceDigest: string; work: string; signal?: AbortSignal; log: (line: string) => void }) => Promise<{ digest: string; manifest: Buffer; mediaType: string; imageBytes: number }>;

/**
 * The plan of a build whose Dockerfile, arguments or target the request names (compose), and the
 * digest its tag is made from; undefined when the request names none (detection decides).
 */
function dockerfilePlan(req: BuildRequest, dir: string, rules: IgnoreRule[], sourceDigest: string): { plan: BuildPlan; tagDigest: string } | undefined {
  if (req.dockerfile === undefined && req.buildArgs === undefined && req.target === undefined) return undefined;
  const dockerfile = req.dockerfile ?? 'Dockerfile';
  if (dockerfile.startsWith('/') || dockerfile.split('/').includes('..')) throw new OmniError('NOT_BUILDABLE', `dockerfile ${dockerfile}: must be a path inside the build context`);
  if (!existsSync(join(dir, dockerfile)) || !statSync(join(dir, dockerfile)).isFile()) throw new OmniError('NOT_BUILDABLE', `dockerfile ${dockerfile}: no such file in ${dir}`);
  if (isIgnored(rules, dockerfile, false)) throw new OmniError('NOT_BUILDABLE', `dockerfile ${dockerfile}: left out of the context by .dockerignore/.gitignore`);
  const variant = JSON.stringify({ source: sourceDigest, dockerfile, args: Object.fromEntries(Object.entries(req.buildArgs ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))), target: req.target ?? '' });
  const plan: BuildPlan = { type: 'dockerfile', detectedBy: [dockerfile], workdir: '/', env: {}, pathPrepend: [], steps: [], exclude: [], cache: [], ports: [], resources: { cpu: 0.1, memoryMB: 64 }, dockerfile, warnings: [] };
  return { plan, tagDigest: `sha256:${createHash('sha256').update(variant).digest('hex')}` };
}

export class Forge {
  constructor(
    private readonly reg: BuildRegistry,
    private readonly runner: StepRunner,
    private readonly workRoot: string,
    private readonly dockerfileBuild?: DockerfileBuild,
  ) {}

  async build(req: BuildRequest, ev: BuildEvents = {}): Promise<BuildResult> {
    await mkdir(this.workRoot, { recursive: true });
    const work = await mkdtemp(join(this.workRoot, 'build-'));
    try {
      return await this.run(req, ev, work);
    } finally {
      await this.runner.dispose?.();
      await rm(work, { recursive: true, force: true });
    }
  }

  private async run(req: BuildRequest, ev: BuildEvents, work: string): Promise<BuildResult> {
    const { dir, repo } = req;
    const st = await stat(dir).catch(() => undefined);
    if (!st?.isDirectory()) throw new OmniError('INVALID_ARGUMENT', `${dir} is not a directory`);
    // 1. source
    ev.stage?.('source');
    const rules = ignoreRules(dir);
    const srcBlob = await packSource(dir, join(work, 'source.tar.gz'), req.maxSourceBytes ?? MAX_SOURCE_BYTES, rules);
    const sourceDigest = srcBlob.diffId;
    const sourceUploaded = await putBlob(this.reg, repo, srcBlob.digest, join(work, 'source.tar.gz'));
    // 2. detect
    ev.stage?.('detect');
    const forced = dockerfilePlan(req, dir, rules, sourceDigest);
    const d = forced ? { ok: true as const, plan: forced.plan } : detect(dirView(dir, rules));
    if (!d.ok) throw new OmniError('NOT_BUILDABLE', d.message);
    const plan = d.plan;
    const tag = sourceTag(forced?.tagDigest ?? sourceDigest);
    if (plan.type === 'dockerfile') {
      if (!req.rebuild) {
        const prior = await this.reused(req, plan, sourceDigest, sourceUploaded, forced?.tagDigest);
        if (prior) return prior;
      }
      if (!this.dockerfileBuild) throw new OmniError('UNAVAILABLE', 'this is a Dockerfile project and no Docker engine is available to build it (DOCKER_HOST)');
      ev.stage?.('docker build');
      const r = await this.dockerfileBuild({ contextPath: join(work, 'source.tar.gz'), dockerfile: plan.dockerfile ?? 'Dockerfile', ...(req.buildArgs ? { buildArgs: req.buildArgs } : {}), ...(req.target ? { target: req.target } : {}), repo, sourceDigest, work, signal: req.signal, log: (l) => ev.log?.('docker build', l) });
      const tags = [tag, ...(req.tags ?? [])];
      for (const t of tags) await this.reg.putManifest(repo, t, r.manifest, r.mediaType);
      return { repository: repo, digest: r.digest, sourceDigest, tags, type: plan.type, detectedBy: plan.detectedBy, depsReused: false, layers: [], imageBytes: r.imageBytes, warnings: plan.warnings, sourceUploaded, reused: false, run: runSettings(plan) };
    }
    if (!plan.runtime) throw new OmniError('NOT_BUILDABLE', 'no runtime base image for this project: set runtime: in .omni/build.yaml');
    // The same source (build.yaml included) was built already: its image is the result.
    if (!req.rebuild) {
      const prior = await this.reused(req, plan, sourceDigest, sourceUploaded);
      if (prior) return prior;
    }
    // 3. base
    ev.stage?.('base');
    const base = await readImage(this.reg, plan.runtime, work);
    const layers: (ForgeLayer & { path: string })[] = [];
    // Steps get the plan's env and a HOME of their own (npm's and pip's caches stay out of the tree).
    const home = join(work, 'home');
    await mkdir(home);
    let stepEnv: Record<string, string> = { HOME: home, ...plan.env };
    // The devcontainer's environment (with a runner that runs containers): image, env, user, postCreateCommand.
    const dev = await this.devEnvironment(dir, rules, plan, req, ev, work);
    let envImage = dev?.env.image;
    const user = dev?.config.user;
    if (dev) stepEnv = { HOME: home, ...dev.config.containerEnv, ...plan.env };
    let ws: string | undefined;
    if (dev?.config.postCreateCommand) {
      ev.stage?.('postCreateCommand');
      ws = join(work, 'workspace');
      await copyTree(dir, ws, rules);
      const id = await this.runner.run({ step: 'postCreateCommand', command: dev.config.postCreateCommand, cwd: ws, env: stepEnv, envImage, user, commit: true, signal: req.signal }, (l) => ev.log?.('postCreateCommand', l));
      if (typeof id === 'string') envImage = id;
    }
    const inEnv = { ...(envImage ? { envImage } : {}), ...(user ? { user } : {}) };
    // 4. dependencies
    let depsKey: string | undefined;
    let depsReused = false;
    if (plan.deps) {
      ev.stage?.('deps');
      const deps = plan.deps;
      const h = createHash('sha256').update(`omni-forge-deps/1\0${base.digest}\0${deps.install}\0${deps.output}\0`);
      for (const f of deps.keyFiles) h.update(`${f}\0`).update(await readFile(join(dir, f)).catch(() => Buffer.alloc(0))).update('\0');
      if (deps.needsSource) h.update(sourceDigest);
      // built in a devcontainer: its image and settings key the layer too
      if (dev) h.update(`devcontainer\0${dev.env.id}\0${JSON.stringify(dev.config.containerEnv)}\0${dev.config.user ?? ''}\0${dev.config.postCreateCommand ?? ''}\0`);
      depsKey = 'sha256:' + h.digest('hex');
      const cached = await this.cachedDeps(depsKey, work);
      if (cached) {
        depsReused = true;
        layers.push({ ...cached, createdBy: `dependencies: ${deps.install}`, path: '' });
      } else {
        const ddir = join(work, 'deps');
        await mkdir(ddir);
        if (deps.needsSource) await copyTree(dir, ddir, rules);
        else for (const f of deps.keyFiles) if (existsSync(join(dir, f))) await cp(join(dir, f), join(ddir, f));
        await this.runner.run({ step: 'dependencies', command: deps.install, cwd: ddir, env: stepEnv, image: plan.runtime, ...inEnv, signal: req.signal }, (l) => ev.log?.('dependencies', l));
        const out = join(ddir, deps.output);
        if (!existsSync(out)) await mkdir(out, { recursive: true });
        const tree = await collectTree(out, { prefix: `${plan.workdir.slice(1)}/${deps.output}` });
        const blob = await writeLayer(tree.entries, join(work, 'deps.tar.gz'));
        layers.push({ ...blob, createdBy: `dependencies: ${deps.install}`, path: join(work, 'deps.tar.gz') });
        await this.storeDeps(depsKey, blob, join(work, 'deps.tar.gz'));
      }
    }
    // 5. build steps
    let appRoot = dir;
    let appRules: readonly IgnoreRule[] = rules;
    if (plan.steps.length || ws) {
      if (!ws) {
        ws = join(work, 'workspace');
        await copyTree(dir, ws, rules);
      }
      const wsDir = ws;
      if (plan.buildInstall && plan.steps.length) {
        ev.stage?.('step install');
        await this.runner.run({ step: 'install', command: plan.buildInstall, cwd: wsDir, env: stepEnv, image: plan.runtime, ...inEnv, signal: req.signal }, (l) => ev.log?.('install', l));
      }
      for (const group of plan.steps) {
        ev.stage?.(`step ${group.map((s) => s.name).join(' + ')}`);
        const results = await Promise.allSettled(group.map((s) => this.runner.run({ step: s.name, command: s.run, cwd: wsDir, env: stepEnv, image: plan.runtime, ...inEnv, signal: req.signal }, (l) => ev.log?.(s.name, l))));
        const failed = results.find((r) => r.status === 'rejected');
        if (failed) throw (failed as PromiseRejectedResult).reason;
      }
      appRoot = wsDir;
      appRules = [];
    }
    // 6. app layer, config, manifest
    ev.stage?.('app');
    const app = await collectTree(appRoot, { prefix: plan.workdir.slice(1), ignore: appRules, exclude: plan.exclude });
    const appBlob = await writeLayer(app.entries, join(work, 'app.tar.gz'));
    layers.push({ ...appBlob, createdBy: 'app', path: join(work, 'app.tar.gz') });
    const img = buildImage({ base, layers, workdir: plan.workdir, env: plan.env, pathPrepend: plan.pathPrepend, cmd: plan.start ?? [], ports: plan.ports, sourceDigest });
    if (!img.ok) throw new OmniError('INVALID', img.message);
    ev.stage?.('push');
    const configBytes = Buffer.from(img.config);
    const configDigest = sha256(configBytes);
    await writeFile(join(work, 'config.json'), configBytes);
    for (const l of base.layers) if (!(await this.reg.hasBlob(repo, l.digest)) && !(await this.reg.mountBlob(repo, l.digest))) throw new OmniError('NOT_FOUND', `base layer ${l.digest} is not in the registry`);
    for (const l of layers) {
      if (l.path) await putBlob(this.reg, repo, l.digest, l.path);
      else if (!(await this.reg.hasBlob(repo, l.digest)) && !(await this.reg.mountBlob(repo, l.digest))) throw new OmniError('NOT_FOUND', `cached layer ${l.digest} left the registry; build again`);
    }
    await putBlob(this.reg, repo, configDigest, join(work, 'config.json'));
    const manifestBytes = Buffer.from(img.manifest(configDigest, configBytes.length));
    const digest = sha256(manifestBytes);
    await this.reg.putManifest(repo, digest, manifestBytes, OCI_MANIFEST);
    const tags = [tag, ...(req.tags ?? [])];
    for (const t of tags) await this.reg.putManifest(repo, t, manifestBytes, OCI_MANIFEST);
    return {
      repository: repo,
      digest,
      sourceDigest,
      tags,
      type: plan.type,
      detectedBy: plan.detectedBy,
      runtime: plan.runtime,
      baseDigest: base.digest,
      ...(depsKey ? { depsKey } : {}),
      depsReused,
      layers: layers.map((l) => ({ digest: l.digest, sizeBytes: l.sizeBytes, createdBy: l.createdBy })),
      imageBytes: base.layers.reduce((s, l) => s + l.size, 0) + layers.reduce((s, l) => s + l.sizeBytes, 0) + configBytes.length,
      warnings: plan.warnings,
      sourceUploaded,
      reused: false,
      run: runSettings(plan),
    };
  }

  /**
   * The devcontainer of the tree, made ready by the runner; undefined without one. With a runner
   * that cannot run containers (host), it is left out with a warning.
   */
  private async devEnvironment(dir: string, rules: readonly IgnoreRule[], plan: BuildPlan, req: BuildRequest, ev: BuildEvents, work: string): Promise<{ config: DevContainer; env: BuildEnvironment } | undefined> {
    const view = dirView(dir, rules);
    if (!view.has(DEVCONTAINER_PATH)) return undefined;
    const text = view.read(DEVCONTAINER_PATH);
    if (text === undefined) throw new OmniError('NOT_BUILDABLE', `${DEVCONTAINER_PATH} is too large to read`);
    const p = parseDevcontainer(text);
    if (!p.ok) throw new OmniError('NOT_BUILDABLE', p.message);
    plan.warnings.push(...p.config.warnings);
    if (!this.runner.devEnvironment) {
      const w = `${DEVCONTAINER_PATH} is not used with --runner ${this.runner.kind} (the steps run on this host); --runner docker runs them in it`;
      plan.warnings.push(w);
      ev.log?.('devcontainer', `warning: ${w}`);
      return undefined;
    }
    ev.stage?.('devcontainer');
    const env = await this.runner.devEnvironment(p.config, { dir, work, ...(req.signal ? { signal: req.signal } : {}), log: (l) => ev.log?.('devcontainer', l) });
    return { config: p.config, env };
  }

  /** The image REPO:sha-<source digest> names, when there is one (then given the extra tags too). */
  private async reused(req: BuildRequest, plan: BuildPlan, sourceDigest: string, sourceUploaded: boolean, tagDigest = sourceDigest): Promise<BuildResult | undefined> {
    const tag = sourceTag(tagDigest);
    const prior = await this.reg.resolveTag(req.repo, tag);
    if (!prior) return undefined;
    const m = await this.reg.manifest(req.repo, prior);
    const doc = JSON.parse(m.bytes.toString('utf8')) as { layers?: Descriptor[] };
    for (const t of req.tags ?? []) await this.reg.putManifest(req.repo, t, m.bytes, m.mediaType);
    return {
      repository: req.repo,
      digest: prior,
      sourceDigest,
      tags: [tag, ...(req.tags ?? [])],
      type: plan.type,
      detectedBy: plan.detectedBy,
      ...(plan.runtime ? { runtime: plan.runtime } : {}),
      depsReused: true,
      layers: [],
      imageBytes: (doc.layers ?? []).reduce((n, l) => n + l.size, 0),
      warnings: plan.warnings,
      sourceUploaded,
      reused: true,
      run: runSettings(plan),
    };
  }

  /** The cached dependency layer of `key`: a one-layer image in forge-cache/deps tagged with the key's hex. */
  private async cachedDeps(key: string, work: string): Promise<LayerBlob | undefined> {
    const tag = key.slice('sha256:'.length);
    const digest = await this.reg.resolveTag(DEPS_CACHE_REPO, tag).catch(() => undefined);
    if (!digest) return undefined;
    const m = await this.reg.manifest(DEPS_CACHE_REPO, digest);
    const doc = JSON.parse(m.bytes.toString('utf8')) as { config: Descriptor; layers: Descriptor[] };
    if (doc.layers.length !== 1) return undefined;
    const p = join(work, 'deps-config.json');
    await this.reg.downloadBlob(DEPS_CACHE_REPO, doc.config.digest, p);
    const cfg = JSON.parse(await readFile(p, 'utf8')) as { rootfs?: { diff_ids?: string[] } };
    const diffId = cfg.rootfs?.diff_ids?.[0];
    if (!diffId) return undefined;
    return { digest: doc.layers[0].digest, diffId, sizeBytes: doc.layers[0].size, entries: 0 };
  }

  private async storeDeps(key: string, blob: LayerBlob, path: string): Promise<void> {
    await putBlob(this.reg, DEPS_CACHE_REPO, blob.digest, path);
    const cfg = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [blob.diffId] }, config: { Labels: { 'dev.omni.forge.deps-key': key } } }));
    const cfgDigest = sha256(cfg);
    const cfgPath = path + '.config.json';
    await writeFile(cfgPath, cfg);
    await putBlob(this.reg, DEPS_CACHE_REPO, cfgDigest, cfgPath);
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: OCI_CONFIG, digest: cfgDigest, size: cfg.length }, layers: [{ mediaType: OCI_LAYER_GZIP, digest: blob.digest, size: blob.sizeBytes }] }));
    await this.reg.putManifest(DEPS_CACHE_REPO, key.slice('sha256:'.length), manifest, OCI_MANIFEST);
  }
}

/** Copies the tree without ignored files and any .git (symbolic links copied as links). */
async function copyTree(from: string, to: string, rules: readonly IgnoreRule[]): Promise<void> {
  await cp(from, to, {
    recursive: true,
    verbatimSymlinks: true,
    filter: (src) => {
      const rel = src === from ? '' : src.slice(from.length + 1).split('\\').join('/');
      if (rel === '') return true;
      if (rel.split('/').includes('.git')) return false; // the root's and any nested repository's
      let isDir = false;
      try {
        isDir = statSync(src).isDirectory();
      } catch {
        // gone
      }
      return !isIgnored(rules, rel, isDir);
    },
  });
}
