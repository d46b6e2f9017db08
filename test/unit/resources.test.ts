// The Director's resource report (node/apps/resources.ts): GPUs from nvidia-smi when it is on PATH
// (a stand-in script here), none when it is not — and then no process is started for it.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const started = vi.hoisted(() => ({ files: [] as string[] }));
vi.mock('node:child_process', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:child_process')>();
  return {
    ...real,
    execFile: ((file: string, ...rest: unknown[]) => {
      started.files.push(file);
      return (real.execFile as (...a: unknown[]) => unknown)(file, ...rest);
    }) as typeof real.execFile,
  };
});
const { measureResources } = await import('../../node/apps/resources.js');

let dir = '';
const path = process.env.PATH;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'omni-resources-'));
});
afterAll(async () => {
  if (path === undefined) delete process.env.PATH;
  else process.env.PATH = path;
  await rm(dir, { recursive: true, force: true });
});

describe('measureResources', () => {
  it('starts no nvidia-smi when PATH has none, and reports no GPUs', async () => {
    process.env.PATH = join(dir, 'nothing-here');
    started.files.length = 0;
    const r = await measureResources(dir);
    expect(r.gpus).toEqual([]);
    expect(started.files).toEqual([]);
    expect(r.cpuCores).toBeGreaterThan(0);
    expect(r.diskBytes).toBeGreaterThan(0);
  });

  it("lists nvidia-smi's GPUs when it is on PATH", async () => {
    const bin = join(dir, 'bin');
    await mkdir(bin, { recursive: true });
    // printf is a builtin of /bin/sh: the stand-in needs nothing else on PATH
    await writeFile(join(bin, 'nvidia-smi'), '#!/bin/sh\nprintf "NVIDIA A100, 40960\\nTesla T4, 15360\\n"\n');
    await chmod(join(bin, 'nvidia-smi'), 0o755);
    process.env.PATH = bin;
    started.files.length = 0;
    expect((await measureResources(dir)).gpus).toEqual([
      { model: 'NVIDIA A100', memoryBytes: 40960 * 1024 * 1024 },
      { model: 'Tesla T4', memoryBytes: 15360 * 1024 * 1024 },
    ]);
    expect(started.files).toEqual(['nvidia-smi']);
  });
});
