// omni sync [DIR] --app NAME [--push|--pull]: a project directory on the client against the app's
// workspace on the cluster. The plan is pure (protocol/sync/plan.ts); this file scans, moves bytes
// and keeps the state.
//
// The cluster's copy of a workspace:
//   - file contents as content-addressed chunks (CHUNK_BYTES pieces of a file; a small file is one
//     chunk) in the registry blob store, repository `omni-sync/<app>`: deduplicated (a chunk the
//     repository has is not sent again), replicated like any blob (R copies), resumable (an
//     interrupted sync sends only the chunks still missing: each chunk is its own blob);
//   - the tree manifest (protocol/sync/tree.ts) as a blob, referenced as the config of OCI "page"
//     manifests whose layers are the chunks (at most PAGE_LAYERS each, to stay under the registry's
//     manifest size limit), listed by an OCI index tagged `ws-<revision>`: the tag is a GC root, so
//     garbage collection keeps the workspace's chunks;
//   - a record in the replicated KV, `sync/<app>` = {"index": digest, "revision": n}, written with
//     compare-and-set on its version: of two concurrent syncs one wins, the other sees CONFLICT,
//     re-reads the cluster's tree and plans again (no update is lost).
// The base (the tree both sides agreed on after the last sync) and a scan cache (size+mtime →
// digests, so a no-op sync hashes nothing) are kept in DIR/.omni/sync-state.json.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, copyFile, lstat, mkdir, open, readdir, readFile, readlink, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, dirname } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { OmniError } from '../../node/errors.js';
import type { ApiClient } from '../../node/api/client.js';
import { OCI_INDEX, OCI_MANIFEST } from '../../protocol/registry/media-types.js';
import { planSync, type Direction, type SyncPlan } from '../../protocol/sync/plan.js';
import { CHUNK_BYTES, checkManifest, checkPath, checkSymlink, decodeManifest, emptyTree, encodeManifest, type FileEntry, type TreeManifest, MAX_FILES } from '../../protocol/sync/tree.js';
import { parse, printJson, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect } from './connection.js';
import { registryFor, registryFailoverWorthy, type Registry } from './registry-client.js';

const TREE_MEDIA_TYPE = 'application/vnd.omni.sync.tree.v1+json';
const CHUNK_MEDIA_TYPE = 'application/octet-stream';
// The registry writes a manifest and its blob links in one catalog transaction of at most 1,000 compares.
const PAGE_LAYERS = 400;
const PARALLEL = 8;
const CAS_ATTEMPTS = 5;
const STATE_FILE = '.omni/sync-state.json';
const APP_RE = /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/;

export interface SyncSummary {
  app: string;
  direction: Direction;
  revision: number;
  uploaded: number;
  downloaded: number;
  deletedLocal: number;
  deletedRemote: number;
  conflicts: { path: string; winner: string; keptAs?: string }[];
  skipped: { path: string; why: string }[];
  bytesUploaded: number;
  bytesDownloaded: number;
  chunksSkipped: number;
  dryRun: boolean;
  noop: boolean;
}

interface SyncState {
  app: string;
  base: TreeManifest;
  /** The client's tree as last scanned or written (its mtimes are the client's): the scan cache. */
  local: TreeManifest;
  /** The cluster's index digest when the last sync left both sides equal (then the cluster's tree is the base). */
  remoteIndex?: string;
}

// ---------------------------------------------------------------- scanning

