// Build steps in a container from the runtime base (omni build --runner docker): the engine
// pulls the base from the cluster's registry by digest (a loopback /v2/, which Docker trusts
// without TLS), the step's directory is bind-mounted at /work, the command runs with sh -c as
// root, its output streamed line by line (the last lines kept for a failure). The layers are
// still written by Forge from the directory afterwards, so they stay reproducible.
import Docker from 'dockerode';
import { DockerLogDemux } from '../apps/drivers/docker.js';
import { OmniError } from '../errors.js';
import { LineTail, StepFailed, DEFAULT_STEP_TIMEOUT_MS, type StepRequest, type StepRunner } from './runner.js';

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

export class DockerRunner implements StepRunner {
  readonly kind = 'docker';
  constructor(
    private readonly docker: Docker,
    private readonly base: BaseResolver,
  ) {}

  async run(req: StepRequest, onLine: (line: string) => void): Promise<void> {
    if (!req.image) throw new OmniError('INVALID', `step '${req.step}' has no runtime base to run in`);
    const image = await this.base(req.image);
    const tail = new LineTail(onLine);
    const env = Object.entries({ ...req.env, HOME: '/tmp' }).map(([k, v]) => `${k}=${v}`);
    const c = await this.docker.createContainer({
      Image: image,
      Cmd: ['/bin/sh', '-c', req.command],
      WorkingDir: '/work',
      Env: env,
      User: '0:0',
      Labels: { 'omni.forge.step': req.step },
      HostConfig: { Binds: [`${req.cwd}:/work`], Init: true },
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
    } finally {
      clearTimeout(timer);
      req.signal?.removeEventListener('abort', onAbort);
      await c.remove({ force: true }).catch(() => undefined);
    }
  }
}
