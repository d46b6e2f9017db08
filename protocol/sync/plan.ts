// File sync, the pure core: the plan. From the client's tree, the cluster's tree and the tree both
// agreed on after the last sync (the base), a three-way merge decides the target tree, and the
// plan is the difference of each side to it.
//
// Per path, with L (client), R (cluster), B (base):
//   L = R                 nothing to do.
//   L = B, R changed      the cluster's change comes down (or the client's copy is deleted).
//   R = B, L changed      the client's change goes up (or the cluster's copy is deleted).
//   both changed, differ  a conflict: the winner's copy stays at the path; the loser's copy is
//                         kept as NAME.conflict (NAME.conflict-2, ... when taken).
//   one deleted, the other changed: the change stays at the path (a deletion never wins over a
//                         change), so a file changed on both sides is never lost.
// Who wins (seed 003): "the agent's version" for agents and services, "the server cache version"
// for scheduled tasks. In Omni both are the cluster's copy of the app's workspace (the running
// task's files, or the cache a scheduled run starts from), so a two-way sync lets the cluster win;
// `--push` (one way, client to cluster) lets the client win, `--pull` the cluster.
import { byPath, checkPath, fileDirClash, sameContent, MANIFEST_VERSION, type FileEntry, type TreeManifest } from './tree.js';

export type Direction = 'both' | 'push' | 'pull';

export interface Conflict {
  path: string;
  /** Whose copy stays at `path`. */
  winner: 'client' | 'cluster';
  /** Where the loser's copy is kept (undefined when the loser had deleted the file). */
  keptAs?: string;
}

export interface SyncPlan {
  /** Files whose content goes up (the cluster's new tree has them, its current tree does not). */
  upload: FileEntry[];
  /** Files the client writes (content from the cluster or from another local file). */
  download: FileEntry[];
  /** Paths deleted on the client. */
  deleteLocal: string[];
  /** Paths deleted from the cluster's tree. */
  deleteRemote: string[];
  conflicts: Conflict[];
  /** The trees after the sync: the client's, the cluster's, and the new base. */
  local: TreeManifest;
  remote: TreeManifest;
  base: TreeManifest;
  /** Nothing changes on either side (the cluster record need not be written). */
  noop: boolean;
}

export class SyncConflictError extends Error {}

function conflictName(path: string, taken: (p: string) => boolean): string {
  for (let n = 1; ; n++) {
    const candidate = n === 1 ? `${path}.conflict` : `${path}.conflict-${n}`;
    if (!taken(candidate) && !checkPath(candidate)) return candidate;
    if (n > 1000) throw new SyncConflictError(`no free conflict name for ${path}`);
  }
}

/** Path order (UTF-16 code units, as every tree is sorted). */
const byPathOrder = (a: FileEntry, b: FileEntry) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0);

/** The tree's files sorted by path and unique (as checkManifest and a scan leave them; sorted here otherwise, the last of a path kept). */
function sortedFiles(t: TreeManifest): FileEntry[] {
  const f = t.files;
  let ok = true;
  for (let i = 1; i < f.length && ok; i++) ok = f[i - 1].path < f[i].path;
  return ok ? f : [...byPath(t).values()].sort(byPathOrder);
}

/**
 * Walks two sorted file lists together: `visit(a, b)` once per path of either, in path order, with
 * the entry each list has (undefined where it has none). Cheaper than a Map per tree: a sync of
 * thousands of files plans in one pass over each tree.
 */
function zip(as: FileEntry[], bs: FileEntry[], visit: (a: FileEntry | undefined, b: FileEntry | undefined) => void): void {
  let i = 0;
  let j = 0;
  while (i < as.length || j < bs.length) {
    const a = as[i];
    const b = bs[j];
    if (b === undefined || (a !== undefined && a.path < b.path)) (visit(a, undefined), i++);
    else if (a === undefined || b.path < a.path) (visit(undefined, b), j++);
    else (visit(a, b), i++, j++);
  }
}

/** A file and a directory of the same name cannot both be in a tree. */
function refuseFileDirClash(tree: FileEntry[]): void {
  const files = new Set<string>();
  for (const f of tree) files.add(f.path);
  const clash = fileDirClash(files, (q) => files.has(q));
  if (clash) throw new SyncConflictError(`cannot sync: '${clash.parent}' is a file on one side and a directory on the other`);
}

/** The merged tree when `winner` wins conflicts (in path order, then the losers' conflict copies), and the conflicts; `alsoTaken`: paths no conflict copy may take. */
function merge(L: FileEntry[], R: FileEntry[], B: FileEntry[], winner: 'client' | 'cluster', alsoTaken: FileEntry[] = []) {
  // The cluster's tree is the base itself (the usual sync after a converged one: nothing changed
  // there): every path is the client's, as the walk below would decide one by one.
  if (R === B) {
    refuseFileDirClash(L);
    return { out: L, sorted: L, conflicts: [] as Conflict[] };
  }
  const out: FileEntry[] = [];
  const conflicts: Conflict[] = [];
  const losers: { path: string; entry: FileEntry }[] = [];
  let k = 0;
  zip(L, R, (l, r) => {
    const p = (l ?? r)!.path;
    while (k < B.length && B[k].path < p) k++;
    const b = k < B.length && B[k].path === p ? B[k] : undefined;
    if (sameContent(l, r)) {
      if (l) out.push(l);
    } else if (sameContent(l, b)) {
      if (r) out.push(r);
    } else if (sameContent(r, b)) {
      if (l) out.push(l);
    } else {
      const [w, lo] = winner === 'cluster' ? [r, l] : [l, r];
      if (w && lo) {
        // Both changed: the winner's copy stays, the loser's is kept under a conflict name.
        out.push(w);
        losers.push({ path: p, entry: lo });
        conflicts.push({ path: p, winner });
      } else {
        // One side deleted, the other changed: the change stays (a change is never lost to a
        // deletion, whoever would win a conflict).
        out.push((w ?? lo)!);
        conflicts.push({ path: p, winner: l ? 'client' : 'cluster' });
      }
    }
  });
  if (losers.length > 0) {
    const taken = new Set<string>();
    for (const f of out) taken.add(f.path);
    for (const f of L) taken.add(f.path);
    for (const f of R) taken.add(f.path);
    for (const f of alsoTaken) taken.add(f.path);
    for (const { path, entry } of losers) {
      const name = conflictName(path, (q) => taken.has(q));
      taken.add(name);
      out.push({ ...entry, path: name });
      const c = conflicts.find((x) => x.path === path && x.keptAs === undefined);
      if (c) c.keptAs = name;
    }
  }
  refuseFileDirClash(out);
  return { out, sorted: losers.length > 0 ? [...out].sort(byPathOrder) : out, conflicts };
}

