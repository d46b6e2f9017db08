// The Node runtime flags and environment every omnid runs with: bin/omnid (the launcher),
// `npm run omnid` and LocalCluster (npm start, the multi-process tests, the benchmarks) pass them;
// a unit test (test/unit/cli-launchers.test.ts) checks that the launchers agree with these lists.
//
// --max-semi-space-size: V8 sizes the young generation from the host's memory (64 MiB semi-spaces
// on a host with 24 GiB, so up to ~130 MiB resident for objects that mostly die young). omnid
// allocates fast and briefly (Raft messages, rows, HTTP bodies): 8 MiB keeps that bounded, as
// Node's default was before it grew with the host (measured in bench:state: V8 heap committed
// ~220 MB → ~100 MB per node, live ~50 MB either way).
export const OMNID_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=8'];

/**
 * MALLOC_MMAP_THRESHOLD_ (glibc; ignored elsewhere): allocations of 128 KiB or more get their own
 * mapping, returned to the system when freed. Without it glibc raises the threshold to the size
 * of the largest block freed (up to 32 MiB), so once a 1 MiB value's buffers were freed the next
 * ones come from the main heap, which fragments and never shrinks: measured with 200 writes of
 * 1 MiB on a 3-node cluster, the leader's heap grew to 280 MiB (436 MiB anonymous RSS) against
 * 110 MiB (230 MiB) with the fixed threshold.
 */
export const OMNID_ENV: Readonly<Record<string, string>> = { MALLOC_MMAP_THRESHOLD_: '131072' };
