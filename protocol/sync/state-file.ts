// File sync, the pure core: the encoding of a directory's sync state (DIR/.omni/sync-state.json):
// the base (the tree both sides agreed on after the last sync) and the scan cache (the directory's
// tree as last scanned), plus the cluster's index when both sides were left equal.
//
// Format 3 (since 2026-12-05) stores the trees as rows of arrays instead of objects, each pack
// digest once, a chunk list only when it is not implied by the file's digest, and a scan-cache row
// that matches a base row (same path, size, mode and content) as just [base row, mtime]. For 5,000
// files that is ~0.8 MB instead of ~3.7 MB of JSON: a sync reads and writes the state at every run
// (`bench:sync`: parse, validation and rewrite were ~150 ms of a one-file change). Format 2 (the
// trees as objects) is still read; the next sync writes format 3.
import { CHUNK_BYTES, MANIFEST_VERSION, checkManifest, checkScanCache, emptyTree, type FileEntry, type PageLayout, type TreeManifest } from './tree.js';

export const SYNC_STATE_FORMAT = 3;

export interface SyncState {
  app: string;
  base: TreeManifest;
  /** The client's tree as last scanned or written (its mtimes are the client's): the scan cache. */
  local: TreeManifest;
  /** The cluster's index digest when the last sync left both sides equal (then the cluster's tree is the base). */
  remoteIndex?: string;
  /** The page manifests of that index (those are not written again by the next sync). */
  remotePages?: string[];
  /** How those manifests cut the base, page by page (the next sync encodes only the pages that changed). */
  remoteLayout?: PageLayout;
}

/** A file row: path, size, mtime, mode, sha256, chunks (0: implied), pack ([pack number, offset, pack size]) if packed. */
type Row = [string, number, number, number, string, 0 | string[]] | [string, number, number, number, string, 0 | string[], [number, number, number]];
/** A scan-cache row: a full row, or [base row number, mtime] for a file whose base row has the same path, size, mode and content. */
type LocalRow = Row | [number, number];

interface StateFileV3 {
  format: typeof SYNC_STATE_FORMAT;
  app: string;
  packs: string[];
  base: Row[];
  local: LocalRow[];
  remoteIndex?: string;
  remotePages?: string[];
  /** Per page of the base: [files, manifest sizes] (the manifests' digests are remotePages, in order). Since 2026-12-06; older states have none. */
  remoteLayout?: [number, number[]][];
}

/** The chunk list a file of this size and digest has when it is one chunk (or none): not stored. */
function impliedChunks(size: number, sha256: string): string[] | undefined {
  if (size === 0) return [];
  if (size <= CHUNK_BYTES) return [sha256];
  return undefined;
}

function chunksColumn(f: FileEntry): 0 | string[] {
  const implied = impliedChunks(f.size, f.sha256);
  return implied && implied.length === f.chunks.length && implied.every((c, i) => c === f.chunks[i]) ? 0 : f.chunks;
}

export function encodeSyncState(s: SyncState): string {
  const packNumbers = new Map<string, number>();
  const packs: string[] = [];
  const base: Row[] = s.base.files.map((f) => {
    const row: Row = [f.path, f.size, f.mtimeMs, f.mode, f.sha256, chunksColumn(f)];
    if (f.pack) {
      let n = packNumbers.get(f.pack.digest);
      if (n === undefined) {
        n = packs.length;
        packs.push(f.pack.digest);
        packNumbers.set(f.pack.digest, n);
      }
      return [...row, [n, f.pack.offset, f.pack.packSize]] as Row;
    }
    return row;
  });
  // The base row of each scan-cache path: both lists are sorted by path (walked together); a list
  // out of order (not from a sync) is looked up in a map.
  const bases = s.base.files;
  let at = 0;
  let byPath: Map<string, number> | undefined;
  let lastPath = '';
  const baseRowOf = (path: string): number | undefined => {
    if (!byPath && path > lastPath) {
      lastPath = path;
      while (at < bases.length && bases[at].path < path) at++;
      return at < bases.length && bases[at].path === path ? at : undefined;
    }
    byPath ??= new Map(bases.map((f, i) => [f.path, i]));
    return byPath.get(path);
  };
  const local: LocalRow[] = s.local.files.map((f) => {
    const i = baseRowOf(f.path);
    const b = i === undefined ? undefined : bases[i];
    if (b && b.size === f.size && b.mode === f.mode && b.sha256 === f.sha256 && b.chunks.length === f.chunks.length && b.chunks.every((c, k) => c === f.chunks[k])) return [i!, f.mtimeMs];
    return [f.path, f.size, f.mtimeMs, f.mode, f.sha256, chunksColumn(f)];
  });
  const listed = s.remoteLayout?.flatMap((p) => p.manifests.map((m) => m.digest));
  const layoutFits = listed && s.remotePages && listed.length === s.remotePages.length && listed.every((d, i) => d === s.remotePages![i]);
  const out: StateFileV3 = {
    format: SYNC_STATE_FORMAT,
    app: s.app,
    packs,
    base,
    local,
    ...(s.remoteIndex ? { remoteIndex: s.remoteIndex } : {}),
    ...(s.remotePages ? { remotePages: s.remotePages } : {}),
    ...(layoutFits ? { remoteLayout: s.remoteLayout!.map((p): [number, number[]] => [p.files, p.manifests.map((m) => m.size)]) } : {}),
  };
  return JSON.stringify(out);
}

class StateFileError extends Error {}