async function hashFile(path: string): Promise<{ sha256: string; chunks: string[]; size: number }> {
  const whole = createHash('sha256');
  const chunks: string[] = [];
  let chunk = createHash('sha256');
  let inChunk = 0;
  let size = 0;
  for await (const buf of createReadStream(path, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) {
    whole.update(buf);
    size += buf.length;
    let off = 0;
    while (off < buf.length) {
      const take = Math.min(CHUNK_BYTES - inChunk, buf.length - off);
      chunk.update(buf.subarray(off, off + take));
      inChunk += take;
      off += take;
      if (inChunk === CHUNK_BYTES) {
        chunks.push('sha256:' + chunk.digest('hex'));
        chunk = createHash('sha256');
        inChunk = 0;
      }
    }
  }
  if (inChunk > 0) chunks.push('sha256:' + chunk.digest('hex'));
  return { sha256: 'sha256:' + whole.digest('hex'), chunks, size };
}

/** The client's tree: regular files only; refused paths are reported, not synced. */
export async function scanTree(root: string, cache: Map<string, FileEntry>): Promise<{ tree: TreeManifest; skipped: { path: string; why: string }[] }> {
  const files: FileEntry[] = [];
  const skipped: { path: string; why: string }[] = [];
  const walk = async (rel: string) => {
    const entries = await readdir(join(root, rel), { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const d of entries) {
      const p = rel ? `${rel}/${d.name}` : d.name;
      if (p === '.omni') continue;
      const why = checkPath(p);
      if (why) {
        skipped.push({ path: p, why });
        continue;
      }
      const full = join(root, p);
      const st = await lstat(full);
      if (st.isDirectory()) await walk(p);
      else if (st.isSymbolicLink()) {
        const escape = checkSymlink(p, await readlink(full));
        skipped.push({ path: p, why: escape ?? 'symlinks are not synced' });
      } else if (!st.isFile()) skipped.push({ path: p, why: 'not a regular file (device, fifo or socket)' });
      else {
        if (files.length >= MAX_FILES) throw new OmniError('TOO_LARGE', `${root} has over ${MAX_FILES} files`);
        const mode = st.mode & 0o111 ? 0o755 : 0o644;
        const c = cache.get(p);
        if (c && c.size === st.size && c.mtimeMs === st.mtimeMs) files.push({ ...c, mode });
        else {
          const h = await hashFile(full);
          files.push({ path: p, size: h.size, mtimeMs: st.mtimeMs, mode, sha256: h.sha256, chunks: h.chunks });
        }
      }
    }
  };
  await walk('');
  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { tree: { version: 1, files }, skipped };
}

// ---------------------------------------------------------------- the cluster's copy

const repoOf = (app: string) => `omni-sync/${app}`;
const recordKey = (app: string) => `/v1/kv/${encodeURIComponent(`sync/${app}`)}`;

interface Remote {
  tree: TreeManifest;
  revision: number;
  /** The KV record's version (0: none yet): the compare-and-set precondition. */
  version: number;
}

async function retry<T>(what: string, fn: () => Promise<T>, attempts = 5): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (err) {
      const worthy = registryFailoverWorthy(err) || (err instanceof OmniError && (err.code === 'UNAVAILABLE' || err.code === 'TIMEOUT'));
      if (!worthy || i + 1 >= attempts) throw err;
      const ms = Math.min(5000, 200 * 2 ** i) * (0.5 + Math.random());
      process.stderr.write(`omni sync: ${what} failed (${(err as Error).message.slice(0, 200)}); retrying in ${Math.round(ms)} ms\n`);
      await new Promise((r) => setTimeout(r, ms));
    }
  }
}

async function readBlobJson(reg: Registry, repo: string, digest: string, tmpDir: string): Promise<Buffer> {
  const tmp = join(tmpDir, `blob-${randomBytes(6).toString('hex')}`);
  try {
    await retry(`reading ${digest}`, () => reg.downloadBlob(repo, digest, tmp));
    return await readFile(tmp);
  } finally {
    await rm(tmp, { force: true });
    await rm(`${tmp}.part`, { force: true });
  }
}

async function readRemote(client: ApiClient, reg: Registry, app: string, tmpDir: string, known?: { index: string; tree: TreeManifest }): Promise<Remote & { index?: string }> {
  let rec: { value: string; version: number };
  try {
    rec = await client.get<{ value: string; version: number }>(recordKey(app));
  } catch (err) {
    if (err instanceof OmniError && err.code === 'NOT_FOUND') return { tree: emptyTree(), revision: 0, version: 0 };
    throw err;
  }
  const v = JSON.parse(rec.value) as { index?: unknown; revision?: unknown };
  if (typeof v.index !== 'string' || !Number.isSafeInteger(v.revision)) throw new OmniError('INVALID', `the sync record of ${app} is malformed`);
  // The record names the tree this client synced to last: no need to fetch it (a no-op sync reads
  // one KV record and stats the directory).
  if (known && known.index === v.index) return { tree: known.tree, revision: v.revision as number, version: rec.version, index: v.index };
  const repo = repoOf(app);
  const index = JSON.parse((await retry('reading the workspace index', () => reg.manifest(repo, v.index as string))).bytes.toString('utf8')) as { manifests: { digest: string }[] };
  const page = JSON.parse((await retry('reading the workspace manifest', () => reg.manifest(repo, index.manifests[0].digest))).bytes.toString('utf8')) as { config: { digest: string } };
  const tree = decodeManifest(await readBlobJson(reg, repo, page.config.digest, tmpDir));
  return { tree, revision: v.revision as number, version: rec.version, index: v.index };
}

