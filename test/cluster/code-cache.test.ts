// bin/omnid's daemon starts run the bundle through the start-up code cache (dist/omnid.cjs,
// cli/code-cache.ts; test/unit/code-cache.test.ts covers the loader itself): a start says what became
// of the cache, a node that ran past the write (3 s) leaves one that the next start uses, and
// OMNI_CODE_CACHE=off loads the bundle the plain way. A real omnid on 127.0.0.1.
import { afterAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { omnidUntil } from './helpers.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dirs: string[] = [];
const procs = new Set<ChildProcess>();
afterAll(async () => {
  for (const p of procs) p.kill('SIGKILL');
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** Runs bin/omnid until it says what became of its code cache; that state and a stop function. */
async function omnid(args: string[], env: NodeJS.ProcessEnv): Promise<{ state: string; stop: () => Promise<void> }> {
  const { line, stop } = await omnidUntil(args, /start-up code cache: \S+/, { env, started: procs });
  return { state: /start-up code cache: (\S+)/.exec(line)![1], stop };
}

describe("omnid's start-up code cache", () => {
  it('a daemon start goes through it, leaves a cache the next start uses; OMNI_CODE_CACHE=off does without', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-code-cache-'));
    dirs.push(dir);
    const data = join(dir, 'data');
    const env = { OMNI_CONFIG: join(dir, 'cli.json'), OMNI_CODE_CACHE: '' };
    const init = await omnid(['init', '--data', data, '--voters', '1', '--listen', '/ip4/127.0.0.1/tcp/0', '--api', '127.0.0.1:0', '--registry', 'off'], env);
    // none (the first start of this build: it writes one at 3 s), or accepted (another omnid wrote it)
    expect(['none', 'accepted']).toContain(init.state);
    await new Promise((r) => setTimeout(r, 4000));
    await init.stop();
    const again = await omnid(['start', '--data', data], env);
    expect(again.state).toBe('accepted');
    await again.stop();
    const off = await omnid(['start', '--data', data], { ...env, OMNI_CODE_CACHE: 'off' });
    expect(off.state).toBe('off');
    await off.stop();
  }, 120_000);
});
