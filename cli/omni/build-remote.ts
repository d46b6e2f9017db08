// omni build on the cluster (the default): the CLI packs the source (the reproducible tar the
// builder would write) and uploads it content-addressed into the registry, then submits the build
// as an exclusive `job` app driven by the `forge` task driver (node/apps/drivers/forge.ts). The
// scheduler places it on a node that has the build's resources (.omni/build.yaml `resources:`,
// default 1 core and 1 GiB) and, when the runtime base says, its architecture; that node runs the
// same builder as `omni build --local`, reading the source and writing the image through its own
// registry in process. The app's name is derived from the request (repository, source digest,
// options: protocol/forge/build-request.ts), so a second identical `omni build` — concurrent or
// later — submits the same app (`unchanged`) and attaches to it: one build, one result. A failed
// or stopped build is started again (a new run of the job); --rebuild starts a new run of a
// finished one. Output is the task's log (followed with -f, by default on a terminal); the
// result (or the error, with the failing step and its last lines) is its last line.
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { homedir } from 'node:os';
import { join, basename } from 'node:path';
import type { ApiClient } from '../../node/api/client.js';
import { OmniError } from '../../node/errors.js';
import { dirView, ignoreRules, packSource, putBlob, type BuildRegistry, type BuildResult } from '../../node/forge/builder.js';
import { StepFailed } from '../../node/forge/runner.js';
import { detect } from '../../protocol/forge/detect.js';
import { BUILD_ERROR_MARKER, BUILD_RESULT_MARKER, buildAppName, buildCommand, buildIdentity, type BuildTaskRequest } from '../../protocol/forge/build-request.js';
import { sourceTag } from '../../protocol/forge/image.js';
import type { InspectView, JobView } from './app-io.js';
import { Progress } from './progress.js';

const POLL_MS = 300;
/** What a Dockerfile build named by compose reserves on its node (the engine's work). */
const DOCKER_BUILD_RESOURCES = { cpu: 1, memoryMB: 1024 };
/** After `start` of a stopped build, its old STOPPED phase is ignored this long (until the new run shows). */
const RESTART_SEEN_MS = 10_000;
/** Log lines read back to find the result or the error. */
const RESULT_TAIL_LINES = 60;

export interface RemoteBuildOptions {
  dir: string;
  repo: string;
  tags: string[];
  label: string;
  maxSourceBytes: number;
  runnerKind: 'host' | 'docker';
  rebuild: boolean;
  /** Stream the build's log to stderr. */
  follow: boolean;
  quiet: boolean;
  /** Return once submitted (the result then has only the build's name). */
  detach?: boolean;
  /** A Docker build of this Dockerfile, with these arguments and target (omni compose's build: block). */
  dockerfile?: string;
  buildArgs?: Record<string, string>;
  target?: string;
  signal: AbortSignal;
  /** Told the build's app name once submitted (omni build prints it). */
  onSubmitted?(name: string, action: string): void;
}

/**
 * The deps hint of a build (BuildTaskRequest.depsHint): sha256 of the runtime, the install
 * command and the dependency key files' names and bytes; undefined when the dependency step needs
 * the whole source (its key then changes with every source) or there is none.
 */
export async function depsHintOf(dir: string, plan: { runtime?: string; deps?: { keyFiles: string[]; needsSource: boolean; install: string } }): Promise<string | undefined> {
  if (!plan.deps || plan.deps.needsSource) return undefined;
  const h = createHash('sha256').update(`omni-forge-lock/1\0${plan.runtime ?? ''}\0${plan.deps.install}\0`);
  for (const f of plan.deps.keyFiles) h.update(`${f}\0`).update(await readFile(join(dir, f)).catch(() => Buffer.alloc(0))).update('\0');
  return 'sha256:' + h.digest('hex');
}

export const sha256Hex = (s: string) => createHash('sha256').update(s).digest('hex');

