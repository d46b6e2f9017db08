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
import { LEVELDB_MAX_FILE_BYTES, LEVELDB_MAX_OPEN_FILES, RaftStorage } from '../../node/raft/raft-storage.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

/** Distinct table files of `dir` mapped into this process now. */
async function mappedTables(dir: string): Promise<number> {
  const maps = await readFile('/proc/self/maps', 'utf8');
  return new Set(maps.split('\n').filter((l) => l.includes(dir) && l.endsWith('.ldb')).map((l) => l.slice(l.lastIndexOf(' ') + 1))).size;
}

/** Resident bytes of the table files of `dir` mapped into this process now. */
async function mappedTableRssBytes(dir: string): Promise<number> {
  let inTable = false;
  let kb = 0;
  for (const line of (await readFile('/proc/self/smaps', 'utf8')).split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inTable = line.includes(dir) && line.endsWith('.ldb');
    else if (inTable && line.startsWith('Rss:')) kb += Number(line.split(/\s+/)[1]);
  }
  return kb * 1024;
}

describe('RaftStorage bounds the LevelDB tables mapped into memory', () => {
  it.runIf(process.platform === 'linux')('a whole-state read of a database of ~170 tables leaves at most 64 of them mapped, of ~1 MiB each', async () => {
    expect(LEVELDB_MAX_OPEN_FILES).toBe(74);
    const dir = await mkdtemp(join(tmpdir(), 'omni-mapped-'));
    dirs.push(dir);
    const s = await RaftStorage.open(dir);
    // ~170 MiB of values in 70 batches, compacted into tables of ~1 MiB (LEVELDB_MAX_FILE_BYTES; LevelDB's own default is 2 MiB)
    for (let b = 0; b < 70; b++) {
      const batch = new Map<string, string>();
      for (let i = 0; i < 40; i++) batch.set(`v/k${String(b * 40 + i).padStart(6, '0')}`, randomBytes(48 * 1024).toString('base64'));
      await s.saveState(batch, b + 1, false);
    }
    await (s as unknown as { db: { compactRange(from: string, to: string): Promise<void> } }).db.compactRange('s', 't');
    const tables = readdirSync(dir).filter((f) => f.endsWith('.ldb')).length;
    expect(tables).toBeGreaterThan(150);
    const view = await s.openStateView('all');
    let n = 0;
    let most = 0;
    let mostBytes = 0;
    for await (const _row of view.rows(undefined, new AbortController().signal)) {
      if (++n % 200 === 0) {
        most = Math.max(most, await mappedTables(dir));
        mostBytes = Math.max(mostBytes, await mappedTableRssBytes(dir));
      }
    }
    most = Math.max(most, await mappedTables(dir));
    mostBytes = Math.max(mostBytes, await mappedTableRssBytes(dir));
    // resident: at most 64 tables of about LEVELDB_MAX_FILE_BYTES (a table ends past it by up to one value)
    expect(mostBytes).toBeGreaterThan(20 * LEVELDB_MAX_FILE_BYTES);
    expect(mostBytes).toBeLessThanOrEqual((LEVELDB_MAX_OPEN_FILES - 10) * (LEVELDB_MAX_FILE_BYTES + 128 * 1024));
    expect(n).toBe(2801); // the applied row, then every row
    expect(most).toBeGreaterThan(10);
    expect(most).toBeLessThanOrEqual(LEVELDB_MAX_OPEN_FILES - 10);
    await view.close();
    await s.close();
  }, 120_000);
});