/** Streams [start, start+len) of a file into its own file (a chunk to upload; 4 MiB at most). */
async function cutChunk(src: string, start: number, len: number, dest: string): Promise<void> {
  await pipeline(createReadStream(src, { start, end: start + len - 1 }), createWriteStream(dest));
}

interface Progress {
  bytesUp: number;
  bytesDown: number;
  chunksSkipped: number;
}

async function pool<T>(items: T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]);
    }),
  );
}

/** Sends the chunks of `files` the repository lacks (resumable: each chunk is a blob; those there are skipped). */
async function uploadChunks(reg: Registry, repo: string, root: string, files: FileEntry[], known: Set<string>, localBySha: Map<string, FileEntry>, tmpDir: string, prog: Progress, tick: () => void): Promise<void> {
  const jobs: { digest: string; src: FileEntry; index: number }[] = [];
  const seen = new Set<string>();
  for (const f of files)
    f.chunks.forEach((c, i) => {
      if (seen.has(c)) return;
      seen.add(c);
      if (known.has(c)) prog.chunksSkipped++;
      else jobs.push({ digest: c, src: localBySha.get(f.sha256) ?? f, index: i });
    });
  await pool(jobs, PARALLEL, async (j) => {
    if (await retry(`checking ${j.digest}`, () => reg.hasBlob(repo, j.digest))) {
      prog.chunksSkipped++;
      return;
    }
    const full = join(root, j.src.path);
    const len = Math.min(CHUNK_BYTES, j.src.size - j.index * CHUNK_BYTES);
    if (j.src.chunks.length === 1) {
      await retry(`uploading ${j.src.path}`, () => reg.uploadBlob(repo, j.digest, full));
    } else {
      const tmp = join(tmpDir, `up-${randomBytes(6).toString('hex')}`);
      try {
        await cutChunk(full, j.index * CHUNK_BYTES, len, tmp);
        await retry(`uploading ${j.src.path} chunk ${j.index}`, () => reg.uploadBlob(repo, j.digest, tmp));
      } finally {
        await rm(tmp, { force: true });
      }
    }
    prog.bytesUp += len;
    tick();
  });
}

async function putBlobBytes(reg: Registry, repo: string, bytes: Buffer, tmpDir: string): Promise<string> {
  const digest = 'sha256:' + createHash('sha256').update(bytes).digest('hex');
  if (await retry('checking the tree manifest', () => reg.hasBlob(repo, digest))) return digest;
  const tmp = join(tmpDir, `tree-${randomBytes(6).toString('hex')}`);
  try {
    await writeFile(tmp, bytes);
    await retry('uploading the tree manifest', () => reg.uploadBlob(repo, digest, tmp));
  } finally {
    await rm(tmp, { force: true });
  }
  return digest;
}

