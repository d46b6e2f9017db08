// File sync, the pure core: a directory tree as a manifest (one entry per regular file, with its
// content digest and the digests of its fixed-size chunks), and the rules for which paths may
// travel between a client and the cluster. No I/O here: node/ and cli/ scan and write.

/** Files are cut into chunks of this size; each chunk is one content-addressed blob in the registry. */
export const CHUNK_BYTES = 4 * 1024 * 1024;
/** Limits on what a manifest may describe (a manifest is untrusted input on both sides). */
export const MAX_FILES = 200_000;
export const MAX_PATH_BYTES = 1024;
export const MAX_NAME_BYTES = 255;
export const MAX_FILE_BYTES = 64 * 1024 * 1024 * 1024;
/** 2: small files packed (FileEntry.pack). Version 1 workspaces (one blob per small file) are refused. */
export const MANIFEST_VERSION = 2;
/** Files of at most this size (and not empty) are packed: concatenated into pack blobs of about PACK_BYTES. */
export const PACK_FILE_MAX = 1024 * 1024;
export const PACK_BYTES = 8 * 1024 * 1024;

const DIGEST = /^sha256:[a-f0-9]{64}$/;

export interface FileEntry {
  /** Relative, '/'-separated, validated by checkPath. */
  path: string;
  size: number;
  /** Modification time on the side that scanned it (ms); informational, not part of identity. */
  mtimeMs: number;
  /** Only the executable bit travels: 0o755 or 0o644. */
  mode: number;
  /** sha256 of the whole content. */
  sha256: string;
  /** Digests of the CHUNK_BYTES pieces, in order (one for a file up to CHUNK_BYTES; none for an empty file). */
  chunks: string[];
  /** For a packed file (0 < size <= PACK_FILE_MAX) in the cluster's tree: the pack blob, where the file starts in it, and the pack's size. */
  pack?: PackRef;
}

export interface PackRef {
  digest: string;
  offset: number;
  packSize: number;
}

/**
 * Groups the files to pack (each content once, by sha256, in the order given) into packs of about
 * PACK_BYTES: a pack is closed when the next file would take it over PACK_BYTES. Deterministic, so an
 * interrupted sync that is run again builds the same packs (same digests: those already stored are
 * not sent again).
 */
