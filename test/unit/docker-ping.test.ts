// The engine ping the docker driver answers available() with (no dockerode loaded for it): a
// fake engine on a unix socket.
import { createServer, type Server } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DockerDriver, pingEngine } from '../../node/apps/drivers/docker.js';

let dir: string | undefined;
let server: Server | undefined;

async function fakeEngine(answer: (path: string) => number | 'hang'): Promise<string> {
  dir = await mkdtemp(join(tmpdir(), 'omni-ping-'));
  const socketPath = join(dir, 'docker.sock');
  server = createServer((req, res) => {
    const a = answer(req.url ?? '');
    if (a === 'hang') return;
    res.writeHead(a, { 'content-type': 'text/plain' });
    res.end(a === 200 ? 'OK' : 'no');
  });
  await new Promise<void>((r) => server!.listen(socketPath, r));
  return socketPath;
}

afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((r) => (server ? server.close(r) : r(undefined)));
  server = undefined;
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('pingEngine', () => {
  it('resolves when the engine answers GET /_ping with 200', async () => {
    const paths: string[] = [];
    const sock = await fakeEngine((p) => (paths.push(p), 200));
    await pingEngine(sock, 2000);
    expect(paths).toEqual(['/_ping']);
    expect(await new DockerDriver({ socketPath: sock }).available()).toEqual({ ok: true });
  });

  it('throws on another status, no answer within the timeout, or no socket', async () => {
    const sock = await fakeEngine(() => 500);
    await expect(pingEngine(sock, 2000)).rejects.toThrow(/HTTP 500/);
    const r = await new DockerDriver({ socketPath: sock }).available();
    expect(r).toMatchObject({ ok: false });
    expect(!r.ok && r.reason).toMatch(/does not answer .*HTTP 500/);
    await expect(pingEngine(join(dir!, 'absent.sock'), 2000)).rejects.toThrow(/ENOENT/);
  });

  it('gives up on an engine that accepts and never answers', async () => {
    const sock = await fakeEngine(() => 'hang');
    await expect(pingEngine(sock, 100)).rejects.toThrow(/no answer to \/_ping within 100 ms/);
  });
});
