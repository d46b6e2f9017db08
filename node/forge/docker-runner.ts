// Build steps in a container from the runtime base (omni build --runner docker): the engine
// pulls the base from the cluster's registry by digest (a loopback /v2/, which Docker trusts
// without TLS), the step's directory is bind-mounted at /work, the command runs with sh -c as
// root, its output streamed line by line (the last lines kept for a failure). The layers are
// still written by Forge from the directory afterwards, so they stay reproducible.
// A devcontainer (.devcontainer/devcontainer.json) gives the environment instead: its image (from
// the cluster's registry, else the engine's own images; never pulled from elsewhere) or its
// build.dockerfile built by the engine (FROM lines naming cluster-registry images are pulled from
// the registry and tagged under that name first), its containerEnv and remoteUser.
import { chmod, readdir, readFile, lstat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { createHash } from 'node:crypto';
import Docker from 'dockerode';
import { DockerLogDemux } from '../apps/drivers/docker.js';
import { OmniError } from '../errors.js';
import { devcontainerPath, isRemoteImage, type DevContainer } from '../../protocol/forge/devcontainer.js';
import { collectTree, writeLayer } from './layer.js';
import { dockerfileFromImages } from '../../protocol/forge/dockerfile.js';
import { containerLimits, dockerBuild, type BuildLimits } from './docker-build.js';
import { LineTail, StepFailed, DEFAULT_STEP_TIMEOUT_MS, type BuildEnvironment, type StepRequest, type StepRunner } from './runner.js';

const MAX_DEV_CONTEXT_BYTES = 256 * 1024 * 1024;

export interface BaseResolver {
  /** The engine-local reference of a runtime base (pulled when missing). */
  (runtime: string): Promise<string>;
}

/** Pulls `host/repo@digest` with the registry credential unless the engine has it. */
export function registryBases(docker: Docker, hostPort: string, token: string | undefined, resolveTag: (repo: string, tag: string) => Promise<string | undefined>): BaseResolver {
  const done = new Map<string, string>();
  return async (runtime) => {
    const hit = done.get(runtime);
    if (hit) return hit;
    const at = runtime.indexOf('@');
    const colon = runtime.lastIndexOf(':');
    const repo = at > 0 ? runtime.slice(0, at) : colon > 0 ? runtime.slice(0, colon) : runtime;
    const digest = at > 0 ? runtime.slice(at + 1) : await resolveTag(repo, colon > 0 ? runtime.slice(colon + 1) : 'latest');
    if (!digest) throw new OmniError('NOT_FOUND', `no runtime base image ${runtime} in the cluster's registry (scripts/forge-base.sh makes them)`);
    const ref = `${hostPort}/${repo}@${digest}`;
    const have = await docker.getImage(ref).inspect().then(() => true, () => false);
    if (!have) {
      const stream = await docker.pull(ref, { authconfig: { username: 'omni', password: token ?? '', serveraddress: hostPort } });
      await new Promise<void>((resolve, reject) => docker.modem.followProgress(stream, (err) => (err ? reject(err) : resolve())));
    }
    done.set(runtime, ref);
    return ref;
  };
}

/** A cluster-registry image pulled into the engine (when there is a registry), else an image the engine has; undefined if neither. */
export async function engineImage(docker: Docker, base: BaseResolver | undefined, image: string): Promise<BuildEnvironment | undefined> {
  const fromRegistry = base
    ? await base(image.replace(/^(localhost|127\.\d+\.\d+\.\d+)(:\d+)?\//, '')).catch((err: OmniError) => {
        if (err.code === 'NOT_FOUND') return undefined;
        throw err;
      })
    : undefined;
  if (fromRegistry) return { image: fromRegistry, id: fromRegistry.slice(fromRegistry.indexOf('@') + 1) };
  const info = await docker.getImage(image).inspect().catch(() => undefined);
  return info ? { image: info.Id, id: info.Id } : undefined;
}

/**
 * Makes every image a Dockerfile builds FROM available to the engine under the name the Dockerfile
 * uses (`FROM $BASE` resolved from its ARG default or `buildArgs`): one of the cluster's registry is pulled and tagged so, else the engine's own is used. One
 * of another registry, or in neither, is refused before the build (nothing can be pulled from the
 * internet). `label` names the Dockerfile in the errors.
 */
export async function prepareFromImages(docker: Docker, base: BaseResolver | undefined, text: string, label: string, buildArgs: Record<string, string> = {}): Promise<void> {
  for (const from of dockerfileFromImages(text, buildArgs).images) {
    if (isRemoteImage(from)) throw new OmniError('NOT_BUILDABLE', `${label}: FROM ${from} is in another registry and Forge cannot pull from the internet: use an image of the cluster's registry (omni images import) or one this node's engine has`);
    const found = await engineImage(docker, base, from);
    if (!found) throw new OmniError('NOT_FOUND', `${label}: FROM ${from} is neither in the cluster's registry nor in this host's Docker engine: import it (omni images import) or push it first`);
    if (found.image !== from) {
      const colon = from.lastIndexOf(':');
      const [repo, tag] = colon > from.lastIndexOf('/') ? [from.slice(0, colon), from.slice(colon + 1)] : [from, 'latest'];
      await docker.getImage(found.image).tag({ repo, tag });
    }
  }
}

export class DockerRunner implements StepRunner {
  readonly kind = 'docker';
  private readonly committed: string[] = [];

  async dispose(): Promise<void> {
    for (const ref of this.committed.splice(0)) await this.docker.getImage(ref).remove({ force: true }).catch(() => undefined);
  }

  constructor(
    private readonly docker: Docker,
    private readonly base: BaseResolver,
    /** The build task's reservation, held for each step's container and a devcontainer's build. */
    private readonly limits?: BuildLimits,
  ) {}

  async devEnvironment(dev: DevContainer, ctx: { dir: string; work: string; signal?: AbortSignal; log: (line: string) => void }): Promise<BuildEnvironment> {
    if (dev.image) {
      const env = await engineImage(this.docker, this.base, dev.image);
      if (!env) throw new OmniError('NOT_FOUND', `.devcontainer/devcontainer.json: image ${dev.image} is neither in the cluster's registry nor in this host's Docker engine, and Forge cannot pull from the internet: import it (omni images import) or push it first`);
      return env;
    }
    const b = dev.build!;
    const ctxRel = devcontainerPath(b.context);
    const dfRel = devcontainerPath(b.dockerfile);
    if (ctxRel === undefined || dfRel === undefined) throw new OmniError('NOT_BUILDABLE', '.devcontainer/devcontainer.json: build.context and build.dockerfile must stay inside the source tree');
    const ctxDir = join(ctx.dir, ctxRel);
    const dockerfile = relative(ctxDir, join(ctx.dir, dfRel)).split(sep).join('/');
    if (dockerfile.startsWith('..')) throw new OmniError('NOT_BUILDABLE', `.devcontainer/devcontainer.json: build.dockerfile (${dfRel}) must be inside build.context (${ctxRel || '.'})`);
    const text = await readFile(join(ctx.dir, dfRel), 'utf8').catch(() => undefined);
    if (text === undefined) throw new OmniError('NOT_BUILDABLE', `.devcontainer/devcontainer.json: no ${dfRel}`);
    await prepareFromImages(this.docker, this.base, text, dfRel, b.args);
    const tree = await collectTree(ctxDir, { prefix: '', excludeNames: ['.git'], maxBytes: MAX_DEV_CONTEXT_BYTES });
    const tarPath = join(ctx.work, 'devcontainer-context.tar.gz');
    const blob = await writeLayer(tree.entries, tarPath);
    const tag = `omni-forge-dev/build:${createHash('sha256').update(blob.digest + dockerfile + JSON.stringify(b.args)).digest('hex').slice(0, 32)}`;
    const id = await dockerBuild(this.docker, tarPath, { dockerfile, tag, buildArgs: b.args, ...(this.limits ? { limits: this.limits } : {}), ...(ctx.signal ? { signal: ctx.signal } : {}) }, ctx.log);
    return { image: id, id };
  }

  async run(req: StepRequest, onLine: (line: string) => void): Promise<void | string> {
    if (!req.envImage && !req.image) throw new OmniError('INVALID', `step '${req.step}' has no runtime base to run in`);
    const image = req.envImage ?? (await this.base(req.image!));
    const tail = new LineTail(onLine);
    const env = Object.entries({ ...req.env, HOME: '/tmp' }).map(([k, v]) => `${k}=${v}`);
    const user = req.user ?? '0:0';
    // Another user than root must be able to write the step's directory (a work copy of the source).
    if (!/^(root|0)(:|$)/.test(user)) await openUp(req.cwd);
    const c = await this.docker.createContainer({
      Image: image,
      Cmd: ['/bin/sh', '-c', req.command],
      WorkingDir: '/work',
      Env: env,
      User: user,
      Labels: { 'omni.forge.step': req.step },
      HostConfig: { Binds: [`${req.cwd}:/work`], Init: true, ...containerLimits(this.limits) },
    });
    const demux = new DockerLogDemux();
    const onAbort = () => void c.kill().catch(() => undefined);
    req.signal?.addEventListener('abort', onAbort, { once: true });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      void c.kill().catch(() => undefined);
    }, req.timeoutMs ?? DEFAULT_STEP_TIMEOUT_MS);
    try {
      const stream = (await c.attach({ stream: true, stdout: true, stderr: true })) as NodeJS.ReadableStream;
      const ended = new Promise<void>((resolve) => {
        stream.on('data', (chunk: Buffer) => {
          for (const l of demux.push(chunk)) tail.push(l + '\n');
        });
        stream.on('end', () => resolve());
        stream.on('close', () => resolve());
      });
      await c.start();
      const { StatusCode } = (await c.wait()) as { StatusCode: number };
      await Promise.race([ended, new Promise((r) => setTimeout(r, 2000))]);
      for (const l of demux.end()) tail.push(l + '\n');
      tail.end();
      if (req.signal?.aborted) throw new OmniError('INTERRUPTED', `step '${req.step}' was cancelled`);
      if (timedOut) throw new StepFailed(req.step, `ran longer than ${(req.timeoutMs ?? DEFAULT_STEP_TIMEOUT_MS) / 1000}s`, tail.tail);
      if (StatusCode !== 0) throw new StepFailed(req.step, `exit status ${StatusCode}`, tail.tail);
      if (req.commit) {
        const tag = c.id.slice(0, 32);
        const { Id } = (await c.commit({ repo: 'omni-forge-dev/env', tag })) as { Id: string };
        this.committed.push(`omni-forge-dev/env:${tag}`);
        return Id;
      }
    } finally {
      clearTimeout(timer);
      req.signal?.removeEventListener('abort', onAbort);
      await c.remove({ force: true }).catch(() => undefined);
    }
  }
}

/** Makes a work directory writable by any user (u+rw → a+rw, directories a+rwx; the executable bit of files is kept). */
async function openUp(dir: string): Promise<void> {
  const st = await lstat(dir);
  if (st.isSymbolicLink()) return;
  if (st.isDirectory()) {
    await chmod(dir, 0o777);
    for (const n of await readdir(dir)) await openUp(join(dir, n));
  } else if (st.isFile()) await chmod(dir, st.mode & 0o111 ? 0o777 : 0o666);
}
