// LevelDB 1.20 maps every table file it holds open (up to 1,000) and the pages read count in RSS:
// reading a whole state for a snapshot left about as much mapped as the database held (1 GiB state:
// ~1 GiB of RSS on the leader). RaftStorage opens it with LEVELDB_MAX_OPEN_FILES (74: a table cache
// of 64), so a whole-state read keeps at most 64 tables mapped. Linux only (/proc/self/maps).
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readdirSync } from 'node:fs';
import { LEVELDB_MAX_OPEN_FILES, RaftStorage } from '../../node/raft/raft-storage.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

/** Distinct table files of `dir` mapped into this process now. */
async function mappedTables(dir: string): Promise<number> {
  const maps = await readFile('/proc/self/maps', 'utf8');
  return new Set(maps.split('\n').filter((l) => l.includes(dir) && l.endsWith('.ldb')).map((l) => l.slice(l.lastIndexOf(' ') + 1))).size;
}

describe('RaftStorage bounds the LevelDB tables mapped into memory', () => {
  it.runIf(process.platform === 'linux')('a whole-state read of a database of ~90 tables leaves at most 64 of them mapped', async () => {
    expect(LEVELDB_MAX_OPEN_FILES).toBe(74);
    const dir = await mkdtemp(join(tmpdir(), 'omni-mapped-'));
    dirs.push(dir);
    const s = await RaftStorage.open(dir);
    // ~170 MiB of values in 70 batches, compacted into tables of ~2 MiB (LevelDB's max_file_size)
    for (let b = 0; b < 70; b++) {
      const batch = new Map<string, string>();
      for (let i = 0; i < 40; i++) batch.set(`v/k${String(b * 40 + i).padStart(6, '0')}`, randomBytes(48 * 1024).toString('base64'));
      await s.saveState(batch, b + 1, false);
    }
    await (s as unknown as { db: { compactRange(from: string, to: string): Promise<void> } }).db.compactRange('s', 't');
    const tables = readdirSync(dir).filter((f) => f.endsWith('.ldb')).length;
    expect(tables).toBeGreaterThan(80);
    const view = await s.openStateView('all');
    let n = 0;
    let most = 0;
    for await (const _row of view.rows(undefined, new AbortController().signal)) {
      if (++n % 200 === 0) most = Math.max(most, await mappedTables(dir));
    }
    most = Math.max(most, await mappedTables(dir));
    expect(n).toBe(2801); // the applied row, then every row
    expect(most).toBeGreaterThan(10);
    expect(most).toBeLessThanOrEqual(LEVELDB_MAX_OPEN_FILES - 10);
    await view.close();
    await s.close();
  }, 120_000);
});
