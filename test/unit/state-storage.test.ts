// Issue 12: the state rows on LevelDB — views for sending a snapshot, staging a streamed snapshot
// in the other generation (resumable, durable per chunk), and installing it with one atomic flip.
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RaftStorage } from '../../node/raft/raft-storage.js';
import { APPLIED_ROW } from '../../node/raft/state-storage.js';

const dirs: string[] = [];
const open: RaftStorage[] = [];
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function storage(dir?: string): Promise<RaftStorage> {
  if (!dir) {
    dir = await mkdtemp(join(tmpdir(), 'omni-state-storage-'));
    dirs.push(dir);
  }
  const s = await RaftStorage.open(dir);
  open.push(s);
  return s;
}

const utf8 = new TextEncoder();
const text = new TextDecoder();
const bytesRows = (rows: [string, string][]): [Uint8Array, Uint8Array][] => rows.map(([k, v]) => [utf8.encode(k), utf8.encode(v)]);

async function viewRows(s: RaftStorage, id: string, afterKey?: string): Promise<[string, string][]> {
  const view = await s.openStateView(id);
  const out: [string, string][] = [];
  for await (const [k, v] of view.rows(afterKey === undefined ? undefined : utf8.encode(afterKey), new AbortController().signal)) out.push([text.decode(k), text.decode(v)]);
  await view.close();
  return out;
}

describe('StateStorage', () => {
  it('a view is consistent: its applied index and rows are those of one write, whatever is written after', async () => {
    const s = await storage();
    await s.saveState(new Map([['k/a', '1'], ['k/b', '2']]), 7, false);
    const view = await s.openStateView('v1');
    await s.saveState(new Map([['k/a', 'changed'], ['k/c', '3']]), 9, false);
    expect(view.appliedIndex).toBe(7);
    const rows: string[] = [];
    for await (const [k, v] of view.rows(undefined, new AbortController().signal)) rows.push(`${text.decode(k)}=${text.decode(v)}`);
    await view.close();
    expect(rows).toEqual([`${APPLIED_ROW}=7`, 'k/a=1', 'k/b=2']);
    // Resuming after a key gives the rest only.
    expect(await viewRows(s, 'v2', 'k/a')).toEqual([['k/b', '2'], ['k/c', '3']]);
  });

  it('stages a streamed snapshot durably chunk by chunk, resumes after the last chunk, and installs it with one flip', async () => {
    const s = await storage();
    await s.saveState(new Map([['k/old', 'x'], ['v/old', 'big']]), 5, true);
    const sink = s.snapshotSink();
    expect(await sink.resumeAfter('leader', 'snap1')).toBeUndefined();
    await sink.write('leader', 'snap1', bytesRows([[APPLIED_ROW, '40'], ['cfg', '{}'], ['k/a', 'A']]));
    // The receiving node restarts mid-transfer: the staged rows and the resume point survive.
    await s.close();
    open.length = 0;
    const again = await storage(s.dir);
    const sink2 = again.snapshotSink();
    expect(text.decode((await sink2.resumeAfter('leader', 'snap1'))!)).toBe('k/a');
    // The rows held read back as they came, in order (the stream recomputes its checksum from them);
    // nothing for another transfer.
    const held: string[] = [];
    for await (const [k, v] of sink2.stagedRows!('leader', 'snap1', new AbortController().signal)) held.push(`${text.decode(k)}=${text.decode(v)}`);
    expect(held).toEqual([`${APPLIED_ROW}=40`, 'cfg={}', 'k/a=A']);
    const other: string[] = [];
    for await (const [k] of sink2.stagedRows!('leader', 'snap0', new AbortController().signal)) other.push(text.decode(k));
    expect(other).toEqual([]);
    await sink2.write('leader', 'snap1', bytesRows([['k/b', 'B'], ['v/b', 'bigB']]));
    // Until installed, the live state is the old one.
    expect((await again.loadState())!.rows).toEqual([['k/old', 'x']]);
    await sink2.complete('leader', 'snap1', 5);
    expect(await again.installStagedState('leader', 'snap1')).toBe(40);
    const live = (await again.loadState(true))!;
    expect(live).toEqual({ appliedIndex: 40, rows: [['cfg', '{}'], ['k/a', 'A'], ['k/b', 'B'], ['v/b', 'bigB']] });
    expect(await again.readStateRows(['v/b', 'v/old'])).toEqual(['bigB', undefined]);
    // Writes go to the new generation, and it is the one read after a restart.
    await again.saveState(new Map([['k/c', 'C']]), 41, true);
    await again.close();
    open.length = 0;
    const third = await storage(s.dir);
    expect((await third.loadState())!.rows.map(([k]) => k)).toEqual(['cfg', 'k/a', 'k/b', 'k/c']);
  });

  it('a second install flips back to the first generation, and the node opens again after it (its empty generation name is sealed readably)', async () => {
    const s = await storage();
    await s.saveState(new Map([['k/0', 'zero']]), 2, true);
    for (const [id, applied] of [['one', 10], ['two', 20]] as const) {
      const sink = s.snapshotSink();
      await sink.resumeAfter('leader', id);
      await sink.write('leader', id, bytesRows([[APPLIED_ROW, String(applied)], ['k/x', id]]));
      await sink.complete('leader', id, 2);
      expect(await s.installStagedState('leader', id)).toBe(applied);
    }
    // Generation '' is live again: its record holds the empty name. Before the fix its seal
    // carried CRC 0 and the reopen below failed with STORAGE_CORRUPT ("stored record sg fails
    // its checksum"), as a soak with kill -9 found.
    await s.close();
    open.length = 0;
    const again = await storage(s.dir);
    expect(await again.loadState()).toEqual({ appliedIndex: 20, rows: [['k/x', 'two']] });
  });

  it('a different transfer starts over; installing what is not completely staged is refused', async () => {
    const s = await storage();
    await s.saveState(new Map([['k/live', '1']]), 3, true);
    const sink = s.snapshotSink();
    await sink.resumeAfter('a', 'one');
    await sink.write('a', 'one', bytesRows([[APPLIED_ROW, '10'], ['k/x', 'x']]));
    await expect(s.installStagedState('a', 'one')).rejects.toThrow(/no complete snapshot/);
    // Another leader's snapshot: the partial one is dropped.
    expect(await sink.resumeAfter('b', 'two')).toBeUndefined();
    await sink.write('b', 'two', bytesRows([[APPLIED_ROW, '12'], ['k/y', 'y']]));
    await expect(sink.write('a', 'one', bytesRows([['k/z', 'z']]))).rejects.toThrow(/not being staged/);
    await sink.complete('b', 'two', 2);
    expect(await s.installStagedState('b', 'two')).toBe(12);
    expect((await s.loadState())!.rows).toEqual([['k/y', 'y']]);
  });

  it('replaceState (a whole snapshot held in memory) goes through the same staging in batches', async () => {
    const s = await storage();
    await s.saveState(new Map([['k/gone', '1']]), 2, true);
    const rows: [string, string][] = Array.from({ length: 4500 }, (_, i) => [`k/${String(i).padStart(5, '0')}`, `v${i}`]);
    await s.replaceState(rows, 99);
    const live = (await s.loadState())!;
    expect(live.appliedIndex).toBe(99);
    expect(live.rows).toHaveLength(4500);
    expect(live.rows[0]).toEqual(['k/00000', 'v0']);
  });
});
