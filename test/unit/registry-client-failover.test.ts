// The CLI's registry client when a node stops answering: an interrupted blob download resumes
// from the bytes it has (a Range request, the digest over the whole blob), a server that ignores
// the Range starts it over, and FailoverRegistry repeats the failed operation on another node's
// registry — never on one it gave up on, and never after an answer that is not about reachability.
import { afterEach, describe, expect, it } from 'vitest';
import { createServer, type Server, type IncomingMessage, type ServerResponse } from 'node:http';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { FailoverRegistry, RegistryClient, registryFailoverWorthy } from '../../cli/omni/registry-client.js';
import { OmniError } from '../../node/errors.js';

const BLOB = randomBytes(3 * 1024 * 1024 + 17);
const DIGEST = 'sha256:' + createHash('sha256').update(BLOB).digest('hex');

const servers: Server[] = [];
let dir: string | undefined;
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const s = createServer(handler);
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}

/** Serves BLOB honouring Range; cuts the connection after `cutAfter` bytes of the first answer. */
function blobServer(o: { cutAfter?: number; ignoreRange?: boolean; seen: { ranges: (string | undefined)[] } }) {
  let answered = 0;
  return (req: IncomingMessage, res: ServerResponse) => {
    o.seen.ranges.push(req.headers.range);
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const from = m && !o.ignoreRange ? Number(m[1]) : 0;
    const body = BLOB.subarray(from);
    if (from > 0) res.writeHead(206, { 'content-length': body.length, 'content-range': `bytes ${from}-${BLOB.length - 1}/${BLOB.length}` });
    else res.writeHead(200, { 'content-length': body.length });
    if (answered++ === 0 && o.cutAfter !== undefined) {
      res.write(body.subarray(0, o.cutAfter), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    res.end(body);
  };
}

describe('RegistryClient.downloadBlob', () => {
  it('keeps the part of an interrupted download and resumes it with a Range request; the digest covers the whole blob', async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-regclient-'));
    const seen = { ranges: [] as (string | undefined)[] };
    const url = await serve(blobServer({ cutAfter: 1024 * 1024, seen }));
    const reg = new RegistryClient(url, undefined);
    const dest = join(dir, 'blob');
    let counted = 0;
    const err = await reg.downloadBlob('r', DIGEST, dest, (n) => (counted += n)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OmniError);
    expect((err as OmniError).code).toBe('UNAVAILABLE');
    expect(registryFailoverWorthy(err)).toBe(true);
    const part = (await stat(`${dest}.part`)).size;
    expect(part).toBeGreaterThan(0);
    expect(part).toBeLessThan(BLOB.length);
    const n = await reg.downloadBlob('r', DIGEST, dest, (k) => (counted += k));
    expect(n).toBe(BLOB.length);
    expect(seen.ranges).toEqual([undefined, `bytes=${part}-`]);
    expect((await readFile(dest)).equals(BLOB)).toBe(true);
    expect(counted).toBe(BLOB.length);
    await expect(stat(`${dest}.part`)).rejects.toThrow();
  });

  it('starts over when the server ignores the Range (200), taking back the bytes it had counted', async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-regclient-'));
    const seen = { ranges: [] as (string | undefined)[] };
    const url = await serve(blobServer({ ignoreRange: true, seen }));
    const dest = join(dir, 'blob');
    await writeFile(`${dest}.part`, BLOB.subarray(0, 1000));
    let counted = 1000; // what an earlier attempt reported
    const n = await new RegistryClient(url, undefined).downloadBlob('r', DIGEST, dest, (k) => (counted += k));
    expect(n).toBe(BLOB.length);
    expect(counted).toBe(BLOB.length);
    expect((await readFile(dest)).equals(BLOB)).toBe(true);
  });

  it('refuses a resumed blob whose first part was not this blob, and removes the part', async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-regclient-'));
    const seen = { ranges: [] as (string | undefined)[] };
    const url = await serve(blobServer({ seen }));
    const dest = join(dir, 'blob');
    await writeFile(`${dest}.part`, randomBytes(1000));
    const err = await new RegistryClient(url, undefined).downloadBlob('r', DIGEST, dest).catch((e: unknown) => e);
    expect((err as OmniError).code).toBe('DIGEST_INVALID');
    expect(registryFailoverWorthy(err)).toBe(false);
    await expect(stat(`${dest}.part`)).rejects.toThrow();
    // and the next attempt starts from nothing and succeeds
    expect(await new RegistryClient(url, undefined).downloadBlob('r', DIGEST, dest)).toBe(BLOB.length);
  });
});

