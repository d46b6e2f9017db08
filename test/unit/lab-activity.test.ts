// A lab's kernel activity as its node reads it from the notebook server (node/apps/lab-activity.ts):
// the token goes in the Authorization header, busy kernels are counted, and a wrong answer (not
// 200, not a list, too large, too slow) is an error, never a count.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { countKernels, labKernels } from '../../node/apps/lab-activity.js';

let server: Server;
let port: number;
let answer: (url: string) => { status: number; body: string; delayMs?: number } = () => ({ status: 200, body: '[]' });
const seen: { url: string; auth: string }[] = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    seen.push({ url: req.url ?? '', auth: req.headers.authorization ?? '' });
    const a = answer(req.url ?? '');
    setTimeout(() => {
      res.writeHead(a.status, { 'content-type': 'application/json' });
      res.end(a.body);
    }, a.delayMs ?? 0);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

describe('lab kernel activity', () => {
  it('counts kernels and the busy ones, with the token in the header and not in the URL', async () => {
    answer = () => ({ status: 200, body: JSON.stringify([{ id: 'a', execution_state: 'busy' }, { id: 'b', execution_state: 'idle' }, { id: 'c', execution_state: 'starting' }]) });
    expect(await labKernels(port, 'tok-123456789012345', 2000)).toEqual({ total: 3, busy: 1 });
    expect(seen.at(-1)).toEqual({ url: '/api/kernels', auth: 'token tok-123456789012345' });
  });

  it('rejects a refusal, a body that is not a list, an oversized answer and a slow one', async () => {
    answer = () => ({ status: 403, body: '{}' });
    await expect(labKernels(port, 't', 2000)).rejects.toThrow(/HTTP 403/);
    answer = () => ({ status: 200, body: '{"kernels": []}' });
    await expect(labKernels(port, 't', 2000)).rejects.toThrow(/expected a list/);
    answer = () => ({ status: 200, body: JSON.stringify(Array.from({ length: 20_000 }, (_, i) => ({ id: `k${i}`, execution_state: 'idle' }))) });
    await expect(labKernels(port, 't', 2000)).rejects.toThrow(/more than/);
    answer = () => ({ status: 200, body: '[]', delayMs: 500 });
    await expect(labKernels(port, 't', 100)).rejects.toThrow(/within 100 ms/);
    expect(() => countKernels([1])).toThrow(/kernel objects/);
  });
});
