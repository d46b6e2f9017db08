// A lab's kernel activity as its node reads it from the notebook server (node/apps/lab-activity.ts):
// the token goes in the Authorization header, busy kernels are counted, and a wrong answer (not
// 200, not a list, too large, too slow) is an error, never a count.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { createHash } from 'node:crypto';
import { listKernels, parseKernels, LabKernelWatch, statusOf } from '../../node/apps/lab-activity.js';

let server: Server;
let port: number;
let answer: (url: string) => { status: number; body: string; delayMs?: number } = () => ({ status: 200, body: '[]' });
const seen: { url: string; auth: string }[] = [];
/** The kernel channels websockets the watch opened: kernel id → socket (a minimal server side of RFC 6455). */
const channels = new Map<string, Socket>();
const upgrades: { url: string; auth: string }[] = [];

/** One unmasked server-to-client text frame. */
function textFrame(text: string): Buffer {
  const body = Buffer.from(text);
  const head = body.length < 126 ? Buffer.from([0x81, body.length]) : Buffer.from([0x81, 126, body.length >> 8, body.length & 0xff]);
  return Buffer.concat([head, body]);
}
const status = (state: string, parent = 'exec-1', parentType = 'execute_request', channel = 'iopub') => textFrame(JSON.stringify({ channel, msg_type: 'status', header: { msg_type: 'status' }, parent_header: { msg_id: parent, msg_type: parentType }, content: { execution_state: state } }));
const until = async (what: () => boolean) => {
  for (let i = 0; i < 200 && !what(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(what()).toBe(true);
};

beforeAll(async () => {
  server = createServer((req, res) => {
    seen.push({ url: req.url ?? '', auth: req.headers.authorization ?? '' });
    const a = answer(req.url ?? '');
    setTimeout(() => {
      res.writeHead(a.status, { 'content-type': 'application/json' });
      res.end(a.body);
    }, a.delayMs ?? 0);
  });
  server.on('upgrade', (req, socket: Socket) => {
    upgrades.push({ url: req.url ?? '', auth: req.headers.authorization ?? '' });
    const id = /\/api\/kernels\/([^/]+)\/channels/.exec(req.url ?? '')?.[1] ?? '';
    const accept = createHash('sha1').update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    socket.on('error', () => undefined);
    // the client's close frame (opcode 8) is answered with ours, then the connection ends
    socket.on('data', (b: Buffer) => (b[0] & 0x0f) === 8 && socket.end(Buffer.from([0x88, 0])));
    socket.on('close', () => channels.get(id) === socket && channels.delete(id));
    channels.set(id, socket);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  for (const s of channels.values()) s.destroy();
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

describe('lab kernel activity', () => {
  it('counts kernels and the busy ones, with the token in the header and not in the URL', async () => {
    answer = () => ({ status: 200, body: JSON.stringify([{ id: 'a', execution_state: 'busy' }, { id: 'b', execution_state: 'idle' }, { id: 'c', execution_state: 'starting' }]) });
    const watch = new LabKernelWatch(port, 'tok-123456789012345');
    try {
      expect(await watch.refresh(2000)).toEqual({ total: 3, busy: 1 });
    } finally {
      watch.close();
    }
    expect(seen.at(-1)).toEqual({ url: '/api/kernels', auth: 'token tok-123456789012345' });
  });

  it('rejects a refusal, a body that is not a list, an oversized answer and a slow one', async () => {
    answer = () => ({ status: 403, body: '{}' });
    await expect(listKernels(port, 't', 2000)).rejects.toThrow(/HTTP 403/);
    answer = () => ({ status: 200, body: '{"kernels": []}' });
    await expect(listKernels(port, 't', 2000)).rejects.toThrow(/expected a list/);
    answer = () => ({ status: 200, body: JSON.stringify(Array.from({ length: 20_000 }, (_, i) => ({ id: `k${i}`, execution_state: 'idle' }))) });
    await expect(listKernels(port, 't', 2000)).rejects.toThrow(/more than/);
    answer = () => ({ status: 200, body: '[]', delayMs: 500 });
    await expect(listKernels(port, 't', 100)).rejects.toThrow(/within 100 ms/);
    expect(() => parseKernels([1])).toThrow(/kernel objects/);
  });

  it('follows each kernel\'s IOPub status: busy while it computes even when the REST state is stuck at "starting"', async () => {
    let clock = 1_000;
    const watch = new LabKernelWatch(port, 'tok-abcdefabcdefab', () => clock);
    // Jupyter's own activity monitor heard nothing: REST says "starting" for ever
    answer = () => ({ status: 200, body: JSON.stringify([{ id: 'k-1', execution_state: 'starting' }, { id: 'k-2', execution_state: 'busy' }]) });
    expect(await watch.refresh(2000)).toEqual({ total: 2, busy: 1 }); // k-2 busy by REST; k-1 not heard yet
    await until(() => channels.has('k-1') && channels.has('k-2'));
    expect(upgrades.map((u) => u.auth)).toEqual(['token tok-abcdefabcdefab', 'token tok-abcdefabcdefab']);
    expect(upgrades.some((u) => u.url.includes('tok-'))).toBe(false); // the token never goes in the URL
    channels.get('k-1')!.write(status('busy'));
    await new Promise((r) => setTimeout(r, 50));
    expect(await watch.refresh(2000)).toEqual({ total: 2, busy: 2 });
    // a status on another channel, about a control request (kernel_info), and a large message (cell output) change nothing
    channels.get('k-1')!.write(status('idle', 'exec-1', 'execute_request', 'shell'));
    channels.get('k-1')!.write(status('busy', 'info-1', 'kernel_info_request'));
    channels.get('k-1')!.write(status('idle', 'info-1', 'kernel_info_request'));
    channels.get('k-1')!.write(textFrame(JSON.stringify({ channel: 'iopub', msg_type: 'stream', content: { text: 'x'.repeat(60_000) } })));
    await new Promise((r) => setTimeout(r, 50));
    expect(await watch.refresh(2000)).toEqual({ total: 2, busy: 2 });
    // two cells queued: busy until both said idle
    channels.get('k-1')!.write(status('busy', 'exec-2'));
    channels.get('k-1')!.write(status('idle'));
    await new Promise((r) => setTimeout(r, 50));
    expect(await watch.refresh(2000)).toEqual({ total: 2, busy: 2 });
    channels.get('k-1')!.write(status('idle', 'exec-2'));
    await new Promise((r) => setTimeout(r, 50));
    expect(await watch.refresh(2000)).toEqual({ total: 2, busy: 1 });

    // a kernel that is gone is no longer followed: its socket is closed
    answer = () => ({ status: 200, body: JSON.stringify([{ id: 'k-2', execution_state: 'idle' }]) });
    expect(await watch.refresh(2000)).toEqual({ total: 1, busy: 0 });
    expect(watch.watching()).toEqual(['k-2']);
    await until(() => !channels.has('k-1'));

    // a watch that never heard anything is reopened after a while (a deaf subscription)
    expect(upgrades).toHaveLength(2);
    clock += 16_000;
    await watch.refresh(2000);
    await until(() => upgrades.length === 3);
    expect(upgrades[2].url).toMatch(/\/api\/kernels\/k-2\/channels/);
    // a kernel id that is not an id is not put in a URL
    answer = () => ({ status: 200, body: JSON.stringify([{ id: '../../x', execution_state: 'busy' }]) });
    expect(await watch.refresh(2000)).toEqual({ total: 1, busy: 1 });
    expect(watch.watching()).toEqual([]);
    watch.close();
  });

  it('reads only IOPub status messages of bounded size, with the request they are about', () => {
    const msg = (o: object) => JSON.stringify({ channel: 'iopub', msg_type: 'status', parent_header: { msg_id: 'p1', msg_type: 'execute_request' }, ...o });
    expect(statusOf(msg({ content: { execution_state: 'busy' } }))).toEqual({ state: 'busy', parentId: 'p1', parentType: 'execute_request' });
    expect(statusOf(JSON.stringify({ channel: 'iopub', header: { msg_type: 'status' }, content: { execution_state: 'starting' } }))).toEqual({ state: 'starting', parentId: '', parentType: '' });
    expect(statusOf(msg({ channel: 'shell', content: { execution_state: 'busy' } }))).toBeUndefined();
    expect(statusOf('{"status": not json')).toBeUndefined();
    expect(statusOf(new ArrayBuffer(8))).toBeUndefined();
    expect(statusOf(msg({ content: { execution_state: 'busy', pad: 'x'.repeat(70_000) } }))).toBeUndefined();
  });
});