/** Writes the workspace's manifests (pages + index, tagged) and returns the index digest. */
async function putWorkspace(reg: Registry, repo: string, tree: TreeManifest, revision: number, tmpDir: string): Promise<string> {
  const treeBytes = encodeManifest(tree);
  const treeDigest = await putBlobBytes(reg, repo, treeBytes, tmpDir);
  const layers: { mediaType: string; digest: string; size: number }[] = [];
  const seen = new Set<string>();
  for (const f of tree.files)
    f.chunks.forEach((c, i) => {
      if (seen.has(c)) return;
      seen.add(c);
      layers.push({ mediaType: CHUNK_MEDIA_TYPE, digest: c, size: Math.min(CHUNK_BYTES, f.size - i * CHUNK_BYTES) });
    });
  const pages: { mediaType: string; digest: string; size: number }[] = [];
  for (let i = 0; i === 0 || i < layers.length; i += PAGE_LAYERS) {
    const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: TREE_MEDIA_TYPE, digest: treeDigest, size: treeBytes.length }, layers: layers.slice(i, i + PAGE_LAYERS) }));
    const digest = 'sha256:' + createHash('sha256').update(body).digest('hex');
    await retry('writing the workspace manifest', () => reg.putManifest(repo, digest, body, OCI_MANIFEST));
    pages.push({ mediaType: OCI_MANIFEST, digest, size: body.length });
  }
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: pages }));
  const indexDigest = 'sha256:' + createHash('sha256').update(index).digest('hex');
  await retry('writing the workspace index', () => reg.putManifest(repo, `ws-${revision}`, index, OCI_INDEX));
  return indexDigest;
}

// ---------------------------------------------------------------- writing the client's side

async function materialise(reg: Registry, repo: string, root: string, files: FileEntry[], localBySha: Map<string, FileEntry>, tmpDir: string, prog: Progress, tick: () => void): Promise<Map<string, string>> {
  // Every new content is first made complete in .omni/tmp (from a local file with the same digest,
  // else from the cluster's chunks), checked, and only then renamed into place: a sync broken off
  // here leaves the client's files as they were.
  const ready = new Map<string, string>();
  await pool(files, PARALLEL, async (f) => {
    const tmp = join(tmpDir, `down-${randomBytes(6).toString('hex')}`);
    const src = localBySha.get(f.sha256);
    if (src) await copyFile(join(root, src.path), tmp);
    else {
      const fh = await open(tmp, 'w');
      try {
        for (const [i, c] of f.chunks.entries()) {
          const part = `${tmp}.c${i}`;
          await retry(`downloading ${f.path}`, () => reg.downloadBlob(repo, c, part));
          await pipeline(createReadStream(part), createWriteStream('', { fd: fh.fd, autoClose: false } as never));
          await rm(part, { force: true });
          prog.bytesDown += Math.min(CHUNK_BYTES, f.size - i * CHUNK_BYTES);
          tick();
        }
      } finally {
        await fh.close();
      }
    }
    const h = await hashFile(tmp);
    if (h.sha256 !== f.sha256) throw new OmniError('DIGEST_INVALID', `${f.path}: the content put together does not match ${f.sha256}`);
    await chmod(tmp, f.mode);
    ready.set(f.path, tmp);
  });
  return ready;
}

// ---------------------------------------------------------------- the sync

async function loadState(dir: string, app: string): Promise<SyncState> {
  try {
    const s = JSON.parse(await readFile(join(dir, STATE_FILE), 'utf8')) as SyncState;
    if (s.app !== app) return { app, base: emptyTree(), local: emptyTree() };
    return { app, base: checkManifest(s.base), local: checkManifest(s.local), ...(typeof s.remoteIndex === 'string' ? { remoteIndex: s.remoteIndex } : {}) };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { app, base: emptyTree(), local: emptyTree() };
    throw new OmniError('INVALID', `${join(dir, STATE_FILE)}: ${(err as Error).message} (remove it to sync from scratch: files changed on both sides then become conflicts)`);
  }
}

export interface SyncOptions {
  client: ApiClient;
  app: string;
  dir: string;
  direction?: Direction;
  dryRun?: boolean;
  /** The registry to use (default: the one of the node the client talks to, with failover). */
  registry?: Registry;
  /** Who wins a conflict in a two-way sync (default: the cluster; seed 003). */
  winner?: 'client' | 'cluster';
  onProgress?: (p: { bytesUp: number; bytesDown: number; totalUp: number; totalDown: number }) => void;
  /** For tests: called after the chunks went up and before the record is written. */
  beforeCommit?: () => Promise<void>;
}

