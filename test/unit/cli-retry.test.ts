// The project flows' retry (cli/omni/retry.ts): network errors retried with exponential backoff
// and full jitter, an HTTP answer terminal, the deadline respected.
import { describe, expect, it } from 'vitest';
import { backoffDelay, isNetworkError, withRetry } from '../../cli/omni/retry.js';
import { OmniError } from '../../node/errors.js';

const unreachable = () => new OmniError('UNAVAILABLE', 'no node answered', { tried: 3 });

describe('withRetry', () => {
  it('tells network errors from answers', () => {
    expect(isNetworkError(unreachable())).toBe(true);
    expect(isNetworkError(new OmniError('TIMEOUT', 'no answer'))).toBe(true);
    expect(isNetworkError(new OmniError('NOT_FOUND', 'no app', { status: 404 }))).toBe(false);
    // a node that answered 503 UNAVAILABLE: terminal, with its explanation
    expect(isNetworkError(new OmniError('UNAVAILABLE', 'no leader', { status: 503 }))).toBe(false);
    expect(isNetworkError(new Error('boom'))).toBe(false);
  });

  it('backs off exponentially with full jitter, capped', () => {
    expect(backoffDelay(1, 250, 8000, () => 1)).toBe(250);
    expect(backoffDelay(3, 250, 8000, () => 1)).toBe(1000);
    expect(backoffDelay(10, 250, 8000, () => 1)).toBe(8000);
    expect(backoffDelay(3, 250, 8000, () => 0.5)).toBe(500);
    expect(backoffDelay(3, 250, 8000, () => 0)).toBe(0);
  });

  it('retries network errors until the call succeeds, waiting the backoff each time', async () => {
    const waits: number[] = [];
    let calls = 0;
    const r = await withRetry(
      async () => {
        if (++calls < 4) throw unreachable();
        return 'ok';
      },
      { random: () => 1, sleep: async (ms) => void waits.push(ms), onRetry: () => undefined },
    );
    expect(r).toBe('ok');
    expect(calls).toBe(4);
    expect(waits).toEqual([250, 500, 1000]);
  });

  it('an HTTP error is thrown at once; the deadline ends the retries', async () => {
    let calls = 0;
    await expect(withRetry(async () => {
      calls++;
      throw new OmniError('INVALID_SPEC', 'replicas: bad', { status: 400 });
    }, { sleep: async () => undefined })).rejects.toThrow('replicas: bad');
    expect(calls).toBe(1);
    let t = 0;
    calls = 0;
    await expect(withRetry(async () => {
      calls++;
      throw unreachable();
    }, { random: () => 1, now: () => t, sleep: async (ms) => void (t += ms), deadlineMs: 2000 })).rejects.toThrow('no node answered');
    // 250 + 500 + 1000 = 1750 ms waited; the next wait (2000) would pass the deadline
    expect(calls).toBe(4);
  });
});