function fileOf(row: unknown, packs: string[], what: string): FileEntry {
  if (!Array.isArray(row) || (row.length !== 6 && row.length !== 7)) throw new StateFileError(`${what}: not a file row`);
  const [path, size, mtimeMs, mode, sha256, chunks, pack] = row as [unknown, unknown, unknown, unknown, unknown, unknown, unknown];
  if (typeof path !== 'string' || typeof size !== 'number' || typeof sha256 !== 'string') throw new StateFileError(`${what}: bad path, size or digest`);
  let list: string[];
  if (chunks === 0) {
    const implied = impliedChunks(size, sha256);
    if (!implied) throw new StateFileError(`${path}: a chunk list is needed for ${size} bytes`);
    list = implied;
  } else if (Array.isArray(chunks)) list = chunks as string[];
  else throw new StateFileError(`${path}: bad chunk list`);
  const f = { path, size, mtimeMs, mode, sha256, chunks: list } as FileEntry;
  if (pack !== undefined) {
    if (!Array.isArray(pack) || pack.length !== 3 || !Number.isSafeInteger(pack[0]) || typeof packs[pack[0] as number] !== 'string') throw new StateFileError(`${path}: bad pack reference`);
    f.pack = { digest: packs[pack[0] as number], offset: pack[1] as number, packSize: pack[2] as number };
  }
  return f;
}

/**
 * Reads a state file's text for `app`: format 3 or 2. A state of another app is an empty one (the
 * directory was synced with another app before). Throws on anything malformed (the caller names
 * the file); the trees are validated as manifests from the cluster are (checkManifest,
 * checkScanCache).
 */
export function decodeSyncState(text: string, app: string, opts: { entriesChecked?: boolean } = {}): SyncState {
  const fresh = (): SyncState => ({ app, base: emptyTree(), local: emptyTree() });
  const v = JSON.parse(text) as Partial<StateFileV3> & { base?: unknown; local?: unknown };
  if (!v || typeof v !== 'object') throw new StateFileError('not an object');
  if (v.app !== app) return fresh();
  if (v.format === undefined) {
    // format 2: the trees as manifests
    return { app, base: checkManifest(v.base), local: checkScanCache(v.local), ...remoteOf(v) };
  }
  if (v.format !== SYNC_STATE_FORMAT) throw new StateFileError(`format ${String(v.format)} (this version reads 2 and ${SYNC_STATE_FORMAT})`);
  const packs = v.packs;
  if (!Array.isArray(packs) || !packs.every((p) => typeof p === 'string')) throw new StateFileError('bad pack list');
  if (!Array.isArray(v.base) || !Array.isArray(v.local)) throw new StateFileError('bad trees');
  // `entriesChecked`: the caller knows this text is what encodeSyncState wrote (a checksum matched)
  // from trees that were checked then: the rows' shapes are checked, every entry's rules not again.
  const baseTree = { version: MANIFEST_VERSION, files: v.base.map((r, i) => fileOf(r, packs, `base row ${i}`)) };
  const base = opts.entriesChecked ? baseTree : checkManifest(baseTree);
  // A reference row copies a base row (validated above) with its own mtime; full rows are checked as a scan cache.
  const full: FileEntry[] = [];
  const localFiles = v.local.map((r, i): FileEntry => {
    if (Array.isArray(r) && r.length === 2) {
      const [n, mtimeMs] = r as [unknown, unknown];
      const b = Number.isSafeInteger(n) ? base.files[n as number] : undefined;
      if (!b) throw new StateFileError(`scan cache row ${i}: no base row ${String(n)}`);
      if (typeof mtimeMs !== 'number') throw new StateFileError(`scan cache row ${i}: bad mtime`);
      return { path: b.path, size: b.size, mtimeMs, mode: b.mode, sha256: b.sha256, chunks: b.chunks };
    }
    const f = fileOf(r, packs, `scan cache row ${i}`);
    full.push(f);
    return f;
  });
  if (!opts.entriesChecked) checkScanCache({ version: MANIFEST_VERSION, files: full });
  const remote = remoteOf(v);
  const layout = layoutOf(v.remoteLayout, remote.remotePages, base.files.length);
  return { app, base, local: { version: MANIFEST_VERSION, files: localFiles }, ...remote, ...(layout ? { remoteLayout: layout } : {}) };
}

function remoteOf(v: { remoteIndex?: unknown; remotePages?: unknown }): Pick<SyncState, 'remoteIndex' | 'remotePages'> {
  return {
    ...(typeof v.remoteIndex === 'string' ? { remoteIndex: v.remoteIndex } : {}),
    ...(Array.isArray(v.remotePages) && v.remotePages.every((d) => typeof d === 'string') ? { remotePages: v.remotePages } : {}),
  };
}

/**
 * The stored layout with its manifests' digests (remotePages, in order), when it fits: every page
 * has a whole number of files and at least one manifest of a positive size, the pages cover the
 * base's files and list exactly remotePages. Otherwise none (the next sync encodes every page).
 */
function layoutOf(v: unknown, pages: string[] | undefined, files: number): PageLayout | undefined {
  if (!Array.isArray(v) || !pages) return undefined;
  const out: PageLayout = [];
  let at = 0;
  let covered = 0;
  for (const row of v as unknown[]) {
    if (!Array.isArray(row) || row.length !== 2 || !Number.isSafeInteger(row[0]) || (row[0] as number) < 0 || !Array.isArray(row[1]) || row[1].length === 0) return undefined;
    const sizes = row[1] as unknown[];
    if (!sizes.every((n) => Number.isSafeInteger(n) && (n as number) > 0) || at + sizes.length > pages.length) return undefined;
    out.push({ files: row[0] as number, manifests: sizes.map((size, i) => ({ digest: pages[at + i], size: size as number })) });
    at += sizes.length;
    covered += row[0] as number;
  }
  return at === pages.length && covered === files ? out : undefined;
}
