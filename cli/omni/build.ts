// omni build DIR: Forge builds the source in DIR into an image of the cluster's registry, tagged
// REPO:sha-<source digest> (and any --tag). The source (filtered by .gitignore/.dockerignore,
// at most --max-source bytes) is uploaded content-addressed into the registry; detection,
// dependency layer (cached in the registry for every node), build steps and the reproducible
// layers are node/forge/builder.ts. By default the build runs on a node, as a scheduled
// at-most-once job task (cli/omni/build-remote.ts, node/apps/drivers/forge.ts); --local runs it
// where the CLI runs (this host's runtimes or engine), writing through the /v2/ of the node the
// CLI talks to. A Dockerfile project is built by a node's Docker engine (a node whose engine
// answers: the build asks for driver.docker), or by this host's (DOCKER_HOST) with --local.
import { basename, join, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { parse, printJson, formatBytes, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect, credentials } from './connection.js';
import type { ApiClient } from '../../node/api/client.js';
import { registryFor } from './registry-client.js';
import { remoteBuild } from './build-remote.js';
import { Progress } from './progress.js';
import { OmniError } from '../../node/errors.js';
import { existsSync } from 'node:fs';
import Docker from 'dockerode';
import { Forge, MAX_SOURCE_BYTES, type BuildResult, type DockerfileBuild } from '../../node/forge/builder.js';
import { engineDockerfileBuild } from '../../node/forge/dockerfile-build.js';
import { DockerRunner, registryBases } from '../../node/forge/docker-runner.js';
import type { StepRunner } from '../../node/forge/runner.js';
import type { FailoverRegistry } from './registry-client.js';
import { HostRunner, StepFailed } from '../../node/forge/runner.js';
import { isRepositoryName, isTag } from '../../protocol/registry/reference.js';
import { buildRecordKey, buildRecordValue, isBuildAppName } from '../../protocol/forge/build-request.js';

const USAGE = `usage: omni build DIR [--repo REPOSITORY] [--tag TAG]... [-f] [--local] [--json] [flags]
       omni build --cancel BUILD

Builds the source in DIR into an image in the cluster's registry (Forge): detects what it is
(Dockerfile, Node.js with package.json + package-lock.json, Python with requirements.txt or
pyproject.toml, a static site with index.html, a Procfile; .omni/build.yaml overrides), installs
its dependencies into a layer cached by the lockfile's hash, runs its build steps, and writes
reproducible layers on a runtime base (omni/node:24, omni/python:3, omni/static:1 — make them
with scripts/forge-base.sh). The image is tagged REPOSITORY:sha-<source digest>, so the same
source gives the same tag and digest on any node.

  --repo REPOSITORY  where the image goes (default: the directory's name)
  --tag TAG          another tag (repeatable)
  --max-source SIZE  refuse a source larger than this (default 256M; files left out by
                     .gitignore/.dockerignore do not count)
  --rebuild          build even when REPOSITORY:sha-<source digest> exists (by default the same
                     source is built once: its image is reused)
  --runner host|docker
                     where the dependency install and build steps run: host (default: this
                     host's node/npm/python) or docker (a container from the runtime base,
                     pulled by this host's engine from the registry; DOCKER_HOST). With
                     .devcontainer/devcontainer.json the default is docker, in its environment:
                     image (of the cluster's registry or this engine; never pulled from the
                     internet) or build.dockerfile, containerEnv, remoteUser, postCreateCommand
                     (run first; features are refused)
  --follow, -f       stream the build's log on stderr (the default, unless -q)
  --detach, -d       submit the build and print its name (follow it with omni logs BUILD)
  --cancel BUILD     stop a build under way (the name omni build printed; omni stop BUILD too)
  --local            build here, where the CLI runs (this host's node/npm/python or engine), as
                     before builds ran on nodes
  --quiet, -q        no step logs on stderr
      --registry URL the /v2/ registry to use (default: the one of the node the CLI talks to)
${CONNECTION_HELP}
The build runs on a node of the cluster as a job (named build-<hash of the repository, source
digest and options>): placed where its resources (.omni/build.yaml resources:, default 1 core,
1G) and the runtime base's architecture fit; its steps run on that node's runtimes (--runner
host) or its Docker engine (--runner docker). The same build submitted twice, at once or later,
is one build: the second omni build attaches to it and gets its result. A Dockerfile project
is built by the Docker engine of a node that has one (its FROM images from the cluster's
registry or that engine; --local: this host's engine, DOCKER_HOST). A failing step is named with
the last lines of its log. Ctrl-C stops the build.
`;

const FLAGS = {
  ...CONNECTION_FLAGS,
  repo: { type: 'string' as const },
  tag: { type: 'string' as const, multiple: true },
  'max-source': { type: 'string' as const },
  quiet: { type: 'boolean' as const, short: 'q' },
  rebuild: { type: 'boolean' as const },
  runner: { type: 'string' as const },
  registry: { type: 'string' as const },
  local: { type: 'boolean' as const },
  follow: { type: 'boolean' as const, short: 'f' },
  detach: { type: 'boolean' as const, short: 'd' },
  cancel: { type: 'string' as const },
};


/** A repository name from a directory name: lower case, other characters → '-'. */
export function repoFromDir(dir: string): string {
  const name = basename(resolve(dir))
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '');
  return name || 'app';
}

