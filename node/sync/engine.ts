// File sync, the I/O engine: a directory against an app's workspace on the cluster. Used by the
// CLI (`omni sync`, cli/omni/sync.ts: the client's project directory, through the HTTP API and
// /v2/) and by the node (node/sync/task-workspace.ts: a task's working directory, through the
// node's in-process registry and its own proposals). The plan is pure (protocol/sync/plan.ts);
// this file scans, moves bytes and keeps the state. Who the two sides are is the caller's: the
// "client" side is the directory given, the "cluster" side the workspace in the store.
//
// The cluster's copy of a workspace (format version 2, protocol/sync/tree.ts):
//   - file contents as content-addressed blobs in the registry blob store, repository
//     `omni-sync/<app>`: small files (PACK_FILE_MAX at most) concatenated into packs of about
//     PACK_BYTES (the tree records pack digest, offset, pack size), larger files cut into
//     CHUNK_BYTES chunks; deduplicated by content (a file the cluster's tree has packed, or a
//     chunk it has, is not sent again), replicated like any blob (R copies), resumable (packs are
//     built deterministically, so a rerun sends only the blobs still missing);
//   - the tree in stable pages (pageTree), each page a blob that is the config of OCI manifests
//     whose layers are its chunks and packs (at most PAGE_LAYERS each, to stay under the
//     registry's manifest size limit), listed by an OCI index tagged `ws-<revision>`: the tag is a
//     GC root, so garbage collection keeps the contents; a page manifest the cluster's index
//     already lists is not written again;
//   - a record in the replicated KV, `sync/<app>` = {"index": digest, "revision": n}, written with
//     compare-and-set on its version: of two concurrent syncs one wins, the other sees CONFLICT,
//     re-reads the cluster's tree and plans again (no update is lost).
// The base (the tree both sides agreed on after the last sync) and a scan cache (size+mtime →
// digests, so a no-op sync hashes nothing) are kept in DIR/.omni/sync-state.json (or where the
// caller says: a node keeps a task's outside the task's directory); next to it, `<state>.quick` (the
// stat fingerprint and index of the last converged sync) lets `quickNoop` end a no-op with one KV read.
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, createReadStream, createWriteStream, lstatSync, openSync, readFileSync, readSync, readdirSync, readlinkSync, type Stats } from 'node:fs';
import { chmod, copyFile, lstat, mkdir, open, readdir, readFile, readlink, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, dirname } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { OmniError } from '../errors.js';
import { OCI_INDEX, OCI_MANIFEST } from '../../protocol/registry/media-types.js';
import { planSync, type Direction, type SyncPlan } from '../../protocol/sync/plan.js';
import { SYNC_COMMIT_BLOB_BYTES, SYNC_COMMIT_MAX_BLOBS, SYNC_COMMIT_MAX_BYTES, SYNC_COMMIT_MAX_COMPARES, SYNC_COMMIT_MAX_MANIFEST_BYTES, SYNC_COMMIT_MAX_MANIFESTS, type SyncCommitHeader } from '../../protocol/sync/commit.js';
import { decodeSyncState, encodeSyncState, type SyncState } from '../../protocol/sync/state-file.js';
import { isIgnored, matchesIgnore, parseIgnore, MAX_IGNORE_RULES, type IgnoreRule } from '../../protocol/forge/ignore.js';
import { CHUNK_BYTES, PACK_BYTES, PACK_FILE_MAX, checkPath, checkSymlink, decodeManifest, emptyTree, encodeManifest, type FileEntry, type TreeManifest, MAX_FILES, MANIFEST_VERSION, packable, planPacks, type PackRef, type PageLayout, pageTree, joinPages } from '../../protocol/sync/tree.js';

/** The registry operations sync uses: the CLI's /v2/ client (with failover), or a node's in-process registry (node/forge/node-registry.ts). */
export interface SyncRegistry {
  hasBlob(repo: string, digest: string): Promise<boolean>;
  uploadBlob(repo: string, digest: string, path: string): Promise<unknown>;
  /** Uploads bytes held in memory as blob `digest` (absent: they go through a temp file and uploadBlob). */
  uploadBytes?(repo: string, digest: string, bytes: Buffer): Promise<unknown>;
  downloadBlob(repo: string, digest: string, dest: string): Promise<unknown>;
  manifest(repo: string, digest: string): Promise<{ bytes: Buffer; mediaType: string }>;
  putManifest(repo: string, ref: string, bytes: Buffer, mediaType: string): Promise<unknown>;
  /** Removes a tag (an old workspace revision's); absent or refused: the tag stays until omni images gc --keep-last. */
  deleteTag?(repo: string, tag: string): Promise<unknown>;
}

/**
 * The workspace record `sync/<app>` in the replicated KV: read, and written with compare-and-set on
 * its version (expectedVersion 0: it must not exist). write throws OmniError CONFLICT when another
 * writer moved it. The CLI goes through /v1/kv (admin token); a node proposes as itself.
 */
export interface SyncRecordStore {
  read(key: string): Promise<{ value: string; version: number } | undefined>;
  write(key: string, value: string, expectedVersion: number): Promise<void>;
  /**
   * A small change in one request (the CLI: POST /v1/sync/<app>/commit): its blobs, its new page
   * manifests and the index (the last manifest, tagged `header.tag`), and the record
   * (compare-and-set at `header.expectedVersion`: CONFLICT when another writer moved it). Absent —
   * or NOT_FOUND from a node without it — the separate requests are made instead.
   */
  commit?(app: string, header: SyncCommitHeader, blobs: Buffer[], manifests: Buffer[]): Promise<void | { untagged?: boolean }>;
}

const TREE_MEDIA_TYPE = 'application/vnd.omni.sync.tree.v1+json';
const CHUNK_MEDIA_TYPE = 'application/octet-stream';
// The registry writes a manifest and its blob links in one catalog transaction of at most 1,000 compares.
const PAGE_LAYERS = 400;
const PARALLEL = 8;
/**
 * Revisions of a workspace whose tags (`ws-<revision>`, garbage-collection roots) are kept: the
 * sync that writes revision N removes the tag of N - this, so `omni sync --watch` saving every few
 * seconds does not keep every revision's contents forever (the next GC collects them).
 */
export const WORKSPACE_REVISIONS_KEPT = 10;
const CAS_ATTEMPTS = 5;
const SMALL_READ = 1024 * 1024;
/** Blobs up to this size are uploaded without a HEAD first (a one-file change: its pack and its page of the tree). */
const SMALL_UPLOAD_BYTES = 256 * 1024;
const STATE_FILE = '.omni/sync-state.json';
/** OMNI_SYNC_TRACE=1: each phase of a sync on stderr, in ms since the process started (finding where a sync's time goes). */
const TRACE = process.env.OMNI_SYNC_TRACE === '1';
function trace(what: string): void {
  if (TRACE) process.stderr.write(`sync trace: ${performance.now().toFixed(0)} ms ${what}\n`);
}
export const APP_RE = /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/;

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
  /** Files and directories of this side that its .gitignore files leave out of the sync (a directory counts once). */
  ignored: number;
  bytesUploaded: number;
  bytesDownloaded: number;
  chunksSkipped: number;
  dryRun: boolean;
  noop: boolean;
}

// ---------------------------------------------------------------- scanning

const sha256Hex = (data: string | Uint8Array) => createHash('sha256').update(data).digest('hex');
const sha256Of = (b: Uint8Array) => `sha256:${sha256Hex(b)}`;

