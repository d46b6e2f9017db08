// omnid start reuses the flags given at init (API address, name, labels, TLS mode); a flag given
// to start overrides and is saved. Real omnid processes on 127.0.0.1.
import { afterAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { omnidUntil } from './helpers.js';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dirs: string[] = [];
const procs = new Set<ChildProcess>();
afterAll(async () => {
  for (const p of procs) p.kill('SIGKILL');
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

const omnid = (args: string[], ready: RegExp) => omnidUntil(args, ready, { started: procs });

describe('omnid start reuses the init flags', () => {
  it('serves the API where init said, keeps name and labels; a flag given to start overrides and is saved', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-flags-'));
    dirs.push(dir);
    const data = join(dir, 'data');
    const [port1, port2] = [await freePort(), await freePort()];
    const env = { OMNI_CONFIG: join(dir, 'cli.json') };
    Object.assign(process.env, env);
    const init = await omnid(['init', '--data', data, '--voters', '1', '--name', 'solo', '--label', 'zone=a', '--listen', '/ip4/127.0.0.1/tcp/0', '--api', `127.0.0.1:${port1}`], /export OMNI_ADDR=/);
    expect(init.line).toContain(`OMNI_ADDR=http://127.0.0.1:${port1}`);
    await init.stop();

    const again = await omnid(['start', '--data', data], /omnid: started/);
    expect(again.line).toMatch(new RegExp(`^omnid: started solo .* API http://127\\.0\\.0\\.1:${port1}$`));
    await again.stop();

    const moved = await omnid(['start', '--data', data, '--api', `127.0.0.1:${port2}`], /omnid: started/);
    expect(moved.line).toMatch(new RegExp(`API http://127\\.0\\.0\\.1:${port2}$`));
    await moved.stop();
    const saved = JSON.parse(await readFile(join(data, 'omnid-flags.json'), 'utf8')) as { flags: Record<string, unknown> };
    expect(saved.flags).toMatchObject({ api: `127.0.0.1:${port2}`, name: 'solo', label: ['zone=a'] });
    expect(saved.flags.data).toBeUndefined();

    const last = await omnid(['start', '--data', data], /omnid: started/);
    expect(last.line).toMatch(new RegExp(`API http://127\\.0\\.0\\.1:${port2}$`));
    await last.stop();

    // A damaged flags file is one clear line, not a stack trace.
    await writeFile(join(data, 'omnid-flags.json'), '{"flags": {"api": 7}}');
    const broken = await omnid(['start', '--data', data], /error: /).catch((e: Error) => ({ line: e.message, stop: async () => undefined }));
    expect(broken.line).toMatch(/omnid-flags\.json: --api has the wrong type; fix or remove it .*\(BAD_CONFIG\)/);
  }, 120_000);

  it('an API port 0 given to init is kept across restarts (where the CLI config points)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-flags-'));
    dirs.push(dir);
    const data = join(dir, 'data');
    Object.assign(process.env, { OMNI_CONFIG: join(dir, 'cli.json') });
    const init = await omnid(['init', '--data', data, '--voters', '1', '--listen', '/ip4/127.0.0.1/tcp/0', '--api', '127.0.0.1:0'], /export OMNI_ADDR=/);
    const port = /OMNI_ADDR=http:\/\/127\.0\.0\.1:(\d+)/.exec(init.line)?.[1];
    expect(Number(port)).toBeGreaterThan(0);
    await init.stop();
    const cli = JSON.parse(await readFile(join(dir, 'cli.json'), 'utf8')) as { addr: string };
    expect(cli.addr).toBe(`http://127.0.0.1:${port}`);
    for (let i = 0; i < 2; i++) {
      const again = await omnid(['start', '--data', data], /omnid: started/);
      expect(again.line).toMatch(new RegExp(`API http://127\\.0\\.0\\.1:${port}$`));
      await again.stop();
    }
  }, 120_000);
});
