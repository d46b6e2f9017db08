// The tree bench:sync syncs (and test/bench/sync-hold-diag.ts holds): `files` files under 50 × 7
// directories, the first 10 of ~8 MiB and the rest of 4–44 KiB, random content; and a wait until
// `omni status` answers (the cluster formed, the CLI bundle built).
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';

const run = promisify(execFile);
/** Files of ~8 MiB at the start of the tree. */
export const BIG_FILES = 10;

/** Writes the tree under `root`; returns its bytes. */
export async function makeTree(root: string, files: number): Promise<number> {
  let bytes = 0;
  for (let i = 0; i < files; i++) {
    const dir = join(root, `d${i % 50}`, `s${i % 7}`);
    await mkdir(dir, { recursive: true });
    const size = i < BIG_FILES ? 8 * 1024 * 1024 + i : 4 * 1024 + ((i * 7919) % (40 * 1024));
    await writeFile(join(dir, `f${i}.dat`), randomBytes(size));
    bytes += size;
  }
  return bytes;
}

/** Runs `bin/omni status` until it succeeds (up to ~30 s); `onWait` hears each failure. */
export async function waitForCli(env: NodeJS.ProcessEnv, onWait: (why: string) => void = () => undefined): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      await run('bin/omni', ['status'], { env, timeout: 120_000 });
      return;
    } catch (err) {
      if (i >= 15) throw err;
      onWait(String((err as { stderr?: string }).stderr ?? err).slice(0, 200));
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}