async function hashFile(path: string, sizeHint = Infinity, blocking = false): Promise<{ sha256: string; chunks: string[]; size: number }> {
  if (sizeHint <= SMALL_READ) {
    // A small file is read whole (a stream would allocate a 1 MiB buffer for each: seconds over
    // thousands of files); blocking (the CLI): synchronous reads into one reused buffer instead of
    // four thread-pool round trips (open, stat, read, close) and a new buffer for each file — 0.2 ms
    // a file, a second over 5,000 files, and the garbage of 200 MB.
    const buf = blocking ? readSmallSync(path) : await readFile(path);
    if (buf.length <= Math.min(SMALL_READ, CHUNK_BYTES)) {
      const d = sha256Of(buf);
      return { sha256: d, chunks: buf.length ? [d] : [], size: buf.length };
    }
  }
  const whole = createHash('sha256');
  const chunks: string[] = [];
  let chunk = createHash('sha256');
  let inChunk = 0;
  let size = 0;
  const consume = (buf: Buffer) => {
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
  };
  if (blocking) {
    // Each run is read and hashed with nothing in between (the buffer is shared by every call);
    // the event loop gets a turn every YIELD_EVERY_BYTES (requests under way, timers, Ctrl-C).
    let sinceYield = 0;
    for (const buf of readRunsSync(path)) {
      consume(buf);
      if ((sinceYield += buf.length) >= YIELD_EVERY_BYTES) {
        sinceYield = 0;
        await new Promise((r) => setImmediate(r));
      }
    }
  } else for await (const buf of createReadStream(path, { highWaterMark: READ_RUN_BYTES }) as AsyncIterable<Buffer>) consume(buf);
  if (inChunk > 0) chunks.push('sha256:' + chunk.digest('hex'));
  return { sha256: 'sha256:' + whole.digest('hex'), chunks, size };
}

/** A larger file is read in runs of this many bytes. */
const READ_RUN_BYTES = 1024 * 1024;
/** Bytes a blocking scan hashes between two turns it gives the event loop. */
const YIELD_EVERY_BYTES = 64 * 1024 * 1024;
let runScratch: Buffer | undefined;
/**
 * The file's bytes in runs of READ_RUN_BYTES, read synchronously into one buffer shared by every
 * call: a caller uses each run before it awaits anything or asks for the next. A stream's new 1 MiB
 * buffer for every run faults its pages in afresh: ~10 µs a page on a VM, 20,000 faults per 80 MB.
 */
function* readRunsSync(path: string): Generator<Buffer> {
  runScratch ??= Buffer.allocUnsafe(READ_RUN_BYTES);
  const fd = openSync(path, 'r');
  try {
    for (let got; (got = readSync(fd, runScratch, 0, runScratch.length, null)) > 0; ) yield runScratch.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

let scratch: Buffer | undefined;
/** A file of at most SMALL_READ bytes, read into a buffer reused by the next call (one byte more is asked for: a longer file comes back longer than SMALL_READ). */
function readSmallSync(path: string): Buffer {
  scratch ??= Buffer.allocUnsafe(SMALL_READ + 1);
  const fd = openSync(path, 'r');
  try {
    let n = 0;
    for (let got; n < scratch.length && (got = readSync(fd, scratch, n, scratch.length - n, null)) > 0; ) n += got;
    return scratch.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/** Reads `len` bytes of `path` from `start` into `buf` at `at`; false when the file has fewer (it changed since it was hashed). */
async function readExactly(path: string, start: number, len: number, buf: Buffer, at: number, blocking: boolean): Promise<boolean> {
  if (blocking) {
    const fd = openSync(path, 'r');
    try {
      let n = 0;
      for (let got; n < len && (got = readSync(fd, buf, at + n, len - n, start + n)) > 0; ) n += got;
      return n === len;
    } finally {
      closeSync(fd);
    }
  }
  const fh = await open(path, 'r');
  try {
    let n = 0;
    for (let got; n < len && (got = (await fh.read(buf, at + n, len - n, start + n)).bytesRead) > 0; ) n += got;
    return n === len;
  } finally {
    await fh.close();
  }
}

/** Uploads bytes held in memory as a blob: directly when the registry can, else through a temp file. */
async function putBytes(reg: SyncRegistry, repo: string, digest: string, bytes: Buffer, tmpDir: string): Promise<void> {
  if (reg.uploadBytes) {
    await reg.uploadBytes(repo, digest, bytes);
    return;
  }
  const tmp = join(tmpDir, `up-${randomBytes(6).toString('hex')}`);
  try {
    await writeFile(tmp, bytes);
    await reg.uploadBlob(repo, digest, tmp);
  } finally {
    await rm(tmp, { force: true });
  }
}

/** A regular file as stat saw it (no content read). */
export interface StatEntry {
  path: string;
  size: number;
  mtimeMs: number;
  mode: number;
}

/** A .gitignore larger than this is refused (a sync error naming it). */
export const GITIGNORE_MAX_BYTES = 1024 * 1024;

/** What statTree found: the files, the refused paths, and what the tree's .gitignore files leave out. */
export interface StatedTree {
  entries: StatEntry[];
  skipped: { path: string; why: string }[];
  /** Files and directories left out by a .gitignore (a directory counts once: it is not entered). */
  ignored: number;
  /** The rules of every .gitignore read (the root's first, then each directory's as it was entered). */
  rules: IgnoreRule[];
}

/** Adds the rules of `rel`'s .gitignore (`sizeBytes` long, its text from `read`), scoped to `rel`, to `rules`; an error names the file. */
function gitignoreOf(rel: string, sizeBytes: number, read: () => string, rules: IgnoreRule[]): void {
  const name = rel ? `${rel}/.gitignore` : '.gitignore';
  if (sizeBytes > GITIGNORE_MAX_BYTES) throw new OmniError('INVALID_ARGUMENT', `${name} is over ${GITIGNORE_MAX_BYTES} bytes`);
  const text = read();
  try {
    rules.push(...parseIgnore(text, false, rel));
  } catch (err) {
    throw new OmniError('INVALID_ARGUMENT', `${name}: ${(err as Error).message}`);
  }
  if (rules.length > MAX_IGNORE_RULES) throw new OmniError('INVALID_ARGUMENT', `the tree's .gitignore files hold over ${MAX_IGNORE_RULES} patterns`);
}

/**
 * The client's regular files, stat only (sorted by path); refused paths are reported, not synced.
 * Paths the tree's .gitignore files ignore (git's rules: a directory's .gitignore applies below
 * it, the last matching pattern wins, an ignored directory is not entered) are left out.
 */
export async function statTree(root: string, blocking = false): Promise<StatedTree> {
  const out: StatEntry[] = [];
  const skipped: { path: string; why: string }[] = [];
  const rules: IgnoreRule[] = [];
  let ignored = 0;
  const take = (p: string, st: Stats, link: () => string | Promise<string>): void | Promise<void> => {
    if (matchesIgnore(rules, p, st.isDirectory())) {
      ignored++;
      return;
    }
    if (st.isDirectory()) return walk(p);
    if (st.isSymbolicLink()) {
      const found = (target: string) => {
        skipped.push({ path: p, why: checkSymlink(p, target) ?? 'symlinks are not synced' });
      };
      const target = link();
      return typeof target === 'string' ? found(target) : target.then(found);
    }
    if (!st.isFile()) skipped.push({ path: p, why: 'not a regular file (device, fifo or socket)' });
    else {
      if (out.length >= MAX_FILES) throw new OmniError('TOO_LARGE', `${root} has over ${MAX_FILES} files`);
      out.push({ path: p, size: st.size, mtimeMs: st.mtimeMs, mode: st.mode & 0o111 ? 0o755 : 0o644 });
    }
  };
  /** The entries of a directory to look at, sorted, without .omni and refused paths. */
  const names = (rel: string, entries: string[]): string[] => {
    entries.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const paths: string[] = [];
    for (const name of entries) {
      const p = rel ? `${rel}/${name}` : name;
      if (p === '.omni') continue;
      const why = checkPath(p);
      if (why) skipped.push({ path: p, why });
      else paths.push(p);
    }
    return paths;
  };
  // The CLI (nothing else to do meanwhile): synchronous calls, no event-loop turn per file. Every
  // entry is lstat'ed, directories too, right before it is used (a directory's type from readdir
  // could be stale by the time it is entered: replaced by a symlink, readdir would follow it).
  const prefix = root.endsWith('/') ? root : `${root}/`; // joined by hand: path.join per file cost ~5 ms of 5,000
  /** A directory's .gitignore path when it holds one as a regular file (a symlink or directory of that name does not count). */
  const gitignorePath = (rel: string, entries: string[]): string | undefined => (entries.includes('.gitignore') ? (rel ? `${prefix}${rel}/.gitignore` : `${prefix}.gitignore`) : undefined);
  const walkSync = (rel: string): void => {
    const entries = readdirSync(rel ? prefix + rel : root);
    const gi = gitignorePath(rel, entries);
    const st = gi ? lstatSync(gi) : undefined;
    if (gi && st?.isFile()) gitignoreOf(rel, st.size, () => readFileSync(gi, 'utf8'), rules);
    for (const p of names(rel, entries)) take(p, lstatSync(prefix + p), () => readlinkSync(prefix + p));
  };
  // A node: the entries' stats in parallel (the thread pool works on several at once), used in order.
  const walkAsync = async (rel: string): Promise<void> => {
    const entries = await readdir(join(root, rel));
    const gi = gitignorePath(rel, entries);
    const st = gi ? await lstat(gi) : undefined;
    if (gi && st?.isFile()) {
      const text = st.size <= GITIGNORE_MAX_BYTES ? await readFile(gi, 'utf8') : ''; // a larger one is refused by gitignoreOf, unread
      gitignoreOf(rel, st.size, () => text, rules);
    }
    const paths = names(rel, entries);
    const stats = paths.map((p) => {
      const st = lstat(join(root, p));
      st.catch(() => undefined);
      return st;
    });
    for (const [i, p] of paths.entries()) await take(p, await stats[i], () => readlink(join(root, p)));
  };
  const walk = (rel: string): void | Promise<void> => (blocking ? walkSync(rel) : walkAsync(rel));
  await walk('');
  out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { entries: out, skipped, ignored, rules };
}

export function statFingerprint(entries: StatEntry[]): string {
  // The paths joined (NUL is in no path) and the numbers as raw float64s, each hashed in one call:
  // formatting 5,000 mtimes as text cost ~15 ms of a one-file sync, this ~1.5 ms.
  const nums = new Float64Array(entries.length * 3);
  const paths = new Array<string>(entries.length);
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    paths[i] = e.path;
    nums[3 * i] = e.size;
    nums[3 * i + 1] = e.mtimeMs;
    nums[3 * i + 2] = e.mode;
  }
  return 'v2:' + createHash('sha256').update(paths.join('\0')).update(new Uint8Array(nums.buffer)).digest('hex');
}

/** The client's tree: regular files only; refused paths are reported, not synced. A file whose size and mtime match its cache entry is not read. */
export async function scanTree(root: string, cache: Map<string, FileEntry>, blocking = false, stated?: Awaited<ReturnType<typeof statTree>>): Promise<{ tree: TreeManifest; skipped: { path: string; why: string }[]; unchanged: boolean }> {
  const { entries, skipped } = stated ?? (await statTree(root, blocking));
  const files: FileEntry[] = [];
  let hits = 0;
  for (const e of entries) {
    const c = cache.get(e.path);
    if (c && c.size === e.size && c.mtimeMs === e.mtimeMs) {
      if (c.mode === e.mode) {
        hits++;
        files.push(c);
      } else files.push({ ...c, mode: e.mode });
    } else {
      const h = await hashFile(join(root, e.path), e.size, blocking);
      files.push({ path: e.path, size: h.size, mtimeMs: e.mtimeMs, mode: e.mode, sha256: h.sha256, chunks: h.chunks });
    }
  }
  // unchanged: every file is the cache's (size, mtime, mode) and none went or came.
  return { tree: { version: MANIFEST_VERSION, files }, skipped, unchanged: hits === files.length && files.length === cache.size };
}

// ---------------------------------------------------------------- the cluster's copy

/** The registry repository holding an app's workspace, and its KV record. */
export const repoOf = (app: string) => `omni-sync/${app}`;
export const recordKey = (app: string) => `sync/${app}`;

interface Remote {
  tree: TreeManifest;
  revision: number;
  /** The KV record's version (0: none yet): the compare-and-set precondition. */
  version: number;
  /** The index digest the record names, its manifests, and how they cut the tree (none without a record). */
  index?: string;
  pages?: string[];
  layout?: PageLayout;
}

/** A failure worth another try: no answer, or a registry that said it cannot serve now (the CLI's registry client fails over on the same). */
function transient(err: unknown): boolean {
  if (!(err instanceof OmniError)) return false;
  if (err.code === 'UNAVAILABLE' || err.code === 'TIMEOUT') return true;
  const status = Number(err.detail.status);
  return err.code === 'REGISTRY_ERROR' && (status === 502 || status === 503 || status === 504);
}

async function retry<T>(what: string, fn: () => Promise<T>, attempts = 5): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (!transient(err) || i + 1 >= attempts) throw err;
      const ms = Math.min(5000, 200 * 2 ** i) * (0.5 + Math.random());
      process.stderr.write(`omni sync: ${what} failed (${(err as Error).message.slice(0, 200)}); retrying in ${Math.round(ms)} ms\n`);
      await new Promise((r) => setTimeout(r, ms));
    }
  }
}

