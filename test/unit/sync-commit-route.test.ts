// The node's side of a one-request sync commit (node/api/sync-routes.ts commitSyncChange): the
// blobs sent whole to their copies with no catalog record of their own (the one transaction
// records them), a member that refuses that gets the blob the way a /v2/ push sends it, and nothing
// is recorded before every blob is stored and copied.
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { commitSyncChange, type SyncRoutesDeps } from '../../node/api/sync-routes.js';
import { LEADER_DUTY } from '../../node/cluster/caller.js';
import { encodeSyncCommit } from '../../protocol/sync/commit.js';
import { OmniError } from '../../node/errors.js';
import { silentLogger } from '../../node/logger.js';

const sha = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');
const packs = [Buffer.from('pack one'), Buffer.from('pack two')];
const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] }));
const header = { expectedVersion: 0, record: JSON.stringify({ index: sha(index), revision: 1 }), blobs: packs.map((b) => ({ digest: sha(b), size: b.length })), manifests: [{ digest: sha(index), mediaType: 'application/vnd.oci.image.index.v1+json', size: index.length }], tag: 'ws-1' };
const body = encodeSyncCommit(header, packs, [index]);

/** A node's registry parts that log what happens, in order. `inlineRefused`: the members are of an earlier version. */
function parts(o: { inlineRefused?: boolean; storeFails?: boolean } = {}) {
  const events: string[] = [];
  const d: SyncRoutesDeps = {
    log: silentLogger,
    syncRegistry: () => ({
      store: {
        pieceSizeForSize: () => 1024 * 1024,
        commitBytes: async (digest: string) => {
          await new Promise((r) => setTimeout(r, 5));
          if (o.storeFails) throw new OmniError('NO_SPACE', 'disk full');
          events.push(`stored ${digest.slice(7, 11)}`);
          return undefined as never;
        },
      },
      catalog: {
        addBlob: async (_repo: string, b: { digest: string }) => void events.push(`recorded ${b.digest.slice(7, 11)}`),
        writeTogether: async (_repo: string, p: { blobs: { digest: string }[] }, extra: { ops: { op: string; key: string }[] }) => void events.push(`transaction with ${p.blobs.length} blobs${extra.ops.filter((o) => o.op === 'delete').map((o) => `, deleting ${o.key}`).join('')}`),
      },
      replicate: async (digest: string, _signal: AbortSignal, _repo: string, offer?: unknown) => {
        if (offer && o.inlineRefused) throw new OmniError('BAD_REQUEST', 'unknown request');
        // such a member fetches the blob by its catalog record: none yet, no copy
        if (!offer && o.inlineRefused && !events.includes(`recorded ${digest.slice(7, 11)}`)) throw new OmniError('UNAVAILABLE', `blob ${digest} is not in the registry`);
        events.push(`copied ${digest.slice(7, 11)}${offer ? ' whole' : ' plainly'}`);
      },
    }),
  };
  return { d, events };
}

describe('sync commit on the node', () => {
  it('sends the blobs whole and records them only in the one transaction, after they are stored and copied', async () => {
    const { d, events } = parts();
    expect(await commitSyncChange(d, 'app', body, LEADER_DUTY, new AbortController().signal)).toEqual({ committed: true });
    expect(events.filter((e) => e.startsWith('recorded'))).toEqual([]);
    expect(events.at(-1)).toBe('transaction with 2 blobs');
    expect(events.filter((e) => e.startsWith('copied')).sort()).toEqual(packs.map((b) => `copied ${sha(b).slice(7, 11)} whole`).sort());
    expect(events.filter((e) => e.startsWith('stored')).length).toBe(2);
  });

  it('a member of an earlier version (bytes without a record refused): each blob recorded, then copied the plain way, then the transaction', async () => {
    const { d, events } = parts({ inlineRefused: true });
    await commitSyncChange(d, 'app', body, LEADER_DUTY, new AbortController().signal);
    for (const b of packs) {
      const k = sha(b).slice(7, 11);
      const [stored, recorded, copied] = [`stored ${k}`, `recorded ${k}`, `copied ${k} plainly`].map((e) => events.indexOf(e));
      expect(stored).toBeGreaterThanOrEqual(0);
      expect(recorded).toBeGreaterThan(-1);
      expect(copied).toBeGreaterThan(recorded);
    }
    expect(events.at(-1)).toBe('transaction with 2 blobs');
  });

  it('the revision that falls out of the kept ones (untag) loses its tag in the same transaction', async () => {
    const { d, events } = parts();
    const later = encodeSyncCommit({ ...header, record: JSON.stringify({ index: sha(index), revision: 12 }), tag: 'ws-12', untag: 'ws-2' }, packs, [index]);
    expect(await commitSyncChange(d, 'app', later, LEADER_DUTY, new AbortController().signal)).toEqual({ committed: true, untagged: true });
    expect(events.at(-1)).toMatch(/^transaction with 2 blobs, deleting \S*omni-sync\/app\S*ws-2$/);
  });

  it('a blob that cannot be stored here: nothing recorded', async () => {
    const { d, events } = parts({ storeFails: true });
    await expect(commitSyncChange(d, 'app', body, LEADER_DUTY, new AbortController().signal)).rejects.toMatchObject({ code: 'NO_SPACE' });
    expect(events.filter((e) => e.startsWith('recorded') || e.startsWith('transaction'))).toEqual([]);
  });
});
