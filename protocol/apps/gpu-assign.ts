// Which of a node's GPUs a task gets. The scheduler reserves a count per node (resources.gpus);
// the node's agent picks the devices: the lowest indices (nvidia-smi's order) that none of its
// other tasks holds, so two tasks never share a GPU. Pure: node/apps/agent.ts keeps what each
// task holds and passes the devices to the driver (docker: a device request by ID; process:
// CUDA_VISIBLE_DEVICES).

/** `count` device indices of `total` not in `held`, lowest first; undefined when not enough are free. */
export function assignGpus(count: number, total: number, held: Iterable<number>): number[] | undefined {
  if (count <= 0) return [];
  const taken = new Set(held);
  const out: number[] = [];
  for (let i = 0; i < total && out.length < count; i++) if (!taken.has(i)) out.push(i);
  return out.length === count ? out : undefined;
}