async function readBlobJson(reg: SyncRegistry, repo: string, digest: string, tmpDir: string): Promise<Buffer> {
  const tmp = join(tmpDir, `blob-${randomBytes(6).toString('hex')}`);
  try {
    await retry(`reading ${digest}`, () => reg.downloadBlob(repo, digest, tmp));
    return await readFile(tmp);
  } finally {
    await rm(tmp, { force: true });
    await rm(`${tmp}.part`, { force: true });
  }
}

/** The cluster's copy of the workspace (the record, then its tree pages unless `known` is the index it names). */
export async function readRemote(records: SyncRecordStore, reg: SyncRegistry, app: string, tmpDir: string, known?: { index: string; tree: TreeManifest; pages?: string[]; layout?: PageLayout }, record?: Promise<{ value: string; version: number } | undefined>): Promise<Remote> {
  const rec = await (record ?? retry('reading the workspace record', () => records.read(recordKey(app))));
  if (!rec) return { tree: emptyTree(), revision: 0, version: 0 };
  const v = JSON.parse(rec.value) as { index?: unknown; revision?: unknown };
  if (typeof v.index !== 'string' || !Number.isSafeInteger(v.revision)) throw new OmniError('INVALID', `the sync record of ${app} is malformed`);
  // The record names the tree this client synced to last: no need to fetch it (a no-op sync reads
  // one KV record and stats the directory).
  if (known && known.index === v.index) return { tree: known.tree, revision: v.revision as number, version: rec.version, index: v.index, ...(known.pages ? { pages: known.pages } : {}), ...(known.pages && known.layout ? { layout: known.layout } : {}) };
  const repo = repoOf(app);
  const index = JSON.parse((await retry('reading the workspace index', () => reg.manifest(repo, v.index as string))).bytes.toString('utf8')) as { manifests?: { digest?: unknown; size?: unknown }[] };
  if (!Array.isArray(index.manifests) || index.manifests.length === 0 || index.manifests.length > 100_000 || !index.manifests.every((m) => typeof m?.digest === 'string')) throw new OmniError('INVALID', `the workspace index of ${app} is malformed`);
  const pages = index.manifests.map((m) => m.digest as string);
  const configs: string[] = new Array(pages.length);
  await pool(pages.map((d, i) => ({ d, i })), PARALLEL, async ({ d, i }) => {
    const page = JSON.parse((await retry('reading the workspace manifest', () => reg.manifest(repo, d))).bytes.toString('utf8')) as { config?: { digest?: unknown } };
    if (typeof page.config?.digest !== 'string') throw new OmniError('INVALID', `a workspace manifest of ${app} is malformed`);
    configs[i] = page.config.digest;
  });
  // A page of the tree with more layers than a manifest holds spans consecutive manifests with the same config.
  const blobs = configs.filter((c, i) => i === 0 || configs[i - 1] !== c);
  const trees: TreeManifest[] = new Array(blobs.length);
  await pool(blobs.map((d, i) => ({ d, i })), PARALLEL, async ({ d, i }) => {
    trees[i] = decodeManifest(await readBlobJson(reg, repo, d, tmpDir));
  });
  // The layout (manifests per page, as consecutive runs of one config): kept for the next sync.
  const layout: PageLayout = [];
  configs.forEach((c, i) => {
    if (i === 0 || configs[i - 1] !== c) layout.push({ files: trees[layout.length].files.length, manifests: [] });
    layout[layout.length - 1].manifests.push({ digest: pages[i], size: index.manifests![i].size as number });
  });
  const sized = index.manifests.every((m) => Number.isSafeInteger(m.size) && (m.size as number) > 0);
  return { tree: joinPages(trees), revision: v.revision as number, version: rec.version, index: v.index, pages, ...(sized ? { layout } : {}) };
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

/**
 * The buffers an upload reads packs and chunks into, reused once sent (a buffer of a failed upload
 * is not given back: a request may still hold it). A new buffer of several MiB per pack or chunk
 * faults its pages in afresh — ~10 µs a page on a VM: a third of the CLI's CPU in an initial sync
 * of 200 MB. At most PARALLEL are in use at once, so at most that many are kept.
 */
const POOLED_FROM_BYTES = 1024 * 1024;
const UPLOAD_BUFFER_BYTES = Math.max(PACK_BYTES + PACK_FILE_MAX, CHUNK_BYTES);
class UploadBuffers {
  private readonly free: Buffer[] = [];

  /** A buffer of exactly `size` bytes: under POOLED_FROM_BYTES a new one, else a view of a kept one when one is free. */
  take(size: number): Buffer {
    if (size < POOLED_FROM_BYTES) return Buffer.allocUnsafe(size);
    const i = this.free.findIndex((b) => b.length >= size);
    // its own memory (never Node's shared pool), room for any pack or chunk
    const whole = i < 0 ? Buffer.allocUnsafeSlow(Math.max(size, UPLOAD_BUFFER_BYTES)) : this.free.splice(i, 1)[0];
    return whole.subarray(0, size);
  }

  /** `buf`, from take(), is no longer used (a small one, or one not made here, is left to the GC). */
  give(buf: Buffer): void {
    // a buffer from allocUnsafe (small, maybe Node's shared pool) never has this much memory of its own
    if (buf.byteOffset !== 0 || buf.buffer.byteLength < UPLOAD_BUFFER_BYTES || this.free.length >= PARALLEL) return;
    this.free.push(Buffer.from(buf.buffer, 0, buf.buffer.byteLength));
  }
}

/**
 * Sends what the repository lacks for `files`: small files (packable) in packs of about PACK_BYTES
 * (one blob each; a content the cluster's tree already has in a pack is not sent again), larger ones
 * as CHUNK_BYTES chunks (each its own blob; those there are skipped). Resumable: packs are built
 * deterministically, so a rerun makes the same pack blobs and skips those already stored.
 * Returns where each newly packed content is (by sha256).
 */
function uploadChunks(reg: SyncRegistry, repo: string, root: string, files: FileEntry[], known: Set<string>, packed: Map<string, PackRef>, localBySha: Map<string, FileEntry>, tmpDir: string, prog: Progress, tick: () => void, blocking: boolean): { built: Promise<Map<string, PackRef>>; done: Promise<void> } {
  const jobs: { digest: string; src: FileEntry; index: number }[] = [];
  const seen = new Set<string>();
  const toPack: FileEntry[] = [];
  for (const f of files) {
    if (packable(f)) {
      if (packed.has(f.sha256)) prog.chunksSkipped++;
      else toPack.push(localBySha.get(f.sha256) ?? f);
      continue;
    }
    f.chunks.forEach((c, i) => {
      if (seen.has(c)) return;
      seen.add(c);
      if (known.has(c)) prog.chunksSkipped++;
      else jobs.push({ digest: c, src: localBySha.get(f.sha256) ?? f, index: i });
    });
  }
  const newPacks = new Map<string, PackRef>();
  const buffers = new UploadBuffers();
  // A pack is put together in memory (at most PACK_BYTES + PACK_FILE_MAX; PARALLEL at once) and
  // sent from there: no temp file written and read back.
  const packJob = async (members: FileEntry[]) => {
    const { buf, digest } = await buildPack(root, members, blocking, newPacks, buffers);
    const off = buf.length;
    if (--unbuilt === 0) allBuilt();
    // A small pack goes up without asking first (sending it costs less than the round trip; the registry keeps one copy).
    if (off > SMALL_UPLOAD_BYTES && (await retry(`checking pack ${digest}`, () => reg.hasBlob(repo, digest)))) {
      prog.chunksSkipped++;
      buffers.give(buf);
      return;
    }
    await retry(`uploading pack ${digest} (${members.length} files)`, () => putBytes(reg, repo, digest, buf, tmpDir));
    buffers.give(buf);
    prog.bytesUp += off;
    tick();
  };
  const packs = planPacks(toPack);
  // built: every pack's digest is known (the workspace's description can be made while they upload)
  let unbuilt = packs.length;
  let allBuilt = () => {};
  const builtP = new Promise<void>((res) => (allBuilt = res));
  if (unbuilt === 0) allBuilt();
  const all: ({ pack: FileEntry[] } | { digest: string; src: FileEntry; index: number })[] = [...packs.map((pack) => ({ pack })), ...jobs];
  const done = pool(all, PARALLEL, async (j) => {
    if ('pack' in j) return packJob(j.pack);
    if (await retry(`checking ${j.digest}`, () => reg.hasBlob(repo, j.digest))) {
      prog.chunksSkipped++;
      return;
    }
    const len = Math.min(CHUNK_BYTES, j.src.size - j.index * CHUNK_BYTES);
    // read into memory (CHUNK_BYTES at most, PARALLEL at once) and sent from there; the registry
    // refuses bytes that do not match the digest the scan found: the file changed since
    const buf = buffers.take(len);
    const whole = await readExactly(join(root, j.src.path), j.index * CHUNK_BYTES, len, buf, 0, blocking).catch(goneIsChanged(j.src.path));
    if (!whole) throw changedDuringSync(j.src.path);
    await retry(`uploading ${j.src.path}${j.src.chunks.length > 1 ? ` chunk ${j.index}` : ''}`, () => putBytes(reg, repo, j.digest, buf, tmpDir)).catch((err: unknown) => {
      if (err instanceof OmniError && err.code === 'DIGEST_INVALID') throw changedDuringSync(j.src.path);
      throw err;
    });
    buffers.give(buf);
    prog.bytesUp += len;
    tick();
  });
  done.catch(() => undefined);
  return { built: Promise.race([builtP, done]).then(() => newPacks), done };
}

/**
 * A pack of `members` put together in memory (each file read and checked against the digest the
 * scan found: CHANGED_DURING_SYNC otherwise); where each member is goes into `packs`.
 */
async function buildPack(root: string, members: FileEntry[], blocking: boolean, packs: Map<string, PackRef>, buffers?: UploadBuffers): Promise<{ buf: Buffer; digest: string }> {
  const size = members.reduce((n, m) => n + m.size, 0);
  const buf = buffers ? buffers.take(size) : Buffer.allocUnsafe(size);
  const offsets: number[] = [];
  let off = 0;
  for (const m of members) {
    const whole = await readExactly(join(root, m.path), 0, m.size, buf, off, blocking).catch(goneIsChanged(m.path));
    if (!whole || sha256Of(buf.subarray(off, off + m.size)) !== m.sha256) throw changedDuringSync(m.path);
    offsets.push(off);
    off += m.size;
  }
  const digest = sha256Of(buf);
  members.forEach((m, i) => packs.set(m.sha256, { digest, offset: offsets[i], packSize: off }));
  return { buf, digest };
}

/**
 * Sends a small change in one request (SyncRecordStore.commit): every file to send packable, every
 * new pack and page blob at most SYNC_COMMIT_BLOB_BYTES, all within SYNC_COMMIT_MAX_BYTES.
 * Returns what was written; undefined when the change is not that small (nothing sent);
 * 'conflict' when another writer moved the record; 'unsupported' from a node without the request.
 */
type SmallCommit = { revision: number; index: string; pages: string[]; cut: CutTree; packs: Map<string, PackRef>; bytes: number };

async function commitSmall(records: SyncRecordStore, reg: SyncRegistry | undefined, app: string, root: string, plan: SyncPlan, remote: Remote, localBySha: Map<string, FileEntry>, blocking: boolean, beforeCommit?: () => Promise<void>, whileCommitting?: (done: SmallCommit) => void): Promise<SmallCommit | 'conflict' | 'unsupported' | undefined> {
  if (!records.commit || plan.upload.some((f) => f.size > 0 && !packable(f))) return undefined; // a chunked file goes through /v2/ (an empty one sends nothing)
  const packed = packsOf(remote.tree);
  const toPack = plan.upload.filter((f) => !packed.has(f.sha256)).map((f) => localBySha.get(f.sha256) ?? f);
  const groups = planPacks(toPack);
  if (groups.some((g) => g.reduce((n, f) => n + f.size, 0) > SYNC_COMMIT_BLOB_BYTES)) return undefined;
  // Built into a map of their own: a change found too large after all leaves `packed` as it was.
  const mine = new Map<string, PackRef>();
  const packs = [];
  for (const g of groups) packs.push(await buildPack(root, g, blocking, mine));
  const all = new Map([...packed, ...mine]);
  const revision = remote.revision + 1;
  const paged = withPacks(plan.remote, all);
  const { manifests: listed, todo, pageBlobs, index, indexDigest, layout } = workspaceManifests(paged, new Set(remote.pages ?? []), remote.layout ? { tree: remote.tree, layout: remote.layout } : undefined);
  const blobs = [...packs.map((p) => p.buf), ...pageBlobs];
  const manifests = [...todo.map((j) => j.body), index];
  const bytes = [...blobs, ...manifests].reduce((n, b) => n + b.length, 0);
  // The node writes it all in one Raft transaction (at most 1,000 compares, 2 MiB): about two
  // compares for each page the index lists and each layer of a new page manifest.
  const compares = 2 * listed.length + 2 * todo.reduce((n, j) => n + j.layers, 0) + 2 * blobs.length + 4;
  const manifestBytes = manifests.reduce((n, b) => n + b.length, 0);
  if (pageBlobs.some((b) => b.length > SYNC_COMMIT_BLOB_BYTES) || blobs.length > SYNC_COMMIT_MAX_BLOBS || manifests.length > SYNC_COMMIT_MAX_MANIFESTS || bytes > SYNC_COMMIT_MAX_BYTES - 64 * 1024 || compares > SYNC_COMMIT_MAX_COMPARES || manifestBytes > SYNC_COMMIT_MAX_MANIFEST_BYTES) return undefined;
  trace(`pages encoded (${listed.length}, ${todo.length} new)`);
  const header: SyncCommitHeader = {
    expectedVersion: remote.version,
    record: JSON.stringify({ index: indexDigest, revision }),
    blobs: blobs.map((b) => ({ digest: sha256Of(b), size: b.length })),
    manifests: [...todo.map((j) => ({ digest: j.digest, mediaType: OCI_MANIFEST, size: j.body.length })), { digest: indexDigest, mediaType: OCI_INDEX, size: index.length }],
    tag: `ws-${revision}`,
    // the revision that falls out of the kept ones loses its tag in the same transaction
    ...(revision - WORKSPACE_REVISIONS_KEPT >= 1 ? { untag: `ws-${revision - WORKSPACE_REVISIONS_KEPT}` } : {}),
  };
  await beforeCommit?.();
  const done: SmallCommit = { revision, index: indexDigest, pages: listed.map((j) => j.digest), cut: { tree: paged, layout }, packs: all, bytes: packs.reduce((n, p) => n + p.buf.length, 0) };
  try {
    const committing = retry('committing the change', () => records.commit!(app, header, blobs, manifests));
    // Once the request is on its way (the socket is written in the ticks before this runs), the
    // caller's work for a commit that succeeds (the state file's text) is done while the cluster
    // commits; a failure of it is the caller's to meet again when it does that work itself.
    if (whileCommitting)
      setImmediate(() => {
        try {
          whileCommitting(done);
        } catch {
          // done again after the commit (and reported then)
        }
      });
    const answer = await committing;
    // a node of an earlier version ignores `untag`: the tag then goes the separate way (best effort)
    if (header.untag && !(answer && answer.untagged === true)) void reg?.deleteTag?.(repoOf(app), header.untag).catch(() => undefined);
  } catch (err) {
    if (err instanceof OmniError && err.code === 'CONFLICT') return 'conflict';
    // a node of an earlier version (NOT_FOUND), one without a registry (NOT_IMPLEMENTED), or a
    // change whose transaction the node found too large (TOO_LARGE): the separate way
    if (err instanceof OmniError && ['NOT_FOUND', 'NOT_IMPLEMENTED', 'TOO_LARGE'].includes(err.code)) return 'unsupported';
    throw err;
  }
  return done;
}

/** The cluster's tree with every packed file's pack set (from `packs`, by sha256); a small file without one is an error. */
export function withPacks(tree: TreeManifest, packs: Map<string, PackRef>): TreeManifest {
  return {
    version: MANIFEST_VERSION,
    files: tree.files.map((f) => {
      if (!packable(f)) {
        const { pack: _drop, ...rest } = f;
        return rest;
      }
      const p = packs.get(f.sha256) ?? f.pack;
      if (!p) throw new OmniError('INTERNAL', `${f.path}: no pack holds its content`);
      return { ...f, pack: p };
    }),
  };
}

const packsOf = (t: TreeManifest) => new Map(t.files.filter((f) => f.pack).map((f) => [f.sha256, f.pack!]));

async function putBlobBytes(reg: SyncRegistry, repo: string, bytes: Buffer, tmpDir: string): Promise<string> {
  const digest = sha256Of(bytes);
  if (bytes.length > SMALL_UPLOAD_BYTES && (await retry('checking the tree manifest', () => reg.hasBlob(repo, digest)))) return digest;
  await retry('uploading the tree manifest', () => putBytes(reg, repo, digest, bytes, tmpDir));
  return digest;
}

/**
 * Writes the workspace's description and returns the index digest and its page manifests: the tree
 * cut into stable pages (protocol/sync/tree.ts pageTree), each page a blob that is the config of
 * OCI manifests whose layers are the page's chunks and packs (at most PAGE_LAYERS each), listed by
 * an OCI index tagged `ws-<revision>`. A page manifest in `knownPages` (the cluster has it) is not
 * written again: a one-file change writes one page, its manifest and the index.
 */
async function putWorkspace(reg: SyncRegistry, repo: string, tree: TreeManifest, revision: number, tmpDir: string, knownPages: Set<string>, contentsIn: Promise<void>, previous?: CutTree): Promise<{ index: string; pages: string[]; layout: PageLayout }> {
  const { manifests, todo, pageBlobs, index, indexDigest, layout } = workspaceManifests(tree, knownPages, previous);
  trace(`pages encoded (${manifests.length}, ${todo.length} new)`);
  await pool(pageBlobs, PARALLEL, async (b) => {
    await putBlobBytes(reg, repo, b, tmpDir);
  });
  trace('page blobs in');
  await contentsIn;
  trace('contents in');
  await pool(todo, PARALLEL, async (j) => {
    await retry('writing a workspace manifest', () => reg.putManifest(repo, j.digest, j.body, OCI_MANIFEST));
  });
  trace('page manifests in');
  await retry('writing the workspace index', () => reg.putManifest(repo, `ws-${revision}`, index, OCI_INDEX));
  return { index: indexDigest, pages: manifests.map((j) => j.digest), layout };
}

interface PageManifest {
  body: Buffer;
  digest: string;
  page: Buffer;
  pageDigest: string;
  /** Its layers (chunks and packs). */
  layers: number;
}

/** A tree with the layout its pages were written in. */
type CutTree = { tree: TreeManifest; layout: PageLayout };

/** The same entry as a page manifest encodes it (every field of FileEntry; `a` with pack `aPack`). */
function sameEntry(a: FileEntry, b: FileEntry, aPack = a.pack): boolean {
  if (a.path !== b.path || a.size !== b.size || a.mtimeMs !== b.mtimeMs || a.mode !== b.mode || a.sha256 !== b.sha256 || a.chunks.length !== b.chunks.length) return false;
  for (let i = 0; i < a.chunks.length; i++) if (a.chunks[i] !== b.chunks[i]) return false;
  const p = aPack;
  const q = b.pack;
  return p === q || (p !== undefined && q !== undefined && p.digest === q.digest && p.offset === q.offset && p.packSize === q.packSize);
}

/** The pages of `previous.tree` as `previous.layout` cut it, by their first path; undefined when the layout does not fit the tree. */
function previousPages(previous: CutTree): Map<string, { files: FileEntry[]; manifests: { digest: string; size: number }[] }> | undefined {
  const out = new Map<string, { files: FileEntry[]; manifests: { digest: string; size: number }[] }>();
  let at = 0;
  for (const page of previous.layout) {
    const files = previous.tree.files.slice(at, at + page.files);
    at += page.files;
    if (files.length > 0) out.set(files[0].path, { files, manifests: page.manifests });
  }
  return at === previous.tree.files.length ? out : undefined;
}

/**
 * The workspace's description (see putWorkspace): its page manifests (`todo`: those not in
 * `knownPages`, with `pageBlobs`, their pages' bytes, once each), the index listing them all, and
 * the layout. A page whose files are those of a page of `previous` (the cluster's tree, as its
 * layout cut it) with manifests the cluster has is not encoded again: its manifests are listed as
 * they are (the same files give the same bytes).
 */
export function workspaceManifests(tree: TreeManifest, knownPages: Set<string>, previous?: CutTree): { manifests: { digest: string; size: number }[]; todo: PageManifest[]; pageBlobs: Buffer[]; index: Buffer; indexDigest: string; layout: PageLayout } {
  const before = previous ? previousPages(previous) : undefined;
  const encoded: PageManifest[] = [];
  const layout: PageLayout = [];
  for (const p of pageTree(tree)) {
    const old = p.files.length > 0 ? before?.get(p.files[0].path) : undefined;
    if (old && old.files.length === p.files.length && old.manifests.every((m) => knownPages.has(m.digest)) && p.files.every((f, i) => sameEntry(f, old.files[i]))) {
      layout.push({ files: p.files.length, manifests: old.manifests });
      continue;
    }
    const pageBytes = encodeManifest(p);
    const pageDigest = sha256Of(pageBytes);
    const layers: { mediaType: string; digest: string; size: number }[] = [];
    const seen = new Set<string>();
    for (const f of p.files) {
      if (f.pack) {
        if (!seen.has(f.pack.digest)) layers.push({ mediaType: CHUNK_MEDIA_TYPE, digest: f.pack.digest, size: f.pack.packSize });
        seen.add(f.pack.digest);
        continue;
      }
      f.chunks.forEach((c, i) => {
        if (seen.has(c)) return;
        seen.add(c);
        layers.push({ mediaType: CHUNK_MEDIA_TYPE, digest: c, size: Math.min(CHUNK_BYTES, f.size - i * CHUNK_BYTES) });
      });
    }
    const mine: { digest: string; size: number }[] = [];
    for (let i = 0; i === 0 || i < layers.length; i += PAGE_LAYERS) {
      const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: TREE_MEDIA_TYPE, digest: pageDigest, size: pageBytes.length }, layers: layers.slice(i, i + PAGE_LAYERS) }));
      const m: PageManifest = { body, digest: sha256Of(body), page: pageBytes, pageDigest, layers: Math.min(PAGE_LAYERS, layers.length - i) };
      encoded.push(m);
      mine.push({ digest: m.digest, size: body.length });
    }
    layout.push({ files: p.files.length, manifests: mine });
  }
  // The page blobs go up while the contents do; a manifest is written once its layers are all in.
  const todo = encoded.filter((j) => !knownPages.has(j.digest));
  const pageBlobs = [...new Map(todo.map((j) => [j.pageDigest, j.page])).values()];
  const manifests = layout.flatMap((p) => p.manifests); // in index order
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: manifests.map((m) => ({ mediaType: OCI_MANIFEST, digest: m.digest, size: m.size })) }));
  return { manifests, todo, pageBlobs, index, indexDigest: sha256Of(index), layout };
}

