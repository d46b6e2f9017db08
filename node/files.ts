// Crash-safe small-file writes: a reader sees the old content or the new, never a torn file.
import { open, rename } from 'node:fs/promises';
import { dirname } from 'node:path';

/** Distinguishes concurrent writes of one path in this process (each its own temp file). */
let atomicWrites = 0;

/** Writes to a temp file, fsyncs it, renames it over `path`, then fsyncs the directory. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  // <file>.tmp-<pid>-<n>: two writes of the same path at once (two uploads of one blob) must not
  // share a temp file, or the second rename finds it gone (ENOENT).
  const tmp = `${path}.tmp-${process.pid}-${++atomicWrites}`;
  const fh = await open(tmp, 'w', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  const dir = await open(dirname(path), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
