// What became of omnid's start-up code cache (cli/code-cache.ts sets it before the bundle runs;
// the daemon says it in its start-up line, and bench:cluster's warm-up reads that line).
const KEY = Symbol.for('omni.codeCacheState');

/** Set by the launcher's loader, before the bundle runs. */
export function setCodeCacheState(state: string): void {
  (globalThis as Record<symbol, unknown>)[KEY] = state;
}

/** 'accepted', 'rejected', 'corrupt', 'none' (then one is written 3 s after the start, where dist/ can be written), or 'off' (not loaded through it: OMNI_CODE_CACHE=off, tsx). */
export function codeCacheState(): string {
  const s = (globalThis as Record<symbol, unknown>)[KEY];
  return typeof s === 'string' ? s : 'off';
}
