// Issue 9, point 3: a leader whose disk filled exited with ENOSPC. Now a full disk pauses the
// node instead: the Ready it could not write is kept (nothing applied or acknowledged), new
// proposals get NO_SPACE (HTTP 507), and the write is retried — reopening LevelDB — until space
// is freed; then the waiting proposal commits and the node carries on.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RaftStorage } from '../../node/raft/raft-storage.js';
import { RaftNode, isNoSpace } from '../../node/raft/raft-node.js';
import { silentLogger } from '../../node/logger.js';
import { httpStatusFor, type OmniError } from '../../node/errors.js';
import { bootstrapState } from '../../protocol/raft/raft.js';
import { decodeCommand, encodeCommand } from '../../protocol/cluster/state.js';
import { waitFor } from '../../node/local-cluster.js';

const ID = 'solo';
const dirs: string[] = [];
const nodes: RaftNode[] = [];

afterEach(async () => {
  for (const n of nodes.splice(0)) await n.stop();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

function enospc(): Error {
  // What Node's fs reports; LevelDB reports "IO error: …: No space left on device".
  return Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28 });
}

async function soloNode(): Promise<{ node: RaftNode; storage: RaftStorage; fatal: Error[] }> {
  const dir = await mkdtemp(join(tmpdir(), 'omni-nospace-'));
  dirs.push(dir);
  const storage = await RaftStorage.open(dir);
  const boot = bootstrapState([ID]);
  await storage.save({ hardState: boot.hardState, entries: boot.entries }, true);
  const fatal: Error[] = [];
  const node = await RaftNode.open({
    id: ID,
    storage,
    send: () => undefined,
    log: silentLogger,
    timing: { tickMs: 10, electionTick: 10, heartbeatTick: 1 },
    noSpaceRetryMs: 50,
    onFatal: (err) => fatal.push(err),
  });
  nodes.push(node);
  node.start();
  await waitFor('a leader', () => node.isLeader, 5000, 10);
  return { node, storage, fatal };
}

const put = (key: string) => encodeCommand({ type: 'kv.put', key, value: 'v' });

describe('RaftNode with a full disk (ENOSPC)', () => {
  it('pauses instead of dying: NO_SPACE (507) while full, then the waiting write commits and writes resume', async () => {
    const { node, storage, fatal } = await soloNode();
    expect((await node.propose(put('before'))).ok).toBe(true);

    const realSave = storage.save.bind(storage);
    let full = true;
    const save = vi.spyOn(storage, 'save').mockImplementation(async (part, sync) => {
      if (full) throw enospc();
      return realSave(part, sync);
    });
    const reopen = vi.spyOn(storage, 'reopen');

    const waiting = node.propose(put('during'));
    await waitFor('the node to pause', () => node.outOfSpace, 5000, 10);
    // New writes (and reads) are refused at once, with a code the API answers 507.
    const refused = await node.propose(put('refused')).then(
      () => 'ACCEPTED',
      (e: OmniError) => e.code,
    );
    expect(refused).toBe('NO_SPACE');
    expect(httpStatusFor('NO_SPACE')).toBe(507);
    await expect(node.readBarrier(1000)).rejects.toMatchObject({ code: 'NO_SPACE' });
    // It keeps retrying (reopening the store) while the disk stays full; nothing is applied.
    await waitFor('a few retries', () => save.mock.calls.length >= 3 && reopen.mock.calls.length >= 2, 5000, 10);
    expect(node.state.kvGet('during')).toBeUndefined();
    expect(fatal).toEqual([]);

    full = false;
    const r = await waiting;
    expect(r.ok).toBe(true);
    expect(node.outOfSpace).toBe(false);
    expect(node.state.kvGet('during')?.value).toBe('v');
    expect((await node.propose(put('after'))).ok).toBe(true);
    await node.readBarrier(2000);
    expect(node.state.kvGet('refused')).toBeUndefined();
    expect(fatal).toEqual([]);
  });

  it('what it writes after the pause survives a restart (the store was reopened, not lost)', async () => {
    const { node, storage } = await soloNode();
    const realSave = storage.save.bind(storage);
    let fails = 3;
    vi.spyOn(storage, 'save').mockImplementation(async (part, sync) => {
      if (fails-- > 0) throw enospc();
      return realSave(part, sync);
    });
    expect((await node.propose(put('k1'))).ok).toBe(true);
    await node.stop();
    nodes.splice(nodes.indexOf(node), 1);
    await storage.close();
    const again = await RaftStorage.open(storage.dir);
    const loaded = await again.load();
    await again.close();
    const keys = loaded.entries.flatMap((e) => {
      const d = e.data.byteLength > 0 ? decodeCommand(e.data) : undefined;
      return d?.ok && d.command.type === 'kv.put' ? [d.command.key] : [];
    });
    expect(keys).toContain('k1');
  });

  it('only a full disk pauses (ENOSPC as Node and LevelDB report it); other storage failures stay fatal', async () => {
    expect(isNoSpace(enospc())).toBe(true);
    expect(isNoSpace(new Error('IO error: /data/raft/000012.log: No space left on device'))).toBe(true);
    expect(isNoSpace(Object.assign(new Error('Write failed'), { code: 'LEVEL_IO_ERROR', cause: enospc() }))).toBe(true);
    expect(isNoSpace(new Error('EIO: i/o error'))).toBe(false);
    const { node, storage, fatal } = await soloNode();
    vi.spyOn(storage, 'save').mockRejectedValue(Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' }));
    void node.propose(put('x')).catch(() => undefined);
    await waitFor('the fatal callback', () => fatal.length > 0, 5000, 10);
    expect(node.outOfSpace).toBe(false);
  });
});
