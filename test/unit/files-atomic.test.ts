// writeFileAtomic: concurrent writes of one path in one process (two uploads of the same blob
// at once, e.g. two compose services built in parallel sharing a dependency layer) all succeed
// and leave one whole file and no temp files.
import { describe, expect, it } from 'vitest';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../../node/files.js';

describe('writeFileAtomic', () => {
  it('concurrent writes of the same path all succeed', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-atomic-'));
    try {
      const path = join(dir, 'f');
      const values = Array.from({ length: 8 }, (_, i) => `value ${i}`);
      await Promise.all(values.map((v) => writeFileAtomic(path, v)));
      expect(values).toContain(await readFile(path, 'utf8'));
      expect(await readdir(dir)).toEqual(['f']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