export function planPacks<T extends { sha256: string; size: number }>(files: T[], packBytes = PACK_BYTES): T[][] {
  const packs: T[][] = [];
  const seen = new Set<string>();
  let cur: T[] = [];
  let bytes = 0;
  for (const f of files) {
    if (f.size <= 0 || f.size > PACK_FILE_MAX || seen.has(f.sha256)) continue;
    seen.add(f.sha256);
    if (cur.length > 0 && bytes + f.size > packBytes) {
      packs.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(f);
    bytes += f.size;
  }
  if (cur.length > 0) packs.push(cur);
  return packs;
}

export const packable = (f: { size: number }) => f.size > 0 && f.size <= PACK_FILE_MAX;

export interface TreeManifest {
  version: number;
  /** Sorted by path, unique. */
  files: FileEntry[];
}

export const emptyTree = (): TreeManifest => ({ version: MANIFEST_VERSION, files: [] });

/** The same content and executable bit: what sync compares (mtimes differ from side to side). */
export function sameContent(a: FileEntry | undefined, b: FileEntry | undefined): boolean {
  if (!a || !b) return a === b;
  return a.sha256 === b.sha256 && a.size === b.size && a.mode === b.mode;
}

export const chunkCount = (size: number) => Math.ceil(size / CHUNK_BYTES);

/**
 * Why a relative path may not be synced, or undefined when it may. Refused: empty, absolute or
 * drive paths, `.`/`..` components, empty components, backslashes (a separator on Windows), NUL and
 * other control characters, names or paths over the byte limits, and names Windows reserves.
 * `.omni/` at the top is the sync's own state and never travels.
 */
// Paths of ordinary ASCII names: only the component rules below need checking (the fast path of a scan of thousands of files).
const PLAIN = /^[A-Za-z0-9._+@=,~ -]+(?:\/[A-Za-z0-9._+@=,~ -]+)*$/;
const RESERVED = /^(con|prn|aux|nul|com[1-9]|lpt[1-9])(\..*)?$/i;

export function checkPath(path: string): string | undefined {
  if (typeof path === 'string' && path.length <= MAX_PATH_BYTES && PLAIN.test(path)) {
    let start = 0;
    while (start <= path.length) {
      let end = path.indexOf('/', start);
      if (end < 0) end = path.length;
      const part = path.slice(start, end);
      if (part === '.' || part === '..') return `'${part}' component`;
      if (part.length > MAX_NAME_BYTES) return `name over ${MAX_NAME_BYTES} bytes`;
      if ('cCpPaAnNlL'.includes(part[0]) && RESERVED.test(part)) return `name '${part}' is reserved on Windows`;
      start = end + 1;
    }
    if (path === '.omni' || path.startsWith('.omni/')) return 'the sync state directory .omni/';
    return undefined;
  }
  if (typeof path !== 'string' || path.length === 0) return 'empty path';
  if (Buffer.byteLength(path, 'utf8') > MAX_PATH_BYTES) return `path over ${MAX_PATH_BYTES} bytes`;
  if (path.startsWith('/') || /^[A-Za-z]:/.test(path)) return 'absolute path';
  if (path.includes('\\')) return 'backslash in path';
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(path)) return 'control character in path';
  for (const part of path.split('/')) {
    if (part === '') return 'empty path component';
    if (part === '.' || part === '..') return `'${part}' component`;
    if (Buffer.byteLength(part, 'utf8') > MAX_NAME_BYTES) return `name over ${MAX_NAME_BYTES} bytes`;
    if (RESERVED.test(part)) return `name '${part}' is reserved on Windows`;
    if (/[<>:"|?*]/.test(part)) return `character not allowed on Windows in '${part}'`;
  }
  if (path === '.omni' || path.startsWith('.omni/')) return 'the sync state directory .omni/';
  return undefined;
}

/** A symlink target that stays inside the root (relative, resolving under it), or why not. */
export function checkSymlink(linkPath: string, target: string): string | undefined {
  if (target.startsWith('/')) return 'symlink to an absolute path';
  const parts = linkPath.split('/').slice(0, -1);
  for (const p of target.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') {
      if (parts.length === 0) return 'symlink pointing outside the directory';
      parts.pop();
    } else parts.push(p);
  }
  return undefined;
}

export class SyncInputError extends Error {}

/** Validates a decoded manifest (from the cluster or the state file): shapes, limits, order, paths. */
export function checkManifest(value: unknown): TreeManifest {
  const fail = (why: string): never => {
    throw new SyncInputError(`invalid sync manifest: ${why}`);
  };
  if (!value || typeof value !== 'object') fail('not an object');
  const m = value as { version?: unknown; files?: unknown };
  if (m.version === 1) fail('version 1 (a workspace written before small files were packed): not readable by this version; push the project again into a new app, or remove the app\'s sync record and .omni/sync-state.json');
  if (m.version !== MANIFEST_VERSION) fail(`version ${String(m.version)} (expected ${MANIFEST_VERSION})`);
  if (!Array.isArray(m.files)) fail('files is not a list');
  const files = m.files as unknown[];
  if (files.length > MAX_FILES) fail(`over ${MAX_FILES} files`);
  let prev = '';
  // A digest met again (a one-chunk file's chunk is its digest; a pack's digest is shared by its
  // files) is not tested again: the regex is most of this check's time for thousands of files.
  let lastPack: string | undefined; // a pack digest that passed the test
  for (const f of files) {
    const e = f as Partial<FileEntry>;
    if (!e || typeof e !== 'object') fail('entry is not an object');
    const why = checkPath(e.path as string);
    if (why) fail(`${JSON.stringify(e.path)}: ${why}`);
    if ((e.path as string) <= prev) fail(`${e.path}: not sorted or repeated`);
    prev = e.path as string;
    if (!Number.isSafeInteger(e.size) || (e.size as number) < 0 || (e.size as number) > MAX_FILE_BYTES) fail(`${e.path}: bad size`);
    if (typeof e.mtimeMs !== 'number' || !Number.isFinite(e.mtimeMs)) fail(`${e.path}: bad mtime`);
    if (e.mode !== 0o644 && e.mode !== 0o755) fail(`${e.path}: bad mode`);
    if (typeof e.sha256 !== 'string' || !DIGEST.test(e.sha256)) fail(`${e.path}: bad digest`);
    if (!Array.isArray(e.chunks) || e.chunks.length !== chunkCount(e.size as number)) fail(`${e.path}: bad chunk list`);
    for (const c of e.chunks as unknown[]) if (c !== e.sha256 && (typeof c !== 'string' || !DIGEST.test(c))) fail(`${e.path}: bad chunk list`);
    if (e.pack !== undefined) {
      const k = e.pack as Partial<PackRef>;
      if (!k || typeof k !== 'object' || typeof k.digest !== 'string' || (k.digest !== lastPack && !DIGEST.test(k.digest))) fail(`${e.path}: bad pack digest`);
      lastPack = k.digest;
      if (!packable(e as FileEntry)) fail(`${e.path}: packed but of size ${e.size}`);
      if (!Number.isSafeInteger(k.offset) || (k.offset as number) < 0 || !Number.isSafeInteger(k.packSize) || (k.offset as number) + (e.size as number) > (k.packSize as number) || (k.packSize as number) > 4 * PACK_BYTES) fail(`${e.path}: bad pack range`);
    }
  }
  // A file and a directory of the same name cannot both exist.
  const paths = new Set<string>();
  for (const f of files) paths.add((f as FileEntry).path);
  const clash = fileDirClash(paths, (q) => paths.has(q));
  if (clash) fail(`${clash.path}: a parent is a file`);
  return { version: MANIFEST_VERSION, files: files as FileEntry[] };
}

/**
 * Validates a scan cache (the client's tree as last scanned, from its own state file): every entry's
 * shape and limits, but not the path rules or order. An entry is used only for the scanned path of
 * the same name (which the scan has checked), so a bad path in it is never used.
 */
export function checkScanCache(value: unknown): TreeManifest {
  const fail = (why: string): never => {
    throw new SyncInputError(`invalid sync scan cache: ${why}`);
  };
  const m = value as { version?: unknown; files?: unknown };
  if (!m || typeof m !== 'object' || m.version !== MANIFEST_VERSION || !Array.isArray(m.files) || m.files.length > MAX_FILES) fail('not a version ' + MANIFEST_VERSION + ' list of files');
  for (const f of m.files as unknown[]) {
    const e = f as Partial<FileEntry>;
    if (!e || typeof e !== 'object' || typeof e.path !== 'string' || e.path.length > MAX_PATH_BYTES) fail('bad entry');
    if (!Number.isSafeInteger(e.size) || (e.size as number) < 0 || (e.size as number) > MAX_FILE_BYTES || typeof e.mtimeMs !== 'number' || (e.mode !== 0o644 && e.mode !== 0o755)) fail(`${e.path}: bad size, mtime or mode`);
    if (typeof e.sha256 !== 'string' || !DIGEST.test(e.sha256) || !Array.isArray(e.chunks) || e.chunks.length !== chunkCount(e.size as number) || !e.chunks.every((c) => typeof c === 'string' && DIGEST.test(c))) fail(`${e.path}: bad digests`);
  }
  return { version: MANIFEST_VERSION, files: m.files as FileEntry[] };
}

/**
 * The first of `paths` (in their order) that has a parent directory which is a file (`isFile`), with
 * the outermost such parent; undefined when there is none. Each directory is looked at once (a
 * tree of thousands of files in a few hundred directories), not each path's every parent.
 */
export function fileDirClash(paths: Iterable<string>, isFile: (p: string) => boolean): { path: string; parent: string } | undefined {
  // Directories found not to be files, with all their ancestors.
  const dirs = new Set<string>();
  for (const p of paths) {
    for (let i = p.lastIndexOf('/'); i > 0; i = p.lastIndexOf('/', i - 1)) {
      const dir = p.slice(0, i);
      if (dirs.has(dir)) break;
      if (isFile(dir)) {
        for (let k = p.indexOf('/'); ; k = p.indexOf('/', k + 1)) if (isFile(p.slice(0, k))) return { path: p, parent: p.slice(0, k) };
      }
      dirs.add(dir);
    }
  }
  return undefined;
}

export const encodeManifest = (m: TreeManifest): Buffer => Buffer.from(JSON.stringify(m));
export const decodeManifest = (bytes: Uint8Array): TreeManifest => {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw new SyncInputError('invalid sync manifest: not JSON');
  }
  return checkManifest(v);
};