/**
 * What turns a side's tree `now` into `next` (both sorted): the entries to write, in `order` (the
 * merge's), and the paths to delete, in path order. Nothing when `next` is `now` itself.
 */
function changes(next: FileEntry[], now: FileEntry[], order: FileEntry[]): { write: FileEntry[]; remove: string[] } {
  if (next === now) return { write: [], remove: [] };
  const write = new Set<FileEntry>();
  const remove: string[] = [];
  zip(next, now, (n, o) => {
    if (!n) remove.push(o!.path);
    else if (!sameContent(n, o)) write.add(n);
  });
  return { write: order.filter((f) => write.has(f)), remove };
}

/** `files` without those `ignored` says (the same array when it leaves out none), and those it left out. */
function splitIgnored(files: FileEntry[], ignored: ((path: string) => boolean) | undefined): { kept: FileEntry[]; out: FileEntry[] } {
  if (!ignored) return { kept: files, out: [] };
  const kept: FileEntry[] = [];
  const out: FileEntry[] = [];
  for (const f of files) (ignored(f.path) ? out : kept).push(f);
  return out.length === 0 ? { kept: files, out } : { kept, out };
}

/**
 * The plan. `ignored`: paths the client's .gitignore files leave out of the sync — not looked at
 * on either side: the client's scan has none; the cluster's copies of such paths stay there as
 * they are (not brought down, not deleted), and the base forgets them.
 */
export function planSync(opts: { local: TreeManifest; remote: TreeManifest; base: TreeManifest; winner?: 'client' | 'cluster'; direction?: Direction; ignored?: (path: string) => boolean }): SyncPlan {
  const direction = opts.direction ?? 'both';
  const winner = direction === 'push' ? 'client' : direction === 'pull' ? 'cluster' : (opts.winner ?? 'cluster');
  const L = splitIgnored(sortedFiles(opts.local), opts.ignored).kept;
  const Rall = sortedFiles(opts.remote);
  const { kept: R, out: keptRemote } = splitIgnored(Rall, opts.ignored);
  const Ball = sortedFiles(opts.base);
  const B = Ball === Rall ? R : splitIgnored(Ball, opts.ignored).kept; // the cluster's tree is the base: still one array (merge's fast path)
  const { out: T, sorted: Tsorted, conflicts } = merge(L, R, B, winner, keptRemote);
  // Each side's new tree in path order, and in the order its changes are listed (the merge's: a
  // conflict copy after the rest; uploads are packed in this order). The cluster's ignored files
  // go back into its tree unchanged.
  const newLocal = direction === 'push' ? L : Tsorted;
  const merged = direction === 'pull' ? R : Tsorted;
  const newRemote = keptRemote.length === 0 ? merged : [...merged, ...keptRemote].sort(byPathOrder);
  if (keptRemote.length > 0) refuseFileDirClash(newRemote);
  const { write: upload, remove: deleteRemote } = changes(newRemote, Rall, T);
  const { write: download, remove: deleteLocal } = changes(newLocal, L, T);
  // The base: what both sides now agree on; where they still differ (one-way syncs) the old base
  // stays, so the next two-way sync still sees the difference as a change.
  const base: FileEntry[] = newLocal === newRemote ? newLocal.slice() : [];
  let k = 0;
  if (newLocal !== newRemote) zip(newLocal, newRemote, (l, r) => {
    const p = (l ?? r)!.path;
    while (k < B.length && B[k].path < p) k++; // a path on neither side now: gone from the base too
    const b = k < B.length && B[k].path === p ? B[k] : undefined;
    if (sameContent(l, r)) base.push(l!);
    else if (b) base.push(b);
  });
  return {
    upload,
    download,
    deleteLocal,
    deleteRemote,
    conflicts,
    local: { version: MANIFEST_VERSION, files: newLocal },
    remote: { version: MANIFEST_VERSION, files: newRemote },
    base: { version: MANIFEST_VERSION, files: base },
    noop: upload.length + download.length + deleteLocal.length + deleteRemote.length === 0,
  };
}

/** The chunks of `files` not in `have` (each once): what an upload sends. */
export function missingChunks(files: FileEntry[], have: (digest: string) => boolean): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const f of files)
    for (const c of f.chunks)
      if (!seen.has(c)) {
        seen.add(c);
        if (!have(c)) out.push(c);
      }
  return out;
}