/** The job app a build request is submitted as (one name per request: idempotent). */
export function buildAppSpec(req: BuildTaskRequest, resources: { cpu: number; memoryMB: number }, arch: string | undefined, needsEngine = false): Record<string, unknown> {
  // A Dockerfile build or one whose steps run in containers goes to a node whose engine answers.
  const constraints = [...(arch ? [`arch==${arch}`] : []), ...(needsEngine || req.runner === 'docker' ? ['driver.docker'] : [])];
  return {
    name: buildAppName(sha256Hex(buildIdentity(req))),
    type: 'job',
    driver: 'forge',
    command: buildCommand(req),
    // A failing step would fail again: no retries (a lost node fails the run; omni build again starts a new one).
    retries: 0,
    exclusive: true,
    resources: { cpu: resources.cpu, memoryMB: resources.memoryMB },
    ...(constraints.length ? { constraints } : {}),
  };
}

/** The architecture of a runtime base in the registry (its config's), undefined when it cannot be read. */
async function baseArch(reg: BuildRegistry, runtime: string, work: string): Promise<string | undefined> {
  try {
    const at = runtime.indexOf('@');
    const colon = runtime.lastIndexOf(':');
    const repo = at > 0 ? runtime.slice(0, at) : colon > 0 ? runtime.slice(0, colon) : runtime;
    const digest = at > 0 ? runtime.slice(at + 1) : await reg.resolveTag(repo, colon > 0 ? runtime.slice(colon + 1) : 'latest');
    if (!digest) return undefined;
    const m = await reg.manifest(repo, digest);
    const doc = JSON.parse(m.bytes.toString('utf8')) as { config?: { digest?: string; size?: number } };
    if (!doc.config?.digest || (doc.config.size ?? 0) > 1024 * 1024) return undefined;
    const p = join(work, 'base-config.json');
    await reg.downloadBlob(repo, doc.config.digest, p);
    const cfg = JSON.parse(await readFile(p, 'utf8')) as { architecture?: unknown };
    return typeof cfg.architecture === 'string' && /^[a-z0-9_]{1,32}$/.test(cfg.architecture) ? cfg.architecture : undefined;
  } catch {
    return undefined;
  }
}

/** The build's task (the newest of its run), once placed. */
function currentTask(a: InspectView): InspectView['tasks'][number] | undefined {
  return a.tasks.find((t) => t.desired === 'run') ?? a.tasks[a.tasks.length - 1];
}

/** The last lines of a build task's log (non-following). */
async function taskTail(client: ApiClient, app: string, task: string): Promise<string[]> {
  let text = '';
  await client.stream(`/v1/apps/${encodeURIComponent(app)}/logs?task=${encodeURIComponent(task)}&tail=${RESULT_TAIL_LINES}`, (c) => (text += c)).catch(() => undefined);
  return text.split('\n').filter((l) => l.length > 0);
}

const sleep = (ms: number, signal: AbortSignal) => new Promise<void>((r) => {
  const t = setTimeout(r, ms);
  signal.addEventListener('abort', () => (clearTimeout(t), r()), { once: true });
});

/**
 * Submits the build of `dir` to the cluster and waits for it (see the file comment). Throws
 * StepFailed for a failed step (its name, exit status and last lines), INTERRUPTED after the
 * signal (the build is stopped), BUILD_FAILED otherwise.
 */
