// What became of omnid's start-up code cache (cli/code-cache.ts sets it before the bundle runs;
// the daemon says it in its start-up line, and bench:cluster's warm-up reads that line).
const KEY = Symbol.for('omni.codeCacheState');

/** What became of the cache at this start: used, refused by V8, damaged, or none there. */
export type CodeCacheState = 'accepted' | 'rejected' | 'corrupt' | 'none';

/** Set by the launcher's loader, before the bundle runs. */
export function setCodeCacheState(state: CodeCacheState): void {
  (globalThis as Record<symbol, unknown>)[KEY] = state;
}

/** 'accepted', 'rejected', 'corrupt', 'none' (then one is written 3 s after the start, where dist/ can be written), or 'off' (not loaded through it: OMNI_CODE_CACHE=off, tsx). */
export function codeCacheState(): CodeCacheState | 'off' {
  const s = (globalThis as Record<symbol, unknown>)[KEY];
  return typeof s === 'string' ? (s as CodeCacheState) : 'off';
}
