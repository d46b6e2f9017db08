// What this host offers (the Director's report): measured at start, the free disk again every
// --disk-check-ms (protocol/cluster/disk-report.ts).
import { cpus, totalmem, arch, loadavg, freemem } from 'node:os';
import { statfs } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import type { NodeResources, GpuInfo } from '../../protocol/cluster/state.js';
import { resolveCommand } from './command-path.js';

const NVIDIA_SMI_TIMEOUT_MS = 3000;

/**
 * `workspaceBytes`: what this node's tasks' workspaces hold in the data dir now; it is added to the
 * free space (those bytes are inside reservations the scheduler already counts).
 */
export async function measureResources(dataDir: string, workspaceBytes = 0): Promise<NodeResources> {
  const diskBytes = await measureDisk(dataDir, workspaceBytes);
  return { cpuCores: cpus().length, memoryBytes: totalmem(), diskBytes, arch: normalizeArch(arch()), gpus: await nvidiaGpus() };
}

/** Free bytes of the data dir's file system plus `workspaceBytes`; 0 when it cannot be measured. */
export async function measureDisk(dataDir: string, workspaceBytes = 0): Promise<number> {
  try {
    const s = await statfs(dataDir);
    return Number(s.bavail) * Number(s.bsize) + workspaceBytes;
  } catch {
    return 0;
  }
}

export function currentLoad(): { load1: number; memFreeBytes: number } {
  return { load1: Math.round(loadavg()[0] * 100) / 100, memFreeBytes: freemem() };
}

function normalizeArch(a: string): string {
  return a === 'x64' ? 'amd64' : a === 'arm64' ? 'arm64' : a;
}

/** NVIDIA GPUs via nvidia-smi when it exists; none otherwise (looked up first: a process start costs ~10 ms of the daemon's start). */
function nvidiaGpus(): Promise<GpuInfo[]> {
  // as execFile looks it up: PATH (libuv's default when unset), relative entries from the working directory
  if (resolveCommand('nvidia-smi', process.env.PATH ?? '/usr/bin:/bin', process.cwd()) === undefined) return Promise.resolve([]);
  return new Promise((resolve) => {
    execFile('nvidia-smi', ['--query-gpu=name,memory.total', '--format=csv,noheader,nounits'], { timeout: NVIDIA_SMI_TIMEOUT_MS }, (err, stdout) => {
      if (err) return resolve([]);
      const gpus = stdout
        .split('\n')
        .map((l) => l.split(',').map((s) => s.trim()))
        .filter((p) => p.length === 2 && p[0] !== '' && Number.isFinite(Number(p[1])))
        .slice(0, 64)
        .map(([model, mib]) => ({ model: model.slice(0, 128), memoryBytes: Number(mib) * 1024 * 1024 }));
      resolve(gpus);
    });
  });
}
