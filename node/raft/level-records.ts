// Sealed LevelDB records shared by the Raft log store and the state rows store: reads that
// verify each value's checksum, and LevelDB's own corruption reports as STORAGE_CORRUPT.
import type { Level } from 'level';
import { StorageCorruptError, unsealRecord } from './storage-integrity.js';

export type Db = Level<string, Uint8Array>;

/** The verified payload stored at key (or the raw value when unseal is false). */
export async function read(db: Db, dir: string, key: string, unseal = true): Promise<Uint8Array | undefined> {
  let v: Uint8Array | undefined;
  try {
    v = await db.get(key);
  } catch (err) {
    throw levelError(err, dir, `reading ${key}`);
  }
  if (v === undefined || !unseal) return v;
  return unsealOrCorrupt(key, v, dir);
}

export function unsealOrCorrupt(key: string, value: Uint8Array, dir: string): Uint8Array {
  const payload = unsealRecord(key, value);
  if (!payload) throw new StorageCorruptError(`stored record ${key} fails its checksum`, dir, { key });
  return payload;
}

export function decodeOrCorrupt<T>(key: string, dir: string, decode: () => T): T {
  try {
    return decode();
  } catch (err) {
    throw new StorageCorruptError(`stored record ${key} cannot be decoded (${(err as Error).message})`, dir, { key });
  }
}

/** LevelDB's own corruption reports become STORAGE_CORRUPT; other errors pass unchanged. */
export function levelError(err: unknown, dir: string, what: string): unknown {
  if (err instanceof StorageCorruptError) return err;
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.code === 'LEVEL_CORRUPTION' || e?.cause?.code === 'LEVEL_CORRUPTION') {
    return new StorageCorruptError(`LevelDB reports corruption while ${what}: ${(e.cause?.message ?? e.message ?? '').slice(0, 300)}`, dir);
  }
  return err;
}
