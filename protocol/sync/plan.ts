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
import { byPath, checkPath, fromMap, sameContent, type FileEntry, type TreeManifest } from './tree.js';

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

/** The merged tree when `winner` wins conflicts, and the conflicts. */
function merge(L: Map<string, FileEntry>, R: Map<string, FileEntry>, B: Map<string, FileEntry>, winner: 'client' | 'cluster') {
  const out = new Map<string, FileEntry>();
  const conflicts: Conflict[] = [];
  const losers: { path: string; entry: FileEntry }[] = [];
  const paths = [...new Set([...L.keys(), ...R.keys()])].sort();
  for (const p of paths) {
    const l = L.get(p);
    const r = R.get(p);
    const b = B.get(p);
    if (sameContent(l, r)) {
      if (l) out.set(p, l);
    } else if (sameContent(l, b)) {
      if (r) out.set(p, r);
    } else if (sameContent(r, b)) {
      if (l) out.set(p, l);
    } else {
      const [w, lo] = winner === 'cluster' ? [r, l] : [l, r];
      if (w && lo) {
        // Both changed: the winner's copy stays, the loser's is kept under a conflict name.
        out.set(p, w);
        losers.push({ path: p, entry: lo });
        conflicts.push({ path: p, winner });
      } else {
        // One side deleted, the other changed: the change stays (a change is never lost to a
        // deletion, whoever would win a conflict).
        out.set(p, (w ?? lo)!);
        conflicts.push({ path: p, winner: l ? 'client' : 'cluster' });
      }
    }
  }
  const taken = (q: string) => out.has(q) || L.has(q) || R.has(q);
  for (const { path, entry } of losers) {
    const name = conflictName(path, taken);
    out.set(name, { ...entry, path: name });
    const c = conflicts.find((x) => x.path === path && x.keptAs === undefined);
    if (c) c.keptAs = name;
  }
  // A file and a directory of the same name cannot both be in a tree.
  for (const p of out.keys()) {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/');
      if (out.has(parent)) throw new SyncConflictError(`cannot sync: '${parent}' is a file on one side and a directory on the other`);
    }
  }
  return { out, conflicts };
}

export function planSync(opts: { local: TreeManifest; remote: TreeManifest; base: TreeManifest; winner?: 'client' | 'cluster'; direction?: Direction }): SyncPlan {
  const direction = opts.direction ?? 'both';
  const winner = direction === 'push' ? 'client' : direction === 'pull' ? 'cluster' : (opts.winner ?? 'cluster');
  const L = byPath(opts.local);
  const R = byPath(opts.remote);
  const B = byPath(opts.base);
  const { out: T, conflicts } = merge(L, R, B, winner);
  const newLocal = direction === 'push' ? L : T;
  const newRemote = direction === 'pull' ? R : T;
  const upload: FileEntry[] = [];
  const download: FileEntry[] = [];
  const deleteLocal: string[] = [];
  const deleteRemote: string[] = [];
  for (const [p, e] of newRemote) if (!sameContent(e, R.get(p))) upload.push(e);
  for (const p of R.keys()) if (!newRemote.has(p)) deleteRemote.push(p);
  for (const [p, e] of newLocal) if (!sameContent(e, L.get(p))) download.push(e);
  for (const p of L.keys()) if (!newLocal.has(p)) deleteLocal.push(p);
  // The base: what both sides now agree on; where they still differ (one-way syncs) the old base
  // stays, so the next two-way sync still sees the difference as a change.
  const base = new Map<string, FileEntry>();
  for (const p of new Set([...newLocal.keys(), ...newRemote.keys(), ...B.keys()])) {
    const l = newLocal.get(p);
    const r = newRemote.get(p);
    if (sameContent(l, r)) {
      if (l) base.set(p, l);
    } else if (B.has(p)) base.set(p, B.get(p)!);
  }
  return {
    upload,
    download,
    deleteLocal: deleteLocal.sort(),
    deleteRemote: deleteRemote.sort(),
    conflicts,
    local: fromMap(newLocal),
    remote: fromMap(newRemote),
    base: fromMap(base),
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
