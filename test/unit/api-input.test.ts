// The API's JSON bodies (node/api/input.ts readJson): ASCII bodies take the Latin-1 fast path,
// anything else is decoded as UTF-8; both parse to the same values, split across chunks anywhere.
import { describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import { readJson } from '../../node/api/input.js';

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