/** Syncs `dir` with app `app`'s workspace on the cluster; what `omni sync`, `omni run` and `omni stop` call. */
export async function syncProject(opts: SyncOptions): Promise<SyncSummary & { plan: SyncPlan }> {
  const { client, app, dir } = opts;
  const direction = opts.direction ?? 'both';
  if (!APP_RE.test(app) || app.length > 100) throw new UsageError(`--app must be an app name (lower-case letters, digits, . _ -), got ${app}`);
  const st = await stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) throw new UsageError(`${dir} is not a directory`);
  const tmpDir = join(dir, '.omni', 'tmp');
  await mkdir(tmpDir, { recursive: true });
  const reg = opts.registry ?? (await registryFor(client, {}));
  const repo = repoOf(app);
  const state = await loadState(dir, app);
  const { tree: local, skipped } = await scanTree(dir, new Map(state.local.files.map((f) => [f.path, f])));
  const localBySha = new Map(local.files.map((f) => [f.sha256, f]));
  const prog: Progress = { bytesUp: 0, bytesDown: 0, chunksSkipped: 0 };
  for (let attempt = 1; ; attempt++) {
    const remote = await readRemote(client, reg, app, tmpDir, state.remoteIndex && attempt === 1 ? { index: state.remoteIndex, tree: state.base } : undefined);
    const plan = planSync({ local, remote: remote.tree, base: state.base, direction, ...(opts.winner ? { winner: opts.winner } : {}) });
    const summary = (revision: number): SyncSummary & { plan: SyncPlan } => ({
      app,
      direction,
      revision,
      uploaded: plan.upload.length,
      downloaded: plan.download.length,
      deletedLocal: plan.deleteLocal.length,
      deletedRemote: plan.deleteRemote.length,
      conflicts: plan.conflicts,
      skipped,
      bytesUploaded: prog.bytesUp,
      bytesDownloaded: prog.bytesDown,
      chunksSkipped: prog.chunksSkipped,
      dryRun: !!opts.dryRun,
      noop: plan.noop,
      plan,
    });
    if (opts.dryRun) return summary(remote.revision);
    const totalUp = plan.upload.reduce((n, f) => n + f.size, 0);
    const totalDown = plan.download.filter((f) => !localBySha.has(f.sha256)).reduce((n, f) => n + f.size, 0);
    const tick = () => opts.onProgress?.({ bytesUp: prog.bytesUp, bytesDown: prog.bytesDown, totalUp, totalDown });
    // 1. the cluster: chunks, then the manifests, then the record (compare-and-set)
    let revision = remote.revision;
    let remoteIndex = remote.index;
    const remoteChanged = plan.upload.length > 0 || plan.deleteRemote.length > 0;
    if (remoteChanged) {
      const known = new Set(remote.tree.files.flatMap((f) => f.chunks));
      await uploadChunks(reg, repo, dir, plan.upload, known, localBySha, tmpDir, prog, tick);
      revision = remote.revision + 1;
      const index = await putWorkspace(reg, repo, plan.remote, revision, tmpDir);
      remoteIndex = index;
      await opts.beforeCommit?.();
      try {
        await client.put(recordKey(app), { value: JSON.stringify({ index, revision }), expectedVersion: remote.version });
      } catch (err) {
        if (err instanceof OmniError && err.code === 'CONFLICT' && attempt < CAS_ATTEMPTS) continue; // another sync won: plan again
        throw err;
      }
    }
    // 2. the client: new contents complete in tmp, then deletions and renames
    const ready = await materialise(reg, repo, dir, plan.download, localBySha, tmpDir, prog, tick);
    for (const p of plan.deleteLocal) await rm(join(dir, p), { force: true });
    for (const [p, tmp] of ready) {
      await mkdir(dirname(join(dir, p)), { recursive: true });
      await rename(tmp, join(dir, p));
    }
    // 3. the state: the base, and the client's tree with the mtimes it has now
    const written = new Map<string, FileEntry>();
    const scanned = new Map(local.files.map((f) => [f.path, f]));
    for (const f of plan.local.files) {
      if (ready.has(f.path)) {
        const s = await stat(join(dir, f.path));
        written.set(f.path, { ...f, mtimeMs: s.mtimeMs });
      } else written.set(f.path, scanned.get(f.path) ?? f);
    }
    const localAfter: TreeManifest = { version: 1, files: plan.local.files.map((f) => written.get(f.path)!) };
    const tmpState = join(dir, `${STATE_FILE}.tmp`);
    const converged = JSON.stringify(plan.local.files.map((f) => [f.path, f.sha256, f.mode])) === JSON.stringify(plan.remote.files.map((f) => [f.path, f.sha256, f.mode]));
    await writeFile(tmpState, JSON.stringify({ app, base: plan.base, local: localAfter, ...(converged && remoteIndex ? { remoteIndex } : {}) }));
    await rename(tmpState, join(dir, STATE_FILE));
    return summary(revision);
  }
}