export const byPath = (m: TreeManifest) => new Map(m.files.map((f) => [f.path, f]));
export const fromMap = (files: Map<string, FileEntry>): TreeManifest => ({
  version: MANIFEST_VERSION,
  files: [...files.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)),
});

/**
 * How the cluster's tree is cut: per page (in order), its number of files and the manifests that
 * describe it (digest and size, as the index lists them). Kept in the client's state file with the
 * index, so the next sync encodes only the pages whose files changed (a one-file change: one page of ~26).
 */
export type PageLayout = { files: number; manifests: { digest: string; size: number }[] }[];

/** Pages of the cluster's tree: about PAGE_TARGET files each, cut where a path's hash says so (content-defined). */
export const PAGE_TARGET = 256;
export const PAGE_MAX_FILES = 4 * PAGE_TARGET;

function pathHash(path: string): number {
  // FNV-1a, 32 bits: cheap and stable across versions (the boundaries must not move).
  let h = 0x811c9dc5;
  for (let i = 0; i < path.length; i++) {
    h ^= path.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/**
 * Splits a tree (sorted by path) into pages: a page ends after a file whose path hashes to 0 mod
 * PAGE_TARGET (or at PAGE_MAX_FILES files). A boundary depends only on the path that makes it, so a
 * changed, added or removed file changes only its own page (and an added or removed boundary file
 * merges or splits one page): the other pages keep their bytes and digests, and are not written again.
 */
export function pageTree(tree: TreeManifest, target = PAGE_TARGET, maxFiles = PAGE_MAX_FILES): TreeManifest[] {
  const pages: TreeManifest[] = [];
  let cur: FileEntry[] = [];
  for (const f of tree.files) {
    cur.push(f);
    if (pathHash(f.path) % target === 0 || cur.length >= maxFiles) {
      pages.push({ version: MANIFEST_VERSION, files: cur });
      cur = [];
    }
  }
  if (cur.length > 0 || pages.length === 0) pages.push({ version: MANIFEST_VERSION, files: cur });
  return pages;
}

/** The pages put back together (validated as one tree: order across pages included). */
export function joinPages(pages: TreeManifest[]): TreeManifest {
  return checkManifest({ version: MANIFEST_VERSION, files: pages.flatMap((p) => p.files) });
}
