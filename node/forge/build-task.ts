// A build as it runs on a node (the forge task driver calls it): the source tar the CLI uploaded
// is read from the registry (from peers when this node lacks it), extracted into a work
// directory, and built by the same Forge builder `omni build --local` uses; the result lands in the
// registry through whatever BuildRegistry it is given (on a node: NodeBuildRegistry, in process).
// The source digest the builder computes from the extracted tree must be the one the request
// names (the tar is reproducible, so extracting and packing it again gives the same bytes):
// otherwise the build is refused rather than tagged with a digest nobody asked for.
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { x as extractTar } from 'tar';
import { OmniError } from '../errors.js';
import type { BuildTaskRequest } from '../../protocol/forge/build-request.js';
import { buildRecordKey, buildRecordValue, depsHintTag } from '../../protocol/forge/build-request.js';
import { DEPS_CACHE_REPO, Forge, type BuildEvents, type BuildRegistry, type BuildResult, type DockerfileBuild } from './builder.js';
import { MAX_LAYER_ENTRIES } from './layer.js';
import type { StepRunner } from './runner.js';

export interface BuildTaskDeps {
  registry: BuildRegistry;
  runner: StepRunner;
  /** Where the task's work directories go (removed after the build). */
  workRoot: string;
  dockerfileBuild?: DockerfileBuild;
  /** Writes the build record (forge/builds/REPO/sha-<source digest>) to the replicated KV. */
  writeRecord?(key: string, value: string): Promise<void>;
  now?: () => number;
}

/** Extracts a source tar.gz into `dir`: regular files, directories and symlinks only, at most `maxBytes` of files. */
export async function extractSource(tarGz: string, dir: string, maxBytes: number): Promise<void> {
  let bytes = 0;
  let entries = 0;
  let refused: string | undefined;
  await extractTar({
    file: tarGz,
    cwd: dir,
    strict: true,
    preserveOwner: false,
    filter: (path, entry) => {
      const e = entry as { type?: string; size?: number };
      entries++;
      bytes += e.size ?? 0;
      if (entries > MAX_LAYER_ENTRIES) refused ??= `the source has more than ${MAX_LAYER_ENTRIES} entries`;
      else if (bytes > maxBytes) refused ??= `the source is over ${maxBytes} bytes`;
      else if (!['File', 'OldFile', 'ContiguousFile', 'Directory', 'SymbolicLink'].includes(e.type ?? '')) refused ??= `the source holds ${path.slice(0, 200)}, of type ${e.type}: only files, directories and symbolic links are built`;
      return refused === undefined;
    },
  });
  if (refused) throw new OmniError('INVALID', refused);
}

/** Runs one build request: source from the registry, Forge's build, the build record. */
export async function runBuildTask(req: BuildTaskRequest, d: BuildTaskDeps, ev: BuildEvents = {}, signal?: AbortSignal): Promise<BuildResult> {
  await mkdir(d.workRoot, { recursive: true });
  const work = await mkdtemp(join(d.workRoot, 'task-'));
  try {
    ev.stage?.('fetch source');
    const tarGz = join(work, 'source.tar.gz');
    await d.registry.downloadBlob(req.repo, req.sourceBlob, tarGz);
    if ((await stat(tarGz)).size > req.maxSourceBytes) throw new OmniError('TOO_LARGE', `the source blob is over ${req.maxSourceBytes} bytes (--max-source)`);
    const dir = join(work, 'src');
    await mkdir(dir);
    await extractSource(tarGz, dir, req.maxSourceBytes);
    await rm(tarGz);
    signal?.throwIfAborted();
    const forge = new Forge(d.registry, d.runner, join(work, 'forge'), d.dockerfileBuild);
    const r = await forge.build({ dir, repo: req.repo, tags: req.tags, maxSourceBytes: req.maxSourceBytes, rebuild: req.rebuild, ...(req.dockerfile !== undefined ? { dockerfile: req.dockerfile } : {}), ...(req.buildArgs ? { buildArgs: req.buildArgs } : {}), ...(req.target !== undefined ? { target: req.target } : {}), ...(signal ? { signal } : {}) }, ev);
    if (r.sourceDigest !== req.sourceDigest) throw new OmniError('INVALID', `the extracted source has digest ${r.sourceDigest}, not ${req.sourceDigest} as the request says`);
    if (d.writeRecord && !r.reused) await d.writeRecord(buildRecordKey(r.repository, r.sourceDigest), buildRecordValue(r, (d.now ?? Date.now)()));
    if (req.depsHint && r.depsKey) await tagDepsHint(d.registry, req.depsHint, r.depsKey).catch((err: Error) => ev.log?.('cache', `cannot record the dependency layer under the deps hint: ${err.message}`));
    return r;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Tags the dependency layer of `depsKey` in forge-cache/deps also as lock-<hint hex>, so the
 * scheduler can tell which nodes hold the layer a later build with the same lockfile needs (the
 * real key also names the base image digest, which only the node that builds resolves).
 */
export async function tagDepsHint(reg: BuildTaskDeps['registry'], hint: string, depsKey: string): Promise<void> {
  const digest = await reg.resolveTag(DEPS_CACHE_REPO, depsKey.slice('sha256:'.length));
  if (!digest) return;
  const tag = depsHintTag(hint);
  if ((await reg.resolveTag(DEPS_CACHE_REPO, tag)) === digest) return;
  const m = await reg.manifest(DEPS_CACHE_REPO, digest);
  await reg.putManifest(DEPS_CACHE_REPO, tag, m.bytes, m.mediaType);
}
