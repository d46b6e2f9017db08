// A build that runs on a node (issue 15 item 4): what `omni build DIR` submits once it uploaded the
// source tar into the registry. The request travels as the command of a `job` app run by the
// `forge` task driver (node/apps/drivers/forge.ts), so the scheduler places it, the agent runs it
// at most once (exclusive job), its output is the task's log and `omni stop` cancels it:
//
//   forge-build --repo REPO --source sha256:<gzip blob> --source-digest sha256:<tar>
//               [--tag TAG]... [--rebuild] [--runner host|docker] [--max-source BYTES]
//               [--deps-hint sha256:<hash of the dependency key files>]
//               [--dockerfile PATH] [--build-arg KEY=VALUE]... [--target STAGE]
//
// Pure: validation of that argv (untrusted: it is an app spec anyone with an admin token can
// write), its canonical form and the app name derived from it — the same source and options give
// the same name, so a second identical submit is the same app (idempotent: `unchanged`).
import { isDigest } from '../registry/digest.js';
import { isRepositoryName, isTag } from '../registry/reference.js';

export const BUILD_COMMAND = 'forge-build';
/** Prefix of a build app's name: `build-<34 hex of the request's hash>` (40 characters, the app name limit). */
export const BUILD_APP_PREFIX = 'build-';
const BUILD_APP_HEX = 34;
export const MAX_BUILD_TAGS = 16;
/** The source limit a node accepts (the CLI's --max-source is checked against it). */
export const MAX_BUILD_SOURCE_BYTES = 4 * 1024 * 1024 * 1024;

export type BuildRunnerKind = 'host' | 'docker';

export interface BuildTaskRequest {
  repo: string;
  /** The source tar's blob (gzip) in REPO: what the node downloads. */
  sourceBlob: string;
  /** The source digest (sha256 of the uncompressed tar): the tag sha-<…> and the build's identity. */
  sourceDigest: string;
  tags: string[];
  rebuild: boolean;
  runner: BuildRunnerKind;
  maxSourceBytes: number;
  /**
   * sha256 of the dependency step's key files (lockfile, manifest), the install command and the
   * runtime name (depsHintOf in cli/omni/build-remote.ts): the scheduler prefers a node that holds
   * the dependency layer last built for it (tag lock-<hex> of forge-cache/deps). A hint only: not
   * part of the build's identity, the node computes the real dependency key itself.
   */
  depsHint?: string;
  /**
   * A Docker build of this Dockerfile (a path inside the source), build arguments and target stage
   * (compose's build: block); any of them makes it a Dockerfile build whatever detection says.
   */
  dockerfile?: string;
  buildArgs?: Record<string, string>;
  target?: string;
}

export const MAX_BUILD_ARGS = 64;
const MAX_BUILD_ARG_VALUE_CHARS = 4096;
const BUILD_ARG_KEY = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
const TARGET = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** A Dockerfile path inside the source: relative, no `..`, no empty or `.` parts, at most 256 characters. */
export function isDockerfilePath(p: string): boolean {
  if (p.length === 0 || p.length > 256 || p.startsWith('/') || /[\0\n\r]/.test(p)) return false;
  return p.split('/').every((part) => part !== '' && part !== '.' && part !== '..');
}

/** Whether the request asks for a Docker build (it then needs a node with a Docker engine). */
export const isDockerfileRequest = (r: BuildTaskRequest) => r.dockerfile !== undefined || r.buildArgs !== undefined || r.target !== undefined;

/** The repository of cached dependency layers (one-layer images tagged with their key's hex). */
export const DEPS_CACHE_REPO_NAME = 'forge-cache/deps';
/** The tag of forge-cache/deps that names the dependency layer last built for a deps hint. */
export const depsHintTag = (hint: string) => `lock-${hint.slice('sha256:'.length)}`;

export type ParsedBuildCommand = { ok: true; request: BuildTaskRequest } | { ok: false; message: string };