// ---------------------------------------------------------------- writing the client's side

async function materialise(reg: SyncRegistry, repo: string, root: string, files: FileEntry[], localBySha: Map<string, FileEntry>, tmpDir: string, prog: Progress, tick: () => void): Promise<Map<string, string>> {
  // Every new content is first made complete in .omni/tmp (from a local file with the same digest,
  // else from the cluster's chunks), checked, and only then renamed into place: a sync broken off
  // here leaves the client's files as they were.
  const ready = new Map<string, string>();
  // A pack is fetched once (on first need) and the files cut out of it; removed at the end.
  const packFiles = new Map<string, Promise<string>>();
  const getPack = (digest: string): Promise<string> => {
    let p = packFiles.get(digest);
    if (!p) {
      const dest = join(tmpDir, `pack-${randomBytes(6).toString('hex')}`);
      p = retry(`downloading pack ${digest}`, () => reg.downloadBlob(repo, digest, dest)).then(() => dest);
      packFiles.set(digest, p);
    }
    return p;
  };
  try {
  await pool(files, PARALLEL, async (f) => {
    const tmp = join(tmpDir, `down-${randomBytes(6).toString('hex')}`);
    const src = localBySha.get(f.sha256);
    if (src) await copyFile(join(root, src.path), tmp);
    else if (f.pack) {
      const pack = await getPack(f.pack.digest);
      await pipeline(createReadStream(pack, { start: f.pack.offset, end: f.pack.offset + f.size - 1 }), createWriteStream(tmp));
      prog.bytesDown += f.size;
      tick();
    } else {
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
    const h = await hashFile(tmp, f.size);
    if (h.sha256 !== f.sha256) throw new OmniError('DIGEST_INVALID', `${f.path}: the content put together does not match ${f.sha256}`);
    await chmod(tmp, f.mode);
    ready.set(f.path, tmp);
  });
  } finally {
    for (const p of packFiles.values()) await p.then((path) => rm(path, { force: true }), () => undefined);
  }
  return ready;
}

// ---------------------------------------------------------------- the sync

/**
 * The state file begins `{"check":"<SHA-256 hex>",` and the hash is of the state's JSON as
 * encodeSyncState wrote it (the rest of the file, with its own `{`); an earlier version reads the
 * file as it is (an unknown field). A state whose JSON matches its check is one this version wrote
 * from checked trees: it is read without checking every entry's rules again (~8 ms of a one-file
 * sync of 5,000 files). Any other (edited, damaged, or written without the check) is checked in full.
 * The check catches accidents (a hand edit, a torn or damaged file), not intent: anyone who can
 * write DIR/.omni can recompute it — as they can change DIR's files, and the scan cache is trusted
 * for content anyway. What a crafted state can do is bounded all the same: base entries reach the
 * disk only through the cluster's tree, which is then the base itself (nothing comes down), and a
 * bad pack reference makes pages the node and every reader refuse.
 */
const CHECK_PREFIX = '{"check":"';
const CHECKED_AT = CHECK_PREFIX.length + 64 + 2; // where the state's own fields begin

function withCheck(json: string): string {
  return `${CHECK_PREFIX}${sha256Hex(json)}",${json.slice(1)}`;
}

/** The state's JSON and whether it matches the file's check. */
function checked(text: string): { json: string; intact: boolean } {
  if (!text.startsWith(CHECK_PREFIX) || text.slice(CHECKED_AT - 2, CHECKED_AT) !== '",') return { json: text, intact: false };
  const json = `{${text.slice(CHECKED_AT)}`;
  return { json, intact: sha256Hex(json) === text.slice(CHECK_PREFIX.length, CHECKED_AT - 2) };
}

async function loadState(path: string, app: string): Promise<SyncState> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { app, base: emptyTree(), local: emptyTree() };
    throw new OmniError('INVALID', `${path}: ${(err as Error).message}`);
  }
  try {
    const { json, intact } = checked(text);
    // an edited file is read as a whole (its check field is just a field then)
    return intact ? decodeSyncState(json, app, { entriesChecked: true }) : decodeSyncState(text, app);
  } catch (err) {
    throw new OmniError('INVALID', `${path}: ${(err as Error).message} (remove it to sync from scratch: files changed on both sides then become conflicts)`);
  }
}