// ---------------------------------------------------------------- the command

const USAGE = `usage: omni sync [DIR] --app NAME [--push|--pull] [--dry-run] [--json] [flags]

  Syncs DIR (default .) with the app's workspace on the cluster: two-way by default (a file
  changed on both sides: the cluster's copy wins, yours is kept as NAME.conflict); --push sends
  your changes only (yours win), --pull fetches the cluster's only. The last synced tree is kept in
  DIR/.omni/sync-state.json.
${CONNECTION_HELP}
`;

export async function sync(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...CONNECTION_FLAGS, app: { type: 'string' }, push: { type: 'boolean' }, pull: { type: 'boolean' }, 'dry-run': { type: 'boolean' }, registry: { type: 'string' } }, USAGE);
  if (positionals.length > 1) throw new UsageError(USAGE);
  if (values.push && values.pull) throw new UsageError('--push and --pull exclude each other');
  const app = values.app as string | undefined;
  if (!app) throw new UsageError(`--app NAME is required\n\n${USAGE}`);
  const dir = positionals[0] ?? '.';
  const client = connect(values);
  const tty = process.stderr.isTTY && !values.json;
  let last = 0;
  try {
    const reg = await registryFor(client, values);
    const r = await syncProject({
      client,
      app,
      dir,
      registry: reg,
      direction: values.push ? 'push' : values.pull ? 'pull' : 'both',
      dryRun: !!values['dry-run'],
      onProgress: tty
        ? (p) => {
            const now = Date.now();
            if (now - last < 200) return;
            last = now;
            process.stderr.write(`\r  up ${(p.bytesUp / 1e6).toFixed(1)}/${(p.totalUp / 1e6).toFixed(1)} MB  down ${(p.bytesDown / 1e6).toFixed(1)}/${(p.totalDown / 1e6).toFixed(1)} MB   `);
          }
        : undefined,
    });
    if (tty && last) process.stderr.write('\n');
    const { plan, ...summary } = r;
    if (values.json) printJson(values['dry-run'] ? { ...summary, plan: { upload: plan.upload.map((f) => f.path), download: plan.download.map((f) => f.path), deleteLocal: plan.deleteLocal, deleteRemote: plan.deleteRemote } } : summary);
    else {
      if (values['dry-run']) {
        for (const f of plan.upload) process.stdout.write(`upload    ${f.path}\n`);
        for (const f of plan.download) process.stdout.write(`download  ${f.path}\n`);
        for (const p of plan.deleteRemote) process.stdout.write(`delete on the cluster  ${p}\n`);
        for (const p of plan.deleteLocal) process.stdout.write(`delete here            ${p}\n`);
      }
      for (const c of r.conflicts) process.stdout.write(`conflict  ${c.path}: the ${c.winner}'s copy stays${c.keptAs ? `, the other is kept as ${c.keptAs}` : ''}\n`);
      for (const s of r.skipped) process.stderr.write(`skipped   ${s.path}: ${s.why}\n`);
      process.stdout.write(
        r.noop
          ? `${app}: in sync (revision ${r.revision})\n`
          : `${app}: ${r.dryRun ? 'would upload' : 'uploaded'} ${r.uploaded}, ${r.dryRun ? 'download' : 'downloaded'} ${r.downloaded}, deleted ${r.deletedRemote} on the cluster and ${r.deletedLocal} here, ${r.conflicts.length} conflicts; ${(r.bytesUploaded / 1e6).toFixed(1)} MB up, ${(r.bytesDownloaded / 1e6).toFixed(1)} MB down (revision ${r.revision})\n`,
      );
    }
    return 0;
  } finally {
    client.close();
  }
}
