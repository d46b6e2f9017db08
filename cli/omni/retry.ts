// Retries of the project flows (omni run/stop/watch from a project directory): a network error
// (no node answered, a reset, a timeout) is retried with exponential backoff and full jitter;
// an answer from a node — any HTTP 4xx/5xx — is terminal, with the server's explanation. The
// FailoverClient (failover-client.ts) already moves on to the cluster's other nodes within one
// attempt; this retries the whole call when none answered.
import { OmniError } from '../../node/errors.js';

/** A failure where no node's answer was read: worth trying again later. */
export function isNetworkError(err: unknown): boolean {
  if (!(err instanceof OmniError)) return false;
  if (err.detail.status !== undefined) return false; // a node answered with an HTTP error
  return err.code === 'UNAVAILABLE' || err.code === 'TIMEOUT';
}

export interface RetryOptions {
  /** First delay (ms); doubled each attempt up to maxMs. */
  baseMs?: number;
  maxMs?: number;
  /** Give up (throw the last error) after this long. Default: 5 minutes. */
  deadlineMs?: number;
  /** Told before each wait (e.g. "n1 unreachable, retrying in 1.2s"). */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  signal?: AbortSignal;
  random?: () => number;
  now?: () => number;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

/** The n-th (from 1) delay: uniform in [0, min(max, base·2^(n-1))] ("full jitter"). */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(attempt - 1, 30));
  return Math.round(random() * cap);
}

const sleepFor = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });

/** Calls `fn` until it succeeds, retrying network errors only (see isNetworkError). */
export async function withRetry<T>(fn: () => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const { baseMs = 250, maxMs = 8000, deadlineMs = 300_000, random = Math.random, now = Date.now, sleep = sleepFor } = opts;
  const start = now();
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isNetworkError(err)) throw err;
      const delay = backoffDelay(attempt, baseMs, maxMs, random);
      if (now() + delay - start > deadlineMs) throw err;
      opts.onRetry?.(err, attempt, delay);
      await sleep(delay, opts.signal);
    }
  }
}