/**
 * Makes the parent directories of `rel` under `root`, refusing to go through a symlink or a file:
 * a directory the other side writes into (a running task's) may hold a symlink named like a
 * directory of the tree, and following it would write outside the root.
 */
async function safeParent(root: string, rel: string): Promise<string> {
  const parts = rel.split('/').slice(0, -1);
  let cur = root;
  for (const [i, part] of parts.entries()) {
    cur = join(cur, part);
    const st = await lstat(cur).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (!st) await mkdir(cur);
    else if (st.isSymbolicLink()) throw new OmniError('INVALID', `${rel}: '${parts.slice(0, i + 1).join('/')}' is a symlink: not writing through it (it could lead outside ${root})`);
    else if (!st.isDirectory()) throw new OmniError('CONFLICT', `${rel}: '${parts.slice(0, i + 1).join('/')}' is a file here, a directory on the other side`);
  }
  return join(root, rel);
}

/** The no-op fast path's record: the stat fingerprint of the client's files and the index, when both sides are equal. */
async function writeQuick(path: string, app: string, index: string, files: FileEntry[], fingerprint = statFingerprint(files)): Promise<void> {
  const tmp = `${path}.tmp`;
  await writeFile(tmp, JSON.stringify({ app, index, fingerprint }));
  await rename(tmp, path);
}

