// The Node runtime flags every omnid runs with: bin/omnid (the launcher), `npm run omnid` and
// LocalCluster (npm start, the multi-process tests, the benchmarks) pass them; a unit test
// (test/unit/cli-launchers.test.ts) checks that the launchers agree with this list.
//
// --max-semi-space-size: V8 sizes the young generation from the host's memory (64 MiB semi-spaces
// on a host with 24 GiB, so up to ~130 MiB resident for objects that mostly die young). omnid
// allocates fast and briefly (Raft messages, rows, HTTP bodies): 4 MiB keeps that bounded, as
// Node's default was before it grew with the host (measured in bench:state: V8 heap committed
// ~220 MB → ~100 MB per node, live ~50 MB either way).
//
// --max-old-space-size=1024: V8 grows the old generation after each full GC by a factor that
// depends on the heap limit — 4× with the default limit of a host with a few GiB or more (V8's
// MemoryController: 1.3× at 256 MB, rising to 4× at 2 GB, on a 64-bit build without pointer
// compression as Node's), 1.6× at 1,024 MB. In bench:state at 1 GiB the leader streaming the
// join's snapshot had 192 MB of V8 heap committed for 77 MB live; with the limit 128 MB, and the
// max RSS of any node 496–514 → 395 MiB, for 1 KiB writes 2–5 % slower (within the host's noise;
// bench:cluster: CPU per 1,000 writes 2.37 → 2.40× etcd's in runs one after the other). The live
// heap at 1 GiB of state is ~60–80 MB: the limit is 13× that; OMNI_NODE_ARGS can raise it.
//
// --initial-old-space-size=64: the old generation is not collected before it holds 64 MB. With the
// 1.6× growth above, a small heap (~25 MB live on a node moving blobs) was collected every few MB
// promoted: ~130 full collections during one initial `omni sync` of 200 MB on three nodes (blob
// copies promote many buffers). Measured (test/bench/sync-initial-diag.ts, alternating): that sync
// 6.6–7.1 s → 4.9–5.0 s and the nodes' CPU 10.4–11.4 → 6.9–7.2 s (96: 4.2 s, 128: 4.2–4.5 s); RSS
// after it 150 → ~165 MiB; bench:cluster: RSS after c=64 165 MiB against etcd's 104 (1.59×; 96
// gave 188 MiB, 1.88×, too close to the 2× goal), writes and CPU per write within the host's noise.
export const OMNID_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4', '--initial-old-space-size=64', '--max-old-space-size=1024'];

// Not set (bin/omnid), measured: MALLOC_MMAP_THRESHOLD_=131072 (glibc) gives every buffer of
// 128 KiB or more its own mapping, so 1 MiB values no longer fragment the main heap (200 writes of
// 1 MiB: the leader's anonymous RSS 436 → 230 MiB), but it cost about twice the CPU per 1 MiB write
// (0.29–0.31 → 0.56–0.66 CPU-s for the three nodes: a map, page faults and an unmap for every such
// buffer) and writes timed out under load.
