// Re-replication, the pure decision (protocol/registry/rereplication.ts): which live node fetches
// which blob so that each blob is back on R live nodes after a holder is lost.
import { describe, expect, it } from 'vitest';
import { planRereplication, type RereplicationInput } from '../../protocol/registry/rereplication.js';

const d = (c: string) => 'sha256:' + c.repeat(64);
const [A, B, C, D] = ['a', 'b', 'c', 'd'].map(d);
const NOW = 1_000_000;

function input(holders: Record<string, string[]>, over: Partial<RereplicationInput> = {}): RereplicationInput {
  return {
    replicas: 2,
    blobs: Object.keys(holders).map((digest) => ({ digest, createdAtMs: 0 })),
    holders: (digest) => holders[digest] ?? [],
    live: ['n1', 'n2', 'n3'],
    targets: ['n1', 'n2', 'n3'],
    nowMs: NOW,
    settleMs: 30_000,
    inFlight: new Set(),
    maxCopies: 100,
    ...over,
  };
}

describe('re-replication plan', () => {
  it('a blob whose second holder is gone (dead, removed) gets a copy on a live node that lacks it', () => {
    // n4 held A and B: it is not live any more
    const p = planRereplication(input({ [A]: ['n1', 'n4'], [B]: ['n2', 'n4'], [C]: ['n1', 'n2'] }));
    expect(p.copies).toEqual([
      { digest: A, target: 'n2' },
      { digest: B, target: 'n1' },
    ]);
    expect(p.under).toBe(2);
    expect(p.lost).toEqual([]);
  });

  it('spreads copies over the least loaded targets (planned copies count), ties by id', () => {
    const p = planRereplication(input({ [A]: ['n1'], [B]: ['n1'], [C]: ['n1'] }, { live: ['n1', 'n2', 'n3'], load: (n) => (n === 'n2' ? 0 : n === 'n3' ? 1 : 5) }));
    expect(p.copies.map((c) => `${c.digest.slice(7, 8)}→${c.target}`)).toEqual(['a→n2', 'b→n2', 'c→n3']);
  });

  it('restores R copies, bounded by the live nodes; R=3 with two missing asks two nodes', () => {
    const p = planRereplication(input({ [A]: ['n1'] }, { replicas: 3, live: ['n1', 'n2', 'n3', 'n4'], targets: ['n1', 'n2', 'n3', 'n4'] }));
    expect(p.copies.map((c) => c.target)).toEqual(['n2', 'n3']);
    // only two nodes live: a blob on one of them needs one copy, not two
    const q = planRereplication(input({ [A]: ['n1', 'n9'] }, { replicas: 3, live: ['n1', 'n2'], targets: ['n1', 'n2'] }));
    expect(q.copies).toEqual([{ digest: A, target: 'n2' }]);
  });

  it('nothing to do when every blob has its copies; a blob with no live holder is reported lost', () => {
    expect(planRereplication(input({ [A]: ['n1', 'n2'], [B]: ['n2', 'n3', 'n1'] }))).toEqual({ copies: [], under: 0, lost: [] });
    const p = planRereplication(input({ [A]: ['n7', 'n8'], [B]: [] }));
    expect(p.lost).toEqual([A, B]);
    expect(p.copies).toEqual([]);
  });

  it('leaves alone blobs just pushed (still replicating), blobs being copied, and targets it may not use', () => {
    const recent = planRereplication(input({ [A]: ['n1'] }, { blobs: [{ digest: A, createdAtMs: NOW - 1000 }] }));
    expect(recent.copies).toEqual([]);
    expect(planRereplication(input({ [A]: ['n1'] }, { inFlight: new Set([A]) })).copies).toEqual([]);
    // n2 is draining: not a target; n3 gets the copy
    expect(planRereplication(input({ [A]: ['n1'] }, { targets: ['n1', 'n3'] })).copies).toEqual([{ digest: A, target: 'n3' }]);
    // a target whose last copy of this blob failed is avoided (another one is asked)
    expect(planRereplication(input({ [A]: ['n1'], [B]: ['n1'] }, { avoid: (dg, n) => dg === A && n === 'n2' })).copies).toEqual([{ digest: A, target: 'n3' }, { digest: B, target: 'n2' }]);
    // a target that is not live is never used
    expect(planRereplication(input({ [A]: ['n1'] }, { live: ['n1'], targets: ['n1', 'n2'] })).copies).toEqual([]);
  });

  it('most at risk first, at most maxCopies per plan', () => {
    const p = planRereplication(input({ [D]: ['n1'], [A]: ['n1', 'n2'], [B]: ['n3'] }, { replicas: 3, maxCopies: 2 }));
    // D and B have one live copy, A two: D and B first (by digest: B < D)
    expect(p.copies.map((c) => c.digest)).toEqual([B, B]);
    expect(p.under).toBe(3);
  });
});
