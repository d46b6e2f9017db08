// Which malloc this process runs on (glibc, or jemalloc when bin/omnid preloads it: OMNI_MALLOC; README:
// Memory of a node): read from the libraries mapped into it, for the start line of the log.
import { readFileSync } from 'node:fs';

export type Allocator = 'jemalloc' | 'glibc' | 'unknown';

/** 'jemalloc' when libjemalloc is mapped into this process, 'glibc' when libc is, else 'unknown'. */
export function processAllocator(maps: () => string = () => readFileSync('/proc/self/maps', 'utf8')): Allocator {
  let text: string;
  try {
    text = maps();
  } catch {
    return 'unknown';
  }
  if (/\/libjemalloc\.so[^\s/]*$/m.test(text)) return 'jemalloc';
  if (/\/libc\.so[^\s/]*$/m.test(text) || /\/libc-[\d.]+\.so$/m.test(text)) return 'glibc';
  return 'unknown';
}
