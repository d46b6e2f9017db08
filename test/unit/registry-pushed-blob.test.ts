// A pushed blob is recorded in the catalog while its copies are made (node/registry/pushed-blob.ts).
import { describe, expect, it } from 'vitest';
import { recordPushedBlob } from '../../node/registry/pushed-blob.js';
import { INLINE_REPLICA_BYTES, type ReplicaOffer } from '../../node/registry/piece-transfer.js';
import { OmniError } from '../../node/errors.js';
import { LEADER_DUTY } from '../../node/cluster/caller.js';
import type { BlobRecord } from '../../protocol/registry/records.js';

const info = (sizeBytes: number) => ({ digest: 'sha256:' + 'a'.repeat(64), sizeBytes, pieceSizeBytes: 1024 * 1024, pieces: ['b'.repeat(64)] });

function parts(o: { addBlob?: () => Promise<void>; replicate?: (offer?: ReplicaOffer) => Promise<void> } = {}) {
  const events: string[] = [];
  const offers: (ReplicaOffer | undefined)[] = [];
  const signals: AbortSignal[] = [];
  let release!: () => void;
  const recorded = new Promise<void>((r) => (release = r));
  return {
    events,
    offers,
    signals,
    release: () => release(),
    p: {
      catalog: {
        addBlob: async (_repo: string, rec: BlobRecord) => {
          events.push(`record ${rec.sizeBytes}`);
          await (o.addBlob ? o.addBlob() : recorded);
          events.push('recorded');
        },
      },
      replicate: async (_digest: string, signal: AbortSignal, _repo: string, offer?: ReplicaOffer) => {
        events.push(offer ? 'copy with bytes' : 'copy without bytes');
        offers.push(offer);
        signals.push(signal);
        await o.replicate?.(offer);
      },
    },
  };
}

describe('recordPushedBlob', () => {
  it('asks for the copies before the record is written, with the record and a small blob’s bytes', async () => {
    const t = parts();
    const bytes = Buffer.alloc(100, 1);
    const done = recordPushedBlob(t.p, 'r', info(100), LEADER_DUTY, new AbortController().signal, bytes);
    await new Promise((r) => setTimeout(r, 10));
    expect(t.events).toEqual(['copy with bytes', 'record 100']); // the copy is under way while the record waits
    t.release();
    await done;
    expect(t.events.at(-1)).toBe('recorded');
    expect(t.offers[0]).toMatchObject({ record: { sizeBytes: 100, pieceSizeBytes: 1024 * 1024, pieces: ['b'.repeat(64)] }, bytes });
  });

  it('a large blob, or no bytes at hand, or bytes that are not the whole blob: copied from the store (no bytes offered) while the record is written', async () => {
    for (const [size, bytes] of [[INLINE_REPLICA_BYTES + 1, Buffer.alloc(INLINE_REPLICA_BYTES + 1)], [200, undefined], [200, Buffer.alloc(100)]] as const) {
      const t = parts();
      const done = recordPushedBlob(t.p, 'r', info(size), LEADER_DUTY, new AbortController().signal, bytes);
      await new Promise((r) => setTimeout(r, 10));
      expect(t.events).toEqual(['copy without bytes', `record ${size}`]);
      t.release();
      await done;
      expect(t.offers).toEqual([undefined]);
    }
  });

  it('copies that fail (a member of an older version) are asked again, the old way, once the record is written', async () => {
    let calls = 0;
    const t = parts({
      addBlob: async () => undefined,
      replicate: async (offer) => {
        calls++;
        if (offer) throw new OmniError('UNAVAILABLE', 'blob is on 1 of the 2 nodes a push needs');
      },
    });
    await recordPushedBlob(t.p, 'r', info(10), LEADER_DUTY, new AbortController().signal, Buffer.alloc(10));
    expect(calls).toBe(2);
    expect(t.events).toEqual(['copy with bytes', 'record 10', 'recorded', 'copy without bytes']);
  });

  it('fails as the old way fails when the copies cannot be made', async () => {
    const t = parts({ addBlob: async () => undefined, replicate: async () => Promise.reject(new OmniError('UNAVAILABLE', 'too few nodes')) });
    await expect(recordPushedBlob(t.p, 'r', info(10), LEADER_DUTY, new AbortController().signal, Buffer.alloc(10))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('a record that cannot be written fails the push and aborts the copies', async () => {
    const t = parts({ addBlob: async () => Promise.reject(new OmniError('QUOTA_EXCEEDED', 'the state is full')), replicate: () => new Promise(() => undefined) });
    await expect(recordPushedBlob(t.p, 'r', info(10), LEADER_DUTY, new AbortController().signal, Buffer.alloc(10))).rejects.toMatchObject({ code: 'QUOTA_EXCEEDED' });
    expect(t.signals[0].aborted).toBe(true);
  });
});