const treeBytes = (t: TreeManifest) => t.files.reduce((n, f) => n + f.size, 0);
const mb = (n: number) => (n < 1024 * 1024 ? `${n} bytes` : `${(n / 1024 / 1024).toFixed(1)} MiB`);

export interface SyncDirOptions {
  /** The workspace record (KV sync/<app>). */
  records: SyncRecordStore;
  registry: SyncRegistry;
  app: string;
  dir: string;
  direction?: Direction;
  dryRun?: boolean;
  /** Who wins a conflict in a two-way sync: `client` is `dir`, `cluster` the stored workspace (default: the cluster; seed 003). */
  winner?: 'client' | 'cluster';
  /** Where the base and scan cache live (default DIR/.omni/sync-state.json). */
  stateFile?: string;
  /** Scratch space on the same file system as `dir` (default DIR/.omni/tmp). */
  tmpDir?: string;
  /** The app's disk size: a sync leaving either side's tree larger than this fails before anything is written (a promise: awaited when the plan is made). */
  limitBytes?: number | Promise<number | undefined>;
  /**
   * Work the cluster's record is read after (the CLI: the app's tasks writing their files back into
   * the workspace): the directory is stat'ed and the state read meanwhile. Its failure fails the sync.
   */
  recordAfter?: Promise<unknown>;
  /** Write the record even when there is nothing to upload and none exists yet (an empty workspace is a workspace). */
  ensureRecord?: boolean;
  onProgress?: (p: { bytesUp: number; bytesDown: number; totalUp: number; totalDown: number }) => void;
  /**
   * Take the no-op fast path: when the files stat as the last converged sync left them and the record
   * names the same index, return at once (one KV read, the state not read). The returned plan's
   * trees are then empty (nothing changes; callers that need the trees leave this off).
   */
  quickNoop?: boolean;
  /** Stat, hash and read the directory's files with synchronous calls (faster; for a process with nothing else to do meanwhile, like the CLI; not a node). */
  blockingScan?: boolean;
  /** For tests: called after the chunks went up (or were put together, for a change sent in one request) and before the record is written. */
  beforeCommit?: () => Promise<void>;
}

