// A Dockerfile project, built by the Docker engine through dockerode (Forge's escape hatch for
// anything it does not detect): the build context is Forge's reproducible source tar (the
// .gitignore/.dockerignore rules already applied), the engine's log is streamed line by line, a
// failed instruction becomes a StepFailed naming it with the last log lines, and the image is
// read back with `docker save` (a tar the CLI pushes like omni images import). The engine's
// classic builder does not give reproducible digests; Forge's own builds do.
import { createReadStream, createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import Docker from 'dockerode';
import { OmniError } from '../errors.js';
import { LineTail, StepFailed } from './runner.js';

export interface DockerBuildOptions {
  dockerfile: string;
  /** The engine-local tag of the result. */
  tag: string;
  buildArgs?: Record<string, string>;
  /** The stage to build (a multi-stage Dockerfile's target). */
  target?: string;
  /** What the build task reserved: each instruction's container is held to it. */
  limits?: BuildLimits;
  signal?: AbortSignal;
}

/** A build's share of its node (the build task's reserved resources), enforced on the engine's containers. */
export interface BuildLimits {
  /** Cores (fractional). */
  cpu: number;
  memoryBytes: number;
}

const CPU_PERIOD_US = 100_000;

/** The classic builder's limits for each RUN container (memory without extra swap, a CPU quota). */
export function buildLimitParams(l: BuildLimits | undefined): { memory?: number; memswap?: number; cpuperiod?: number; cpuquota?: number } {
  if (!l) return {};
  const out: { memory?: number; memswap?: number; cpuperiod?: number; cpuquota?: number } = {};
  if (l.memoryBytes > 0) Object.assign(out, { memory: l.memoryBytes, memswap: l.memoryBytes });
  if (l.cpu > 0) Object.assign(out, { cpuperiod: CPU_PERIOD_US, cpuquota: Math.max(1000, Math.round(l.cpu * CPU_PERIOD_US)) });
  return out;
}

/** The same for a container Forge runs itself (a step with --runner docker). */
export function containerLimits(l: BuildLimits | undefined): { Memory?: number; MemorySwap?: number; NanoCpus?: number } {
  if (!l) return {};
  return { ...(l.memoryBytes > 0 ? { Memory: l.memoryBytes, MemorySwap: l.memoryBytes } : {}), ...(l.cpu > 0 ? { NanoCpus: Math.round(l.cpu * 1e9) } : {}) };
}

/** Builds the gzip tar context at `contextPath`; resolves with the image id. */
export async function dockerBuild(docker: Docker, contextPath: string, o: DockerBuildOptions, onLine: (line: string) => void): Promise<string> {
  const tail = new LineTail(onLine);
  let step = 'docker build';
  const track = (line: string) => {
    const m = /^Step (\d+\/\d+) : (.*)$/.exec(line);
    if (m) step = `Dockerfile step ${m[1]} (${m[2].slice(0, 120)})`;
  };
  const stream = await docker.buildImage(createReadStream(contextPath) as unknown as NodeJS.ReadableStream, {
    t: o.tag,
    dockerfile: o.dockerfile,
    rm: true,
    forcerm: true,
    ...(o.buildArgs ? { buildargs: o.buildArgs } : {}),
    ...(o.target ? { target: o.target } : {}),
    ...buildLimitParams(o.limits),
  });
  const onAbort = () => (stream as unknown as { destroy?: () => void }).destroy?.();
  o.signal?.addEventListener('abort', onAbort, { once: true });
  let imageId: string | undefined;
  let error: string | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      docker.modem.followProgress(
        stream,
        (err) => (err ? reject(err) : resolve()),
        (ev: { stream?: string; error?: string; errorDetail?: { message?: string }; aux?: { ID?: string } }) => {
          if (ev.stream) {
            for (const l of ev.stream.split('\n')) if (l.trim()) (track(l), tail.push(l + '\n'));
          }
          if (ev.aux?.ID) imageId = ev.aux.ID;
          if (ev.error) {
            error = ev.errorDetail?.message ?? ev.error;
            tail.push(error + '\n');
          }
        },
      );
    });
  } catch (err) {
    if (o.signal?.aborted) throw new OmniError('INTERRUPTED', 'the Docker build was cancelled');
    throw new StepFailed(step, (err as Error).message.slice(0, 300), tail.tail);
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
  }
  tail.end();
  if (error) throw new StepFailed(step, error.slice(0, 300), tail.tail);
  if (!imageId) imageId = (await docker.getImage(o.tag).inspect()).Id;
  return imageId;
}

/** `docker save` of one image into a tar file. */
export async function dockerSave(docker: Docker, ref: string, out: string): Promise<void> {
  const s = await docker.getImage(ref).get();
  await pipeline(s, createWriteStream(out));
}
