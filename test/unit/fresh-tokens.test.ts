import { describe, expect, it } from 'vitest';
import { FreshTokens } from '../../node/api/fresh-tokens.js';

describe('FreshTokens', () => {
  it('a token this replica does not know yet is found after one read barrier', async () => {
    const known = new Set<string>();
    let barriers = 0;
    const fresh = new FreshTokens(async () => {
      barriers++;
      known.add('new-token'); // the replica catches up with the leader
    });
    expect(await fresh.check(() => (known.has('new-token') ? 'admin' : undefined))).toBe('admin');
    expect(barriers).toBe(1);
    // known now: no barrier
    expect(await fresh.check(() => (known.has('new-token') ? 'admin' : undefined))).toBe('admin');
    expect(barriers).toBe(1);
  });

  it('a wrong token is refused after the barrier; concurrent misses share one barrier', async () => {
    let barriers = 0;
    let release!: () => void;
    const fresh = new FreshTokens(() => {
      barriers++;
      return barriers === 1 ? new Promise<void>((r) => (release = r)) : Promise.resolve();
    });
    const misses = Array.from({ length: 20 }, () => fresh.check(() => undefined));
    await Promise.resolve();
    release();
    expect(await Promise.all(misses)).toEqual(Array(20).fill(undefined));
    expect(barriers).toBe(1);
    // an error thrown by the check stands on the second look
    await expect(fresh.check(() => {
      throw new Error('invalid credentials');
    })).rejects.toThrow('invalid credentials');
  });
});
