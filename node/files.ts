// Crash-safe small-file writes: a reader sees the old content or the new, never a torn file.
import { open, rename, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

/** Distinguishes concurrent writes of one path in this process (each its own temp file). */
let tempWrites = 0;

/**
 * A temp file name beside `path` (<file>.tmp-<pid>-<n>): two writes of the same path at once (two
 * uploads of one blob) must not share a temp file, or the second rename finds it gone (ENOENT).
 */
export function tempBeside(path: string): string {
  return `${path}.tmp-${process.pid}-${++tempWrites}`;
}

/** fsyncs a file or a directory (a directory: the names created or renamed in it). */
export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Writes `data` to a new file at `path` and fsyncs it (not atomic: see writeFileAtomic). */
export async function writeSynced(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const fh = await open(path, 'w', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Writes to a temp file, fsyncs it, renames it over `path`, then fsyncs the directory. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const tmp = tempBeside(path);
  await writeSynced(tmp, data, mode);
  await rename(tmp, path);
  await fsyncPath(dirname(path));
}

/** Writes `bufs` (`n` bytes in all) at `position` of an open file, going on after a short write. */
async function writeAll(fh: FileHandle, bufs: Uint8Array[], n: number, position: number): Promise<void> {
  let { bytesWritten } = await fh.writev(bufs, position);
  if (bytesWritten === n) return;
  const all = Buffer.concat(bufs, n);
  while (bytesWritten < n) bytesWritten += (await fh.write(all, bytesWritten, n - bytesWritten, position + bytesWritten)).bytesWritten;
}

/**
 * Writes buffers to an open file from `position` on, gathered into runs of about `batchBytes`
 * (one writev per run instead of one write per buffer). A buffer is kept until its run is
 * written: the caller does not reuse it.
 */
export class BatchedWriter {
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;

  constructor(
    private readonly fh: FileHandle,
    /** Where the next run is written: the file's end once everything is flushed. */
    public position: number,
    private readonly batchBytes: number,
  ) {}

  /** Bytes taken and not written yet. */
  get buffered(): number {
    return this.pendingBytes;
  }

  async push(chunk: Uint8Array): Promise<void> {
    this.pending.push(chunk);
    this.pendingBytes += chunk.byteLength;
    if (this.pendingBytes >= this.batchBytes) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.pendingBytes === 0) return;
    const bufs = this.pending;
    const n = this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    await writeAll(this.fh, bufs, n, this.position);
    this.position += n;
  }
}
