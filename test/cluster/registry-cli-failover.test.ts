// The CLI's image transfers survive the loss of the node they go through: `omni images pull` from
// node A (first in the CLI's config file, the cluster's other members after it) while A is killed
// with SIGKILL part-way through a blob completes from another node's registry — the blob it was
// reading resumed there with a Range request, every digest checked — and `omni images push` with A
// down goes to another node. No docker needed: the image is an OCI layout the test writes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import { LocalCluster } from '../../node/local-cluster.js';
import { makeImage, type Image } from '../bench/oci-image.js';
import { formCluster } from './helpers.js';

const run = promisify(execFile);
const sha = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');

describe('image transfers fail over to another node', () => {
  let c: LocalCluster;
  let dir: string;
  let image: Image;
  const names = ['v1', 'v2', 'v3'];
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-images-failover-'));
    c = await formCluster(names);
    // The CLI's config file as `omnid init` writes it, with the members it learned: v1 first.
    const config = join(dir, 'omni.json');
    const addrs = names.map((n) => c.nodes.get(n)!.apiUrl);
    await writeFile(config, JSON.stringify({ addr: addrs[0], token: c.adminToken, addrs, addrsUpdatedAtMs: Date.now() }));
    env = { ...process.env, OMNI_CONFIG: config, OMNI_ADDR: '', OMNI_TOKEN: '' };
    delete env.OMNI_ADDR;
    delete env.OMNI_TOKEN;
    image = await makeImage(join(dir, 'image'), 96, 'failover');
    // pushed through v2: with two copies (the default), the other nodes fetch it from their peers
    const pushed = await run('bin/omni', ['images', 'push', 'fo/app:1', image.dir, '--json'], { env: { ...env, OMNI_ADDR: addrs[1] }, timeout: 180_000 });
    expect(JSON.parse(pushed.stdout).images[0].digest).toBe(image.manifestDigest);
  }, 240_000);
  afterAll(async () => {
    await c?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('omni images pull completes from another node when the node it reads from is killed mid-blob', async () => {
    const out = join(dir, 'pulled');
    const cli = spawn('bin/omni', ['images', 'pull', 'fo/app:1', '-o', `${out}/`, '--json'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    cli.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    cli.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const exited = new Promise<number | null>((r) => cli.on('exit', (code) => r(code)));
    // Kill v1 once a blob is being written (its .part file in the CLI's work directory has bytes).
    let killedAtBytes = -1;
    const deadline = Date.now() + 120_000;
    while (killedAtBytes < 0 && Date.now() < deadline && cli.exitCode === null) {
      for (const w of (await readdir(dir)).filter((f) => f.startsWith('.omni-images-'))) {
        const blobs = join(dir, w, 'layout', 'blobs', 'sha256');
        for (const f of (await readdir(blobs).catch(() => [] as string[])).filter((x) => x.endsWith('.part'))) {
          const size = (await stat(join(blobs, f)).catch(() => undefined))?.size ?? 0;
          if (size > 0 && killedAtBytes < 0) {
            killedAtBytes = size;
            await c.kill('v1');
          }
        }
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    const code = await exited;
    expect(killedAtBytes, `the pull ended before a blob was seen in transfer: ${stderr}`).toBeGreaterThan(0);
    expect(code, stderr).toBe(0);
    const r = JSON.parse(stdout) as { digest: string; failovers: number; blobs: number };
    expect(r.digest).toBe(image.manifestDigest);
    expect(r.failovers).toBe(1);
    expect(stderr).toMatch(/the registry at \S+ stopped answering .*going on with \S+/);
    // every blob is whole and matches its digest
    for (const b of image.blobs) expect(sha(await readFile(join(out, 'blobs', 'sha256', b.digest.slice(7))))).toBe(b.digest);
    expect(sha(await readFile(join(out, 'blobs', 'sha256', image.manifestDigest.slice(7))))).toBe(image.manifestDigest);
  }, 240_000);

  it('omni images push goes to another node while the first node of the config file is down', async () => {
    const pushed = await run('bin/omni', ['images', 'push', 'fo/app:2', image.dir, '--json'], { env, timeout: 180_000 });
    const r = JSON.parse(pushed.stdout) as { images: { digest: string }[]; failovers: number };
    expect(r.images[0].digest).toBe(image.manifestDigest);
    const tags = JSON.parse((await run('bin/omni', ['images', 'ls', '--json'], { env, timeout: 60_000 })).stdout) as unknown;
    expect(JSON.stringify(tags)).toContain('fo/app');
  }, 240_000);
});