/** The argv of a build task (what buildCommand writes; parseBuildCommand reads it back unchanged). */
export function buildCommand(r: BuildTaskRequest): string[] {
  const argv = [BUILD_COMMAND, '--repo', r.repo, '--source', r.sourceBlob, '--source-digest', r.sourceDigest];
  for (const t of [...r.tags].sort()) argv.push('--tag', t);
  if (r.rebuild) argv.push('--rebuild');
  argv.push('--runner', r.runner, '--max-source', String(r.maxSourceBytes));
  if (r.depsHint) argv.push('--deps-hint', r.depsHint);
  if (r.dockerfile !== undefined) argv.push('--dockerfile', r.dockerfile);
  for (const k of Object.keys(r.buildArgs ?? {}).sort()) argv.push('--build-arg', `${k}=${r.buildArgs![k]}`);
  if (r.target !== undefined) argv.push('--target', r.target);
  return argv;
}

/** Reads and checks a build task's argv; every refusal names the flag. */
export function parseBuildCommand(argv: readonly string[]): ParsedBuildCommand {
  if (argv[0] !== BUILD_COMMAND) return { ok: false, message: `a forge task's command must start with ${BUILD_COMMAND}` };
  let repo: string | undefined;
  let sourceBlob: string | undefined;
  let sourceDigest: string | undefined;
  const tags: string[] = [];
  let rebuild = false;
  let runner: BuildRunnerKind = 'host';
  let maxSourceBytes = MAX_BUILD_SOURCE_BYTES;
  let depsHint: string | undefined;
  let dockerfile: string | undefined;
  let buildArgs: Record<string, string> | undefined;
  let target: string | undefined;
  const seen = new Set<string>();
  for (let i = 1; i < argv.length; i++) {
    const flag = argv[i];
    if (flag === '--rebuild') {
      rebuild = true;
      continue;
    }
    const value = argv[i + 1];
    if (!['--repo', '--source', '--source-digest', '--tag', '--runner', '--max-source', '--deps-hint', '--dockerfile', '--build-arg', '--target'].includes(flag)) return { ok: false, message: `unknown flag ${JSON.stringify(flag.slice(0, 40))}` };
    if (value === undefined) return { ok: false, message: `${flag} needs a value` };
    if (flag !== '--tag' && flag !== '--build-arg' && seen.has(flag)) return { ok: false, message: `${flag} is given twice` };
    seen.add(flag);
    i++;
    switch (flag) {
      case '--repo':
        if (!isRepositoryName(value)) return { ok: false, message: `--repo ${JSON.stringify(value.slice(0, 200))} is not a repository name` };
        repo = value;
        break;
      case '--source':
        if (!isDigest(value)) return { ok: false, message: '--source must be sha256:<64 hex digits> (the source blob)' };
        sourceBlob = value;
        break;
      case '--source-digest':
        if (!isDigest(value)) return { ok: false, message: '--source-digest must be sha256:<64 hex digits>' };
        sourceDigest = value;
        break;
      case '--tag':
        if (!isTag(value)) return { ok: false, message: `--tag ${JSON.stringify(value.slice(0, 140))} is not a tag` };
        if (tags.length >= MAX_BUILD_TAGS) return { ok: false, message: `at most ${MAX_BUILD_TAGS} --tag` };
        if (!tags.includes(value)) tags.push(value);
        break;
      case '--deps-hint':
        if (!isDigest(value)) return { ok: false, message: '--deps-hint must be sha256:<64 hex digits>' };
        depsHint = value;
        break;
      case '--runner':
        if (value !== 'host' && value !== 'docker') return { ok: false, message: '--runner must be host or docker' };
        runner = value;
        break;
      case '--dockerfile':
        if (!isDockerfilePath(value)) return { ok: false, message: `--dockerfile ${JSON.stringify(value.slice(0, 80))} must be a relative path inside the source (no .., at most 256 characters)` };
        dockerfile = value;
        break;
      case '--build-arg': {
        const eq = value.indexOf('=');
        const key = eq > 0 ? value.slice(0, eq) : '';
        if (!BUILD_ARG_KEY.test(key)) return { ok: false, message: `--build-arg ${JSON.stringify(value.slice(0, 80))} must be KEY=VALUE with KEY a variable name` };
        if (value.length - eq - 1 > MAX_BUILD_ARG_VALUE_CHARS) return { ok: false, message: `--build-arg ${key}: the value is over ${MAX_BUILD_ARG_VALUE_CHARS} characters` };
        buildArgs ??= {};
        if (key in buildArgs) return { ok: false, message: `--build-arg ${key} is given twice` };
        if (Object.keys(buildArgs).length >= MAX_BUILD_ARGS) return { ok: false, message: `at most ${MAX_BUILD_ARGS} --build-arg` };
        buildArgs[key] = value.slice(eq + 1);
        break;
      }
      case '--target':
        if (!TARGET.test(value)) return { ok: false, message: `--target ${JSON.stringify(value.slice(0, 80))} is not a stage name` };
        target = value;
        break;
      case '--max-source':
        if (!/^\d{1,13}$/.test(value) || Number(value) < 1 || Number(value) > MAX_BUILD_SOURCE_BYTES) return { ok: false, message: `--max-source must be a number of bytes from 1 to ${MAX_BUILD_SOURCE_BYTES}` };
        maxSourceBytes = Number(value);
        break;
    }
  }
  if (!repo) return { ok: false, message: '--repo is required' };
  if (!sourceBlob) return { ok: false, message: '--source is required' };
  if (!sourceDigest) return { ok: false, message: '--source-digest is required' };
  const docker = { ...(dockerfile !== undefined ? { dockerfile } : {}), ...(buildArgs ? { buildArgs } : {}), ...(target !== undefined ? { target } : {}) };
  return { ok: true, request: { repo, sourceBlob, sourceDigest, tags: tags.sort(), rebuild, runner, maxSourceBytes, ...(depsHint ? { depsHint } : {}), ...docker } };
}

