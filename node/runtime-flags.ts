// The Node runtime flags every omnid runs with: bin/omnid (the launcher), `npm run omnid` and
// LocalCluster (npm start, the multi-process tests, the benchmarks) pass them; a unit test
// (test/unit/cli-launchers.test.ts) checks that the launchers agree with this list.
//
// --max-semi-space-size: V8 sizes the young generation from the host's memory (64 MiB semi-spaces
// on a host with 24 GiB, so up to ~130 MiB resident for objects that mostly die young). omnid
// allocates fast and briefly (Raft messages, rows, HTTP bodies): 4 MiB keeps that bounded, as
// Node's default was before it grew with the host (measured in bench:state: V8 heap committed
// ~220 MB → ~100 MB per node, live ~50 MB either way).
export const OMNID_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4'];

// Not set (bin/omnid), measured: MALLOC_MMAP_THRESHOLD_=131072 (glibc) gives every buffer of
// 128 KiB or more its own mapping, so 1 MiB values no longer fragment the main heap (200 writes of
// 1 MiB: the leader's anonymous RSS 436 → 230 MiB), but it cost about twice the CPU per 1 MiB write
// (0.29–0.31 → 0.56–0.66 CPU-s for the three nodes: a map, page faults and an unmap for every such
// buffer) and writes timed out under load.
