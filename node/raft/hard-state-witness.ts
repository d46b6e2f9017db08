// A second, independent copy of the Raft hard state (term, vote, commit) in a small file
// beside LevelDB, rewritten atomically (temp file, fsync, rename, fsync dir) after every
// synced LevelDB write that changes the term or the vote. Those changes are rare (elections),
// so this costs nothing on the per-entry commit path. At start LevelDB's hard state must be at
// least as new as the witness: if it is older, a synced record was lost (see storage-integrity).
import { readFile, readdir, rm } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import { join } from 'node:path';
import { writeFileAtomic } from '../files.js';
import type { HardState } from '../../protocol/raft/types.js';
import { NONE } from '../../protocol/raft/types.js';

export const WITNESS_FILE = 'omni-hardstate.json';
/** The file holds a few hundred bytes; anything larger is not ours. */
const MAX_WITNESS_BYTES = 4096;

/** Reads the witness; undefined when absent; 'damaged' when it fails its checksum. */
export async function readWitness(dir: string): Promise<HardState | undefined | 'damaged'> {
  let text: string;
  try {
    const buf = await readFile(join(dir, WITNESS_FILE));
    if (buf.length > MAX_WITNESS_BYTES) return 'damaged';
    text = buf.toString('utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const o = JSON.parse(text) as { term?: unknown; vote?: unknown; commit?: unknown; crc?: unknown };
    const hs = { term: o.term, vote: o.vote, commit: o.commit };
    const ok = isCount(hs.term) && typeof hs.vote === 'string' && isCount(hs.commit) && o.crc === witnessCrc(hs as HardState);
    return ok ? (hs as HardState) : 'damaged';
  } catch {
    return 'damaged';
  }
}

export async function writeWitness(dir: string, hs: HardState): Promise<void> {
  const body = { term: hs.term, vote: hs.vote, commit: hs.commit };
  await writeFileAtomic(join(dir, WITNESS_FILE), JSON.stringify({ ...body, crc: witnessCrc(body) }) + '\n', 0o600);
}

/** Temp files of writes a crash interrupted (writeFileAtomic names them <file>.tmp-<pid>-<n>). */
export async function removeStaleWitnessTemps(dir: string): Promise<void> {
  for (const n of await readdir(dir)) if (n.startsWith(`${WITNESS_FILE}.tmp-`)) await rm(join(dir, n), { force: true });
}

/**
 * Why `stored` (LevelDB's hard state) cannot be the latest, given the witness; undefined when
 * it can. Term and commit never decrease, and a vote, once cast in a term, never changes.
 */
export function staleHardState(stored: HardState, witness: HardState): string | undefined {
  if (stored.term < witness.term) return `term ${stored.term} is older than the witnessed term ${witness.term}`;
  if (stored.term === witness.term && witness.vote !== NONE && stored.vote !== witness.vote) {
    return `vote in term ${stored.term} is "${stored.vote}" but the witness recorded "${witness.vote}"`;
  }
  if (stored.commit < witness.commit) return `commit index ${stored.commit} is below the witnessed ${witness.commit}`;
  return undefined;
}

function witnessCrc(hs: HardState): number {
  return crc32(JSON.stringify({ term: hs.term, vote: hs.vote, commit: hs.commit }));
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}