export { buildRecordKey } from '../../protocol/forge/build-request.js';

function sizeFlag(v: string | undefined): number {
  if (v === undefined) return MAX_SOURCE_BYTES;
  const m = /^(\d+)([KMG])?i?B?$/i.exec(v.trim());
  if (!m) throw new UsageError(`--max-source must be a size like 64M or 1G, got ${v}`);
  return Number(m[1]) * { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[(m[2] ?? '').toUpperCase() as '']!;
}

/** The engine's unix socket (DOCKER_HOST=unix://… or the default), or undefined when there is none. */
function dockerSocket(): string | undefined {
  const h = process.env.DOCKER_HOST;
  const p = !h ? '/var/run/docker.sock' : h.startsWith('unix://') ? h.slice('unix://'.length) : h.startsWith('/') ? h : undefined;
  return p && existsSync(p) ? p : undefined;
}

/** A Dockerfile project built here (--local): this host's engine builds it (FROM images from the cluster's registry or the engine), `docker save` is pushed like omni images import. */
function dockerfileBuilder(reg: FailoverRegistry, progress: Progress, values: Record<string, unknown>): DockerfileBuild | undefined {
  const socketPath = dockerSocket();
  if (!socketPath) return undefined;
  const docker = new Docker({ socketPath });
  const bases = registryBases(docker, new URL(reg.url).host, credentials(values).token, (r, t) => reg.resolveTag(r, t));
  return engineDockerfileBuild({ docker, registry: reg, bases, progress });
}

/** The flags omni build and omni run DIR share (how to build). */
export const BUILD_FLAGS = {
  'max-source': { type: 'string' as const },
  quiet: { type: 'boolean' as const, short: 'q' },
  rebuild: { type: 'boolean' as const },
  runner: { type: 'string' as const },
  registry: { type: 'string' as const },
  local: { type: 'boolean' as const },
};

export interface BuildOptions {
  dir: string;
  repo: string;
  tags: string[];
  /** Label of the progress line. */
  label: string;
  /** omni build -d: submit the build on the cluster and return (the result has only its name). */
  detach?: boolean;
  /** A Docker build of this Dockerfile with these arguments and target (omni compose build:). */
  dockerfile?: string;
  buildArgs?: Record<string, string>;
  target?: string;
}

/** Checks the build flags before anything is connected (usage errors first). */
export function buildFlags(values: Record<string, unknown>): { maxSourceBytes: number; runnerKind: 'host' | 'docker' } {
  const maxSourceBytes = sizeFlag(values['max-source'] as string | undefined);
  const runnerKind = (values.runner as string | undefined) ?? 'host';
  if (runnerKind !== 'host' && runnerKind !== 'docker') throw new UsageError(`--runner must be host or docker, got ${runnerKind}`);
  return { maxSourceBytes, runnerKind };
}

/**
 * Builds DIR through the registry of the node `client` talks to (or --registry), writes the build
 * record, and returns the result (StepFailed when a step fails; INTERRUPTED on Ctrl-C).
 */
export async function forgeBuild(client: ApiClient, values: Record<string, unknown>, o: BuildOptions): Promise<BuildResult & { build?: string }> {
  const { maxSourceBytes } = buildFlags(values);
  // A devcontainer is a container build environment: --runner docker unless told otherwise.
  const hasDev = existsSync(join(o.dir, '.devcontainer', 'devcontainer.json'));
  const runnerKind = (values.runner as string | undefined) ?? (hasDev ? 'docker' : 'host');
  // On a node of the cluster unless --local (Dockerfile projects too: on a node whose engine answers).
  if (values.local !== true) {
    const remote = await onCluster(client, values, o, maxSourceBytes, runnerKind as 'host' | 'docker');
    if (remote) return remote;
  }
  return localBuild(client, values, o, maxSourceBytes, runnerKind);
}

/**
 * The build on a node of the cluster (build-remote.ts); undefined when the cluster does not take
 * build jobs (nodes of a version without the forge driver refuse the spec), then the build runs here.
 */
async function onCluster(client: ApiClient, values: Record<string, unknown>, o: BuildOptions, maxSourceBytes: number, runnerKind: 'host' | 'docker'): Promise<(BuildResult & { build: string }) | undefined> {
  const ac = new AbortController();
  const onSigint = () => ac.abort();
  process.once('SIGINT', onSigint);
  try {
    const reg = await registryFor(client, values, ac.signal);
    const quiet = values.quiet === true;
    // The build's log on stderr unless -q (as when the build ran here), also with --json (stdout).
    const follow = values.follow === true || !quiet;
    return await remoteBuild(client, reg, {
      dir: o.dir,
      repo: o.repo,
      tags: o.tags,
      label: o.label,
      maxSourceBytes,
      runnerKind,
      rebuild: values.rebuild === true,
      follow,
      quiet,
      detach: o.detach === true,
      signal: ac.signal,
      ...(o.dockerfile !== undefined ? { dockerfile: o.dockerfile } : {}),
      ...(o.buildArgs ? { buildArgs: o.buildArgs } : {}),
      ...(o.target !== undefined ? { target: o.target } : {}),
      onSubmitted: (name, action) => {
        if (!quiet) process.stderr.write(`build ${name}: ${action} (omni logs ${name}; omni build --cancel ${name})\n`);
      },
    });
  } catch (err) {
    if (err instanceof OmniError && err.code === 'INVALID_SPEC' && /driver: must be docker, process or mock$/.test(err.message)) {
      process.stderr.write(`warning: the cluster does not run builds on its nodes (${err.message.slice(0, 200)}); building here (--local)\n`);
      return undefined;
    }
    throw err;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

/** --local: the build runs here, through the registry of the node the CLI talks to (or --registry). */
async function localBuild(client: ApiClient, values: Record<string, unknown>, o: BuildOptions, maxSourceBytes: number, runnerKind: string): Promise<BuildResult> {
  const ac = new AbortController();
  const onSigint = () => ac.abort();
  process.once('SIGINT', onSigint);
  const progress = new Progress(o.label);
  const quiet = values.quiet === true;
  const dir = o.dir;
  try {
    const reg = await registryFor(client, values, ac.signal);
    let runner: StepRunner = new HostRunner();
    if (runnerKind === 'docker') {
      const socketPath = dockerSocket();
      if (!socketPath) {
        if (values.runner === undefined) throw new OmniError('UNAVAILABLE', `${o.dir} has .devcontainer/devcontainer.json, whose build environment needs a Docker engine (set DOCKER_HOST=unix:///path/docker.sock); --runner host builds on this host without it`);
        throw new OmniError('UNAVAILABLE', '--runner docker: no Docker engine (set DOCKER_HOST=unix:///path/docker.sock)');
      }
      const url = new URL(reg.url);
      const docker = new Docker({ socketPath });
      runner = new DockerRunner(docker, registryBases(docker, url.host, credentials(values).token, (r, t) => reg.resolveTag(r, t)));
    }
    const forge = new Forge(reg, runner, join(tmpdir(), 'omni-forge'), dockerfileBuilder(reg, progress, values));
    const r = await forge.build(
      { dir, repo: o.repo, tags: o.tags, maxSourceBytes, rebuild: values.rebuild === true, signal: ac.signal, ...(o.dockerfile !== undefined ? { dockerfile: o.dockerfile } : {}), ...(o.buildArgs ? { buildArgs: o.buildArgs } : {}), ...(o.target !== undefined ? { target: o.target } : {}) },
      {
        stage: (s) => progress.setLabel(`${basename(dir)}: ${s}`),
        log: (step, line) => {
          if (quiet) return;
          progress.end();
          process.stderr.write(`[${step}] ${line}\n`);
        },
      },
    );
    progress.end();
    // The build record (small, in the replicated KV under forge/): which image a source digest gave.
    if (!r.reused) {
      await client.put(`/v1/kv/${encodeURIComponent(buildRecordKey(r.repository, r.sourceDigest))}`, { value: buildRecordValue(r, Date.now()) }).catch((err: Error) => process.stderr.write(`warning: the build record was not written: ${err.message}\n`));
    }
    return r;
  } catch (err) {
    progress.end();
    if (ac.signal.aborted) throw new OmniError('INTERRUPTED', 'build cancelled (Ctrl-C)');
    throw err;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

/** A failed step as omni build reports it (exit 1). */
export function reportStepFailed(err: StepFailed, json: boolean, cmd: string): number {
  if (json) printJson({ error: { code: err.code, step: err.step, exit: err.exit, tail: err.tail, message: err.message } });
  else process.stderr.write(`${cmd}: ${err.message}\n`);
  return 1;
}

export async function build(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, FLAGS, USAGE);
  if (values.cancel !== undefined) {
    if (positionals.length !== 0) throw new UsageError(`omni build --cancel BUILD takes no DIR\n\n${USAGE}`);
    const name = values.cancel as string;
    if (!isBuildAppName(name)) throw new UsageError(`--cancel ${name}: not a build name (build-<34 hex digits>, as omni build printed it)`);
    const client = connect(values);
    try {
      await client.post(`/v1/apps/${encodeURIComponent(name)}/stop`, {});
      if (values.json) printJson({ build: name, cancelled: true });
      else process.stdout.write(`build ${name}: stopped\n`);
      return 0;
    } finally {
      client.close();
    }
  }
  if (positionals.length !== 1) throw new UsageError(`omni build needs one DIR\n\n${USAGE}`);
  const dir = resolve(positionals[0]);
  const repo = (values.repo as string | undefined) ?? repoFromDir(dir);
  if (!isRepositoryName(repo)) throw new UsageError(`--repo ${repo}: not a repository name (lower case letters, digits, . _ - and / between parts)`);
  const tags = (values.tag as string[] | undefined) ?? [];
  for (const t of tags) if (!isTag(t)) throw new UsageError(`--tag ${t}: not a tag (letters, digits, _ . -; at most 128)`);
  buildFlags(values);
  const client = connect(values);
  try {
    const r = await forgeBuild(client, values, { dir, repo, tags, label: `building ${basename(dir)}`, detach: values.detach === true });
    if (values.json) return printJson(r), 0;
    if (values.detach && r.build && !r.digest) {
      process.stdout.write(`${r.build}\n`);
      return 0;
    }
    for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
    const lines = [
      `${r.reused ? 'reused' : 'built'} ${r.repository}@${r.digest}${r.reused ? ' (this source was built before; --rebuild builds it again)' : ''}`,
      `  type     ${r.type} (${r.detectedBy.join(', ')})${r.runtime ? ` on ${r.runtime}` : ' (built by the Docker engine)'}`,
      `  source   ${r.sourceDigest}${r.sourceUploaded ? '' : ' (already in the registry)'}`,
      `  tags     ${r.tags.map((t) => `${r.repository}:${t}`).join(', ')}`,
      ...(r.depsKey ? [`  deps     ${r.depsReused ? 'reused' : 'built'} (key ${r.depsKey.slice(0, 19)})`] : []),
      `  size     ${formatBytes(r.imageBytes)} compressed${r.reused ? '' : `, ${r.layers.length} Forge layer(s) on the base`}`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
    return 0;
  } catch (err) {
    if (err instanceof StepFailed) return reportStepFailed(err, values.json === true, 'omni build');
    throw err;
  } finally {
    client.close();
  }
}