export async function remoteBuild(client: ApiClient, reg: BuildRegistry, o: RemoteBuildOptions): Promise<BuildResult & { build: string }> {
  const progress = new Progress(o.label);
  const work = await mkdtemp(join(tmpdir(), 'omni-build-'));
  let name = '';
  try {
    // What the tree is (to know its resources and runtime base; the node detects again).
    progress.setLabel(`${basename(o.dir)}: source`);
    const rules = ignoreRules(o.dir);
    // Compose's dockerfile/args/target make it a Docker build whatever the tree is (the node checks the Dockerfile).
    const docker = { ...(o.dockerfile !== undefined ? { dockerfile: o.dockerfile } : {}), ...(o.buildArgs ? { buildArgs: o.buildArgs } : {}), ...(o.target !== undefined ? { target: o.target } : {}) };
    const forced = Object.keys(docker).length > 0;
    const d = forced ? undefined : detect(dirView(o.dir, rules));
    if (d && !d.ok) throw new OmniError('NOT_BUILDABLE', d.message);
    const plan = d?.plan;
    const src = await packSource(o.dir, join(work, 'source.tar.gz'), o.maxSourceBytes, rules);
    progress.setLabel(`${basename(o.dir)}: upload`);
    // resumable: a build interrupted during the upload sends only the rest when run again
    await putBlob(reg, o.repo, src.digest, join(work, 'source.tar.gz'), uploadStateFile(src.digest));
    const depsHint = plan ? await depsHintOf(o.dir, plan) : undefined;
    const req: BuildTaskRequest = { repo: o.repo, sourceBlob: src.digest, sourceDigest: src.diffId, tags: [...new Set(o.tags)].sort(), rebuild: o.rebuild, runner: o.runnerKind, maxSourceBytes: o.maxSourceBytes, ...(depsHint ? { depsHint } : {}), ...docker };
    const arch = plan?.runtime ? await baseArch(reg, plan.runtime, work) : undefined;
    const isDocker = forced || plan?.type === 'dockerfile';
    // A Docker build's resources: the engine does the work (build.yaml's resources: still apply to a detected Dockerfile).
    const spec = buildAppSpec(req, plan && !forced ? plan.resources : DOCKER_BUILD_RESOURCES, arch, isDocker);
    name = spec.name as string;
    progress.setLabel(`${basename(o.dir)}: submit`);
    const r = await client.post<{ name: string; version: number; changed: boolean; action: string }>('/v1/apps', spec);
    let a = await client.get<InspectView>(`/v1/apps/${encodeURIComponent(name)}`);
    // Built before (the same request succeeded): its result is reused, nothing runs.
    const builtBefore = !r.changed && a.job?.phase === 'STOPPED' && a.job.outcome === 'succeeded' && !o.rebuild;
    // A finished run that did not succeed is started again; --rebuild starts a new run of a succeeded one.
    let restarted = false;
    if (!r.changed && a.job?.phase === 'STOPPED' && !builtBefore) {
      await client.post(`/v1/apps/${encodeURIComponent(name)}/start`, {});
      a = await client.get<InspectView>(`/v1/apps/${encodeURIComponent(name)}`);
      restarted = true;
    }
    // A redeploy of a stopped build app runs it again too: its old STOPPED is not this run's end.
    if (r.changed && a.job?.phase === 'STOPPED') restarted = true;
    const restartedAtMs = Date.now();
    o.onSubmitted?.(name, r.changed ? 'submitted' : builtBefore ? 'already built' : restarted ? 'started again' : 'attached to the build under way');
    if (o.detach) return { build: name, ...emptyResult(req, plan?.type ?? 'dockerfile') };
    const run = a.job?.run ?? 1;
    // Ctrl-C: the build is stopped (the job's run ends as stopped).
    let followed: string | undefined;
    let follow: Promise<void> = Promise.resolve();
    const followAbort = new AbortController();
    const stopFollow = () => followAbort.abort();
    o.signal.addEventListener('abort', stopFollow, { once: true });
    let job: JobView | undefined;
    let task: InspectView['tasks'][number] | undefined;
    for (;;) {
      if (o.signal.aborted) {
        await client.post(`/v1/apps/${encodeURIComponent(name)}/stop`, {}).catch(() => undefined);
        throw new OmniError('INTERRUPTED', `build cancelled (Ctrl-C): ${name} stopped`);
      }
      a = await client.get<InspectView>(`/v1/apps/${encodeURIComponent(name)}?stale=true`);
      job = a.job;
      task = currentTask(a);
      if (job && job.run >= run) {
        progress.setLabel(`${basename(o.dir)}: ${job.phase === 'CREATED' ? `waiting for a node${a.pending ? ` (${a.pending})` : ''}` : job.phase === 'RUNNING' ? `building on ${task?.node ?? '?'}` : 'done'}`);
        if (o.follow && task && followed !== task.id && (task.state === 'running' || task.state === 'exited' || task.state === 'failed')) {
          followed = task.id;
          const id = task.id;
          follow = follow.then(() =>
            client
              .stream(`/v1/apps/${encodeURIComponent(name)}/logs?task=${encodeURIComponent(id)}&follow=true`, (chunk) => {
                for (const line of chunk.split('\n')) {
                  if (!line || line.startsWith(BUILD_RESULT_MARKER) || line.startsWith(BUILD_ERROR_MARKER)) continue;
                  if (o.quiet) continue;
                  progress.end();
                  process.stderr.write(`${line}\n`);
                }
              }, followAbort.signal)
              .catch(() => undefined),
          );
        }
        // After a start, the STOPPED of the run before is not this run's end.
        if (job.phase !== 'STOPPED') restarted = false;
        else if (!restarted || Date.now() - restartedAtMs > RESTART_SEEN_MS) break;
      }
      await sleep(POLL_MS, o.signal);
    }
    // The log may still be arriving: give the follower a moment, then stop it.
    // (The timer is cleared: a pending one would keep the CLI's process alive for its 2 s.)
    let grace: NodeJS.Timeout | undefined;
    await Promise.race([follow, new Promise((r) => (grace = setTimeout(r, 2000)))]);
    clearTimeout(grace);
    followAbort.abort();
    o.signal.removeEventListener('abort', stopFollow);
    progress.end();
    const lines = task ? await taskTail(client, name, task.id) : [];
    const resultLine = lines.findLast((l) => l.startsWith(BUILD_RESULT_MARKER));
    const errorLine = lines.findLast((l) => l.startsWith(BUILD_ERROR_MARKER));
    if (job.outcome === 'succeeded') {
      if (resultLine) {
        const result = JSON.parse(resultLine.slice(BUILD_RESULT_MARKER.length)) as BuildResult;
        return { build: name, ...result, ...(builtBefore ? { reused: true, sourceUploaded: false, layers: [] } : {}) };
      }
      // The log is gone (the task was collected): the tag says what the build gave.
      const digest = await reg.resolveTag(o.repo, sourceTag(req.sourceDigest));
      if (!digest) throw new OmniError('BUILD_FAILED', `build ${name} succeeded but ${o.repo}:${sourceTag(req.sourceDigest)} is not in the registry`);
      return { build: name, ...emptyResult(req, plan?.type ?? 'dockerfile'), digest, reused: true };
    }
    if (errorLine) {
      const e = JSON.parse(errorLine.slice(BUILD_ERROR_MARKER.length)) as { code?: string; message?: string; step?: string; exit?: string; tail?: string[] };
      if (e.step && e.exit !== undefined) throw new StepFailed(e.step, e.exit, e.tail ?? []);
      throw new OmniError(e.code === 'CANCELLED' ? 'CANCELLED' : (e.code ?? 'BUILD_FAILED'), `build ${name}${task ? ` on ${task.node}` : ''}: ${e.message ?? 'failed'}`);
    }
    const cause = task?.cause || task?.reason || job.reason || job.outcome;
    const tail = task?.lastOutput?.length ? `; last output:\n${task.lastOutput.map((l) => `  | ${l}`).join('\n')}` : '';
    throw new OmniError(job.outcome === 'stopped' ? 'CANCELLED' : 'BUILD_FAILED', `build ${name} ${job.outcome === 'stopped' ? 'was stopped' : 'failed'}${task ? ` on ${task.node}` : ''}: ${cause}${tail}`);
  } finally {
    progress.end();
    await rm(work, { recursive: true, force: true });
  }
}

function emptyResult(req: BuildTaskRequest, type: BuildResult['type']): BuildResult {
  return { repository: req.repo, digest: '', sourceDigest: req.sourceDigest, tags: [sourceTag(req.sourceDigest), ...req.tags], type, detectedBy: [], depsReused: false, layers: [], imageBytes: 0, warnings: [], sourceUploaded: false, reused: false, run: { ports: [] } };
}

/** Where the CLI keeps the session of a resumable upload of a build's source (XDG cache; one file per blob). */
export function uploadStateFile(digest: string): string {
  const cache = process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache');
  return join(cache, 'omni', 'uploads', `${digest.replace(/^sha256:/, '')}.json`);
}