/** A file whose content is not what the scan hashed: it is being written. */
function changedDuringSync(path: string): OmniError {
  return new OmniError('CONFLICT', `${path} changed during the sync (sync again)`, { changedDuringSync: path });
}

/** A file removed since the scan is a change too (the caller rethrows everything else). */
function goneIsChanged(path: string): (err: unknown) => never {
  return (err) => {
    throw (err as NodeJS.ErrnoException).code === 'ENOENT' ? changedDuringSync(path) : err;
  };
}

/**
 * The state file's text after a sync: the base (with the packs: a no-op's next sync uses it as the
 * cluster's tree without fetching it; an entry of the tree this sync paged where it is the same,
 * else a copy with its pack), the client's tree as it is now, and — when both sides were left
 * equal — the cluster's index, its pages and their layout (kept only for a base that is the very
 * tree it cuts, field by field, so the next sync's unchanged pages are those the manifests describe).
 */
function stateText(o: { app: string; plan: SyncPlan; localAfter: TreeManifest; cut: CutTree | undefined; remotePacks: Map<string, PackRef>; remoteIndex: string | undefined; remotePages: string[] | undefined }): { text: string; converged: boolean } {
  const { plan, cut, remotePacks, remoteIndex, remotePages } = o;
  const converged = plan.local.files.length === plan.remote.files.length && plan.local.files.every((f, i) => { const r = plan.remote.files[i]; return f.path === r.path && f.sha256 === r.sha256 && f.mode === r.mode; });
  const paged = cut && cut.tree.files.length === plan.base.files.length ? cut.tree.files : undefined;
  let pagedIsBase = paged !== undefined;
  const base = {
    version: MANIFEST_VERSION,
    files: plan.base.files.map((f, i) => {
      const pack = (packable(f) && remotePacks.get(f.sha256)) || f.pack;
      if (paged && sameEntry(f, paged[i], pack)) return paged[i];
      pagedIsBase = false;
      return pack && pack !== f.pack ? { ...f, pack } : f;
    }),
  };
  const remoteLayout = pagedIsBase ? cut!.layout : undefined;
  const json = encodeSyncState({ app: o.app, base, local: o.localAfter, ...(converged && remoteIndex ? { remoteIndex, ...(remotePages ? { remotePages, ...(remoteLayout ? { remoteLayout } : {}) } : {}) } : {}) });
  return { text: withCheck(json), converged };
}

/** Syncs this many times when a file changes while it is read (a file being written), then gives up with that error. */
const CHANGED_ATTEMPTS = 3;

/**
 * Syncs `dir` with app `app`'s workspace on the cluster: what `omni sync`, `omni run`, `omni stop`
 * and a node's task workspace call. A file that changes between its scan and its upload (a task or
 * an editor writing it) makes the sync start over with a new scan, up to CHANGED_ATTEMPTS times;
 * nothing is committed before the contents are in, so an attempt given up changes nothing.
 */
export async function syncDir(opts: SyncDirOptions): Promise<SyncSummary & { plan: SyncPlan }> {
  // Awaited later (the record read, the plan), unless the sync fails first: never an unhandled rejection.
  for (const p of [opts.limitBytes, opts.recordAfter]) if (p instanceof Promise) p.catch(() => undefined);
  for (let attempt = 1; ; attempt++) {
    try {
      return await syncDirOnce(opts);
    } catch (err) {
      const path = err instanceof OmniError ? err.detail.changedDuringSync : undefined;
      if (typeof path !== 'string' || attempt >= CHANGED_ATTEMPTS) throw err;
      process.stderr.write(`omni sync: ${path} changed while it was read; scanning again (attempt ${attempt + 1} of ${CHANGED_ATTEMPTS})\n`);
      await new Promise((r) => setTimeout(r, 100 * attempt));
    }
  }
}