describe('FailoverRegistry', () => {
  it('repeats a download on the next registry when the first breaks off, resuming its part there', async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-regclient-'));
    const seenA = { ranges: [] as (string | undefined)[] };
    const seenB = { ranges: [] as (string | undefined)[] };
    const a = await serve(blobServer({ cutAfter: 512 * 1024, seen: seenA }));
    const b = await serve(blobServer({ seen: seenB }));
    const moves: string[] = [];
    const asked: string[][] = [];
    const reg = new FailoverRegistry(
      new RegistryClient(a, undefined),
      async (avoid) => (asked.push([...avoid]), new RegistryClient(b, undefined)),
      (from, to) => moves.push(`${from} -> ${to}`),
    );
    const dest = join(dir, 'blob');
    expect(await reg.downloadBlob('r', DIGEST, dest)).toBe(BLOB.length);
    expect((await readFile(dest)).equals(BLOB)).toBe(true);
    expect(reg.failovers).toBe(1);
    expect(reg.url).toBe(b);
    expect(moves).toEqual([`${a} -> ${b}`]);
    expect(asked).toEqual([[a]]);
    expect(seenB.ranges).toHaveLength(1);
    expect(seenB.ranges[0]).toMatch(/^bytes=\d+-$/);
  });

  it('moves on from a node that refuses connections, and gives up when the only other answer is a node it gave up on', async () => {
    const closed = await serve(() => undefined);
    await new Promise((r) => servers.pop()!.close(r)); // nothing listens there now
    const up = await serve((_req, res) => res.writeHead(200).end());
    const reg = new FailoverRegistry(new RegistryClient(closed, undefined), async () => new RegistryClient(up, undefined));
    expect(await reg.hasBlob('r', DIGEST)).toBe(true);
    expect(reg.failovers).toBe(1);

    const stuck = new FailoverRegistry(new RegistryClient(closed, undefined), async () => new RegistryClient(closed, undefined));
    const err = await stuck.hasBlob('r', DIGEST).catch((e: unknown) => e);
    expect((err as OmniError).code).toBe('UNAVAILABLE');
    expect(stuck.failovers).toBe(0);
  });

  it('does not move on after an answer about the request itself (404, 401), nor without a way to find another node', async () => {
    const notFound = await serve((_req, res) => res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"BLOB_UNKNOWN","message":"no"}]}'));
    const denied = await serve((_req, res) => res.writeHead(401).end());
    const other = await serve((_req, res) => res.writeHead(200).end());
    let asked = 0;
    const next = async () => (asked++, new RegistryClient(other, undefined));
    const dir2 = await mkdtemp(join(tmpdir(), 'omni-regclient-'));
    try {
      await expect(new FailoverRegistry(new RegistryClient(notFound, undefined), next).downloadBlob('r', DIGEST, join(dir2, 'b'))).rejects.toMatchObject({ code: 'NOT_FOUND' });
      await expect(new FailoverRegistry(new RegistryClient(denied, undefined), next).hasBlob('r', DIGEST)).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    } finally {
      await rm(dir2, { recursive: true, force: true });
    }
    expect(asked).toBe(0);
    const unavailable = await serve((_req, res) => res.writeHead(503).end());
    const r = new FailoverRegistry(new RegistryClient(unavailable, undefined), next);
    expect(await r.hasBlob('r', DIGEST)).toBe(true);
    expect(asked).toBe(1);
    await expect(new FailoverRegistry(new RegistryClient(unavailable, undefined), undefined).hasBlob('r', DIGEST)).rejects.toMatchObject({ code: 'REGISTRY_ERROR' });
  });
});
