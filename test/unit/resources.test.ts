// The Director's resource report (node/apps/resources.ts): GPUs from nvidia-smi when it is on PATH
// (a stand-in script here), none when it is not.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { measureResources } from '../../node/apps/resources.js';

let dir = '';
const path = process.env.PATH;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'omni-resources-'));
});
afterAll(async () => {
  process.env.PATH = path;
  await rm(dir, { recursive: true, force: true });
});

describe('measureResources', () => {
  it("lists nvidia-smi's GPUs when it is on PATH, none when it is not", async () => {
    process.env.PATH = `${join(dir, 'none')}:/usr/bin:/bin`;
    expect((await measureResources(dir)).gpus).toEqual([]);
    const bin = join(dir, 'bin');
    await mkdir(bin);
    await writeFile(join(bin, 'nvidia-smi'), '#!/bin/sh\nprintf "NVIDIA A100, 40960\\nTesla T4, 15360\\n"\n');
    await chmod(join(bin, 'nvidia-smi'), 0o755);
    process.env.PATH = `${bin}:/usr/bin:/bin`;
    const r = await measureResources(dir);
    expect(r.gpus).toEqual([
      { model: 'NVIDIA A100', memoryBytes: 40960 * 1024 * 1024 },
      { model: 'Tesla T4', memoryBytes: 15360 * 1024 * 1024 },
    ]);
    expect(r.cpuCores).toBeGreaterThan(0);
    expect(r.diskBytes).toBeGreaterThan(0);
  });
});