async function syncDirOnce(opts: SyncDirOptions): Promise<SyncSummary & { plan: SyncPlan }> {
  const { app, dir, records } = opts;
  const direction = opts.direction ?? 'both';
  if (!APP_RE.test(app) || app.length > 100) throw new OmniError('INVALID_ARGUMENT', `not an app name (lower-case letters, digits, . _ -): ${app.slice(0, 120)}`);
  const st = await stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) throw new OmniError('INVALID_ARGUMENT', `${dir} is not a directory`);
  const tmpDir = opts.tmpDir ?? join(dir, '.omni', 'tmp');
  const stateFile = opts.stateFile ?? join(dir, STATE_FILE);
  await mkdir(tmpDir, { recursive: true });
  await mkdir(dirname(stateFile), { recursive: true });
  const reg = opts.registry;
  const repo = repoOf(app);
  const quickFile = `${stateFile}.quick`;
  trace('started');
  // The record is read while the directory is stat'ed (neither needs the other).
  const record = (opts.recordAfter ?? Promise.resolve()).then(() => retry('reading the workspace record', () => records.read(recordKey(app))));
  record.catch(() => undefined);
  const stated = await statTree(dir, opts.blockingScan === true);
  trace('stated');
  if (opts.quickNoop) {
    // The no-op fast path: the files stat the same as when the last sync left both sides equal, and
    // the record still names the index that sync wrote: nothing to do, without reading the state.
    const quick = await readFile(quickFile, 'utf8').then((t) => JSON.parse(t) as { app?: unknown; index?: unknown; fingerprint?: unknown }, () => undefined);
    if (quick && quick.app === app && typeof quick.index === 'string' && quick.fingerprint === statFingerprint(stated.entries)) {
      const rec = await record;
      const v = rec ? (JSON.parse(rec.value) as { index?: unknown; revision?: unknown }) : undefined;
      if (v && v.index === quick.index && Number.isSafeInteger(v.revision)) {
        const none = emptyTree();
        return { app, direction, revision: v.revision as number, uploaded: 0, downloaded: 0, deletedLocal: 0, deletedRemote: 0, conflicts: [], skipped: stated.skipped, ignored: stated.ignored, bytesUploaded: 0, bytesDownloaded: 0, chunksSkipped: 0, dryRun: !!opts.dryRun, noop: true, plan: { upload: [], download: [], deleteLocal: [], deleteRemote: [], conflicts: [], local: none, remote: none, base: none, noop: true } };
      }
    }
  }
  const state = await loadState(stateFile, app);
  trace('state loaded');
  const firstRemote = readRemote(records, reg, app, tmpDir, state.remoteIndex ? { index: state.remoteIndex, tree: state.base, ...(state.remotePages ? { pages: state.remotePages } : {}), ...(state.remoteLayout ? { layout: state.remoteLayout } : {}) } : undefined, record);
  firstRemote.catch(() => undefined);
  const { tree: local, skipped, unchanged } = await scanTree(dir, new Map(state.local.files.map((f) => [f.path, f])), opts.blockingScan === true, stated);
  trace('scanned');
  const localBySha = new Map(local.files.map((f) => [f.sha256, f]));
  const prog: Progress = { bytesUp: 0, bytesDown: 0, chunksSkipped: 0 };
  let commitUnsupported = false;
  for (let attempt = 1; ; attempt++) {
    const remote = await (attempt === 1 ? firstRemote : readRemote(records, reg, app, tmpDir));
    const plan = planSync({ local, remote: remote.tree, base: state.base, direction, ...(opts.winner ? { winner: opts.winner } : {}), ...(stated.rules.length > 0 ? { ignored: (p: string) => isIgnored(stated.rules, p, false) } : {}) });
    trace('planned');
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
      ignored: stated.ignored,
      bytesUploaded: prog.bytesUp,
      bytesDownloaded: prog.bytesDown,
      chunksSkipped: prog.chunksSkipped,
      dryRun: !!opts.dryRun,
      noop: plan.noop,
      plan,
    });
    if (opts.dryRun) return summary(remote.revision);
    const limitBytes = await opts.limitBytes;
    if (limitBytes !== undefined) {
      for (const [side, t] of [['the cluster', plan.remote], ['this side', plan.local]] as const) {
        const size = treeBytes(t);
        if (size > limitBytes && !plan.noop)
          throw new OmniError('TOO_LARGE', `${app}: the workspace would hold ${mb(size)} on ${side}, over the app's disk size of ${mb(limitBytes)} (raise disk: in .omni/config.yaml, or remove files)`, { sizeBytes: size, limitBytes });
      }
    }
    const totalUp = plan.upload.reduce((n, f) => n + f.size, 0);
    const totalDown = plan.download.filter((f) => !localBySha.has(f.sha256)).reduce((n, f) => n + f.size, 0);
    const tick = () => opts.onProgress?.({ bytesUp: prog.bytesUp, bytesDown: prog.bytesDown, totalUp, totalDown });
    // 1. the cluster: chunks, then the manifests, then the record (compare-and-set)
    let revision = remote.revision;
    let remoteIndex = remote.index;
    let remotePages = remote.pages;
    let cut: CutTree | undefined = remote.layout ? { tree: remote.tree, layout: remote.layout } : undefined;
    let remotePacks = packsOf(remote.tree);
    const remoteChanged = plan.upload.length > 0 || plan.deleteRemote.length > 0 || (opts.ensureRecord === true && remote.version === 0);
    // A small change goes in one request when the store can take it so (a one-file edit: one
    // round through the leader instead of four, issue 16); else, or from a node without it, as below.
    // Nothing to write here (a change that only goes up): the state file's text is made while the cluster commits.
    let early: { revision: number; text: string; converged: boolean; fingerprint: string } | undefined;
    const upOnly = plan.download.length === 0 && plan.deleteLocal.length === 0 && plan.local.files === local.files;
    const prepare = upOnly ? (d: SmallCommit) => void (early = { revision: d.revision, ...stateText({ app, plan, localAfter: local, cut: d.cut, remotePacks: d.packs, remoteIndex: d.index, remotePages: d.pages }), fingerprint: statFingerprint(local.files) }) : undefined;
    const small = remoteChanged && records.commit && !commitUnsupported ? await commitSmall(records, reg, app, dir, plan, remote, localBySha, opts.blockingScan === true, opts.beforeCommit, prepare) : undefined;
    if (small === 'conflict') {
      if (attempt < CAS_ATTEMPTS) continue; // another sync won: plan again
      throw new OmniError('CONFLICT', `${app}: the workspace kept changing under this sync (${CAS_ATTEMPTS} attempts)`);
    }
    if (small === 'unsupported') commitUnsupported = true;
    else if (small) {
      trace('committed in one request');
      revision = small.revision;
      remotePacks = small.packs;
      remoteIndex = small.index;
      remotePages = small.pages;
      cut = small.cut;
      prog.bytesUp += small.bytes;
      tick();
    }
    if (remoteChanged && (small === undefined || small === 'unsupported')) {
      const known = new Set(remote.tree.files.filter((f) => !f.pack).flatMap((f) => f.chunks));
      const packed = packsOf(remote.tree);
      const up = uploadChunks(reg, repo, dir, plan.upload, known, packed, localBySha, tmpDir, prog, tick, opts.blockingScan === true);
      for (const [k, v] of await up.built) packed.set(k, v);
      trace('packs built');
      revision = remote.revision + 1;
      remotePacks = packed;
      const paged = withPacks(plan.remote, packed);
      const put = await putWorkspace(reg, repo, paged, revision, tmpDir, new Set(remote.pages ?? []), up.done, remote.layout ? { tree: remote.tree, layout: remote.layout } : undefined);
      trace('contents and manifests in');
      const index = put.index;
      remoteIndex = index;
      remotePages = put.pages;
      cut = { tree: paged, layout: put.layout };
      await opts.beforeCommit?.();
      try {
        await records.write(recordKey(app), JSON.stringify({ index, revision }), remote.version);
        trace('record written');
        const old = revision - WORKSPACE_REVISIONS_KEPT;
        // best effort, not waited for: a tag left behind only keeps old contents until a GC with --keep-last
        if (old >= 1 && reg.deleteTag) void reg.deleteTag(repo, `ws-${old}`).catch(() => undefined);
      } catch (err) {
        if (err instanceof OmniError && err.code === 'CONFLICT' && attempt < CAS_ATTEMPTS) continue; // another sync won: plan again
        throw err;
      }
    }
    // 2. the client: new contents complete in tmp, then deletions and renames
    const ready = await materialise(reg, repo, dir, plan.download, localBySha, tmpDir, prog, tick);
    for (const p of plan.deleteLocal) await rm(await safeParent(dir, p), { force: true });
    for (const [p, tmp] of ready) await rename(tmp, await safeParent(dir, p));
    trace('client side written');
    // 3. the state: the base, and the client's tree with the mtimes it has now
    let localAfter: TreeManifest = local; // the client's tree is the scan's when this sync wrote nothing here
    if (ready.size > 0 || plan.local.files !== local.files) {
      const written = new Map<string, FileEntry>();
      const scanned = new Map(local.files.map((f) => [f.path, f]));
      for (const f of plan.local.files) {
        if (ready.has(f.path)) {
          const s = await stat(join(dir, f.path));
          written.set(f.path, { ...f, mtimeMs: s.mtimeMs });
        } else written.set(f.path, scanned.get(f.path) ?? f);
      }
      localAfter = { version: MANIFEST_VERSION, files: plan.local.files.map((f) => written.get(f.path)!) };
    }
    // Nothing moved and the scan found what the state holds: the state file is already right (a no-op writes nothing).
    if (plan.noop && !remoteChanged && ready.size === 0 && remoteIndex !== undefined && remoteIndex === state.remoteIndex && unchanged) {
      await writeQuick(quickFile, app, remoteIndex, localAfter.files);
      return summary(revision);
    }
    await rm(quickFile, { force: true });
    const tmpState = `${stateFile}.tmp`;
    const made = small !== undefined && typeof small === 'object' && early?.revision === revision ? early : undefined; // made for this commit, not for the separate way
    const { text, converged } = made ?? stateText({ app, plan, localAfter, cut, remotePacks, remoteIndex, remotePages });
    await writeFile(tmpState, text);
    await rename(tmpState, stateFile);
    trace('state written');
    if (converged && remoteIndex) await writeQuick(quickFile, app, remoteIndex, localAfter.files, made?.fingerprint);
    trace('done');
    return summary(revision);
  }
}

