// The API's JSON bodies (node/api/input.ts readJson): ASCII bodies take the Latin-1 fast path,
// anything else is decoded as UTF-8; both parse to the same values, split across chunks anywhere.
// readBody over a real HTTP server: its size limit (declared or streamed) and a client that goes away mid-body.
import { describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { createServer, request as httpRequest, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readBody, readJson } from '../../node/api/input.js';
import { lingeringClose } from '../../node/api/limits.js';

function request(chunks: Buffer[]): IncomingMessage {
  const r = Readable.from(chunks) as unknown as IncomingMessage;
  r.headers = {};
  return r;
}

describe('readJson', () => {
  it('parses ASCII and UTF-8 bodies alike, whatever the chunking', async () => {
    const values = [{ value: 'plain ascii "quoted" \\u00e9 escape' }, { value: 'ünïcödé ✓ 😀', k: ['a', 1] }, { value: 'x'.repeat(300_000) + 'é' }, { value: 'y'.repeat(300_000) }];
    for (const v of values) {
      const body = Buffer.from(JSON.stringify(v));
      for (const cut of [body.length, 1, 7, 65536]) {
        const chunks: Buffer[] = [];
        for (let i = 0; i < body.length; i += cut) chunks.push(body.subarray(i, i + cut));
        expect(await readJson(request(chunks))).toEqual(v);
      }
    }
    expect(await readJson(request([]))).toEqual({});
  });

  it('refuses a body that is not JSON', async () => {
    await expect(readJson(request([Buffer.from('{"a":')]))).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    await expect(readJson(request([Buffer.from([0x7b, 0xff, 0x7d])]))).rejects.toMatchObject({ code: 'BAD_REQUEST' });
  });
});

/** What readBody(req, maxBytes) gives for a request that `send` makes to a real server. */
async function bodyOnServer(maxBytes: number, send: (port: number) => void): Promise<{ body?: Buffer; code?: string; message?: string }> {
  let settle!: (v: { body?: Buffer; code?: string; message?: string }) => void;
  const got = new Promise<{ body?: Buffer; code?: string; message?: string }>((r) => (settle = r));
  const server = createServer((req, res) => {
    readBody(req, maxBytes).then(
      (body) => settle({ body }),
      (err: { code?: string; message?: string }) => settle({ code: err.code, message: err.message }),
    );
    res.on('error', () => undefined);
    req.on('end', () => res.end());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    send((server.address() as AddressInfo).port);
    return await got;
  } finally {
    server.closeAllConnections();
    server.close();
  }
}

function post(port: number, headers: Record<string, string | number>, parts: Buffer[], end: 'end' | 'destroy'): void {
  const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/', headers });
  req.on('error', () => undefined);
  for (const p of parts) req.write(p);
  if (end === 'end') req.end();
  else setTimeout(() => req.destroy(), 50);
}

describe('readBody', () => {
  it('reads a body sent in pieces, with or without Content-Length', async () => {
    const parts = [Buffer.from('a'.repeat(1000)), Buffer.from('b'.repeat(70_000)), Buffer.from('c')];
    const whole = Buffer.concat(parts);
    expect((await bodyOnServer(100_000, (port) => post(port, { 'content-length': whole.length }, parts, 'end'))).body).toEqual(whole);
    expect((await bodyOnServer(100_000, (port) => post(port, { 'transfer-encoding': 'chunked' }, parts, 'end'))).body).toEqual(whole);
    expect((await bodyOnServer(100_000, (port) => post(port, {}, [], 'end'))).body).toEqual(Buffer.alloc(0));
  });

  it('refuses a body over the limit: declared, or found while streaming', async () => {
    expect(await bodyOnServer(10, (port) => post(port, { 'content-length': 11 }, [Buffer.alloc(11)], 'end'))).toMatchObject({ code: 'TOO_LARGE' });
    expect(await bodyOnServer(1000, (port) => post(port, { 'transfer-encoding': 'chunked' }, [Buffer.alloc(600), Buffer.alloc(600)], 'end'))).toMatchObject({ code: 'TOO_LARGE' });
  });

  it('a body already read to its end reads as empty again (no wait for an end that will not come)', async () => {
    const req = request([Buffer.from('{"a":1}')]);
    expect(await readJson(req)).toEqual({ a: 1 });
    expect((await readBody(req, 100)).length).toBe(0);
  });

  it('a 413 for a body still streaming reaches the client (the server answers as ApiServer does, then closes)', async () => {
    const server = createServer((req, res) => {
      readBody(req, 1000).then(
        () => res.end('ok'),
        (err: { code?: string }) => {
          const headers: Record<string, string> = { 'content-type': 'text/plain' };
          if (!req.complete) {
            headers.connection = 'close';
            lingeringClose(req);
          }
          res.writeHead(err.code === 'TOO_LARGE' ? 413 : 400, headers);
          res.end('refused');
        },
      );
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const port = (server.address() as AddressInfo).port;
      const answer = await new Promise<{ status: number; connection?: string }>((resolve, reject) => {
        const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/', headers: { 'transfer-encoding': 'chunked' } }, (res) => {
          res.resume();
          resolve({ status: res.statusCode!, connection: res.headers.connection });
          req.destroy();
        });
        req.on('error', reject);
        let sent = 0;
        const more = () => {
          // a body far over the limit, sent while the answer has not come
          while (sent < 4 * 1024 * 1024 && req.write(Buffer.alloc(16 * 1024))) sent += 16 * 1024;
          if (sent < 4 * 1024 * 1024) req.once('drain', more);
        };
        more();
      });
      expect(answer).toEqual({ status: 413, connection: 'close' });
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  it('says so when the client goes away mid-body (a 400, not a 500 or a hang)', async () => {
    expect(await bodyOnServer(1000, (port) => post(port, { 'content-length': 500 }, [Buffer.alloc(100)], 'destroy'))).toMatchObject({ code: 'BAD_REQUEST', message: expect.stringMatching(/ended early/) });
    expect(await bodyOnServer(1000, (port) => post(port, { 'transfer-encoding': 'chunked' }, [Buffer.alloc(100)], 'destroy'))).toMatchObject({ code: 'BAD_REQUEST' });
  });
});
