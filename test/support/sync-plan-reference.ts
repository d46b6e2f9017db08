// The sync planner as it was before the single-pass one (protocol/sync/plan.ts at e117bd4: a Map
// per tree, the union of paths sorted): kept for test/unit/sync-plan.test.ts, which checks that the
// planner decides exactly as this one did on random trees. Not used by Omni itself.
import { byPath, checkPath, fromMap, sameContent, type FileEntry, type TreeManifest } from '../../protocol/sync/tree.js';
import { SyncConflictError, type Conflict, type Direction, type SyncPlan } from '../../protocol/sync/plan.js';

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

export function referencePlanSync(opts: { local: TreeManifest; remote: TreeManifest; base: TreeManifest; winner?: 'client' | 'cluster'; direction?: Direction }): SyncPlan {
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