/**
 * The text a build's identity is hashed from: repository, source digest and every option that can
 * change the result (tags, rebuild, runner, source limit; a Docker build's Dockerfile, arguments
 * and target), in a fixed order. Two submits of the same build give the same text whatever the
 * order of their --tag and --build-arg flags; a request without the Docker options gives the text
 * it gave before they existed.
 */
export function buildIdentity(r: BuildTaskRequest): string {
  const parts = ['omni-forge-build/1', r.repo, r.sourceDigest, r.sourceBlob, [...r.tags].sort().join(','), r.rebuild ? 'rebuild' : '', r.runner, String(r.maxSourceBytes)];
  if (isDockerfileRequest(r)) parts.push('docker', r.dockerfile ?? '', JSON.stringify(Object.keys(r.buildArgs ?? {}).sort().map((k) => [k, r.buildArgs![k]])), r.target ?? '');
  return parts.join('\0');
}

/** The app name of a build from the hex sha256 of its identity (the caller hashes: protocol/ has no crypto). */
export function buildAppName(identityHashHex: string): string {
  if (!/^[a-f0-9]{64}$/.test(identityHashHex)) throw new Error('buildAppName needs 64 hex digits');
  return BUILD_APP_PREFIX + identityHashHex.slice(0, BUILD_APP_HEX);
}

export function isBuildAppName(name: string): boolean {
  return name.length === BUILD_APP_PREFIX.length + BUILD_APP_HEX && name.startsWith(BUILD_APP_PREFIX) && /^[a-f0-9]+$/.test(name.slice(BUILD_APP_PREFIX.length));
}

/** The last line of a build task's log: the result as JSON after this marker (the CLI reads it back). */
export const BUILD_RESULT_MARKER = 'omni-forge-result ';
/** The line a failed build ends with: the error as JSON (code, message, step, exit, tail). */
export const BUILD_ERROR_MARKER = 'omni-forge-error ';

/** KV key of a build record: forge/builds/REPO/sha-<source digest> (which image a source digest gave). */
export function buildRecordKey(repo: string, sourceDigest: string): string {
  return `forge/builds/${repo}/sha-${sourceDigest.slice('sha256:'.length)}`;
}

/** The build record's value (small JSON; Forge's only state besides the registry). */
export function buildRecordValue(r: { repository: string; digest: string; sourceDigest: string; tags: string[]; type: string; runtime?: string; baseDigest?: string; depsKey?: string }, builtAtMs: number): string {
  return JSON.stringify({ repository: r.repository, digest: r.digest, sourceDigest: r.sourceDigest, tags: r.tags, type: r.type, runtime: r.runtime ?? null, baseDigest: r.baseDigest ?? null, depsKey: r.depsKey ?? null, builtAtMs });
}
