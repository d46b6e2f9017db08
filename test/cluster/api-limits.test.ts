// The HTTP API's connection and request limits, on a real single-node cluster run in this
// process (so each case can use small limits and short timeouts, and extra API servers with
// their own limits on the same daemon). Assertions are about what is closed or refused, never
// about how fast: the only time bounds are generous multiples of the configured timeouts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Socket } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Omnid } from '../../node/daemon.js';
import { ApiServer } from '../../node/api/server.js';
import { registerAppRoutes } from '../../node/api/apps-routes.js';
import { ApiClient } from '../../node/api/client.js';
import { waitFor } from '../../node/local-cluster.js';
import type { ApiLimits } from '../../node/api/limits.js';
import type { MockDriver } from '../../node/apps/drivers/mock.js';
import { rawHttp, whenClosed } from '../support/raw-http.js';

/** The daemon's own API: short timeouts (DaemonOptions.apiLimits). */
const DAEMON_LIMITS: Partial<ApiLimits> = { headersTimeoutMs: 1000, requestTimeoutMs: 2000, keepAliveTimeoutMs: 1000 };

let dir: string;
let daemon: Omnid;
let token: string;
let taskId: string;
const extra: ApiServer[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'omni-api-limits-'));
  const r = await Omnid.init({ dataDir: join(dir, 'n1'), listen: ['/ip4/127.0.0.1/tcp/0'], api: '127.0.0.1:0', name: 'n1', voterTarget: 1, logLevel: 'error', apiLimits: DAEMON_LIMITS });
  daemon = r.daemon;
  token = r.client.token;
  const client = new ApiClient(daemon.apiUrl, token);
  try {
    await client.post('/v1/apps', { name: 'web', image: 'limits/web:1', driver: 'mock', replicas: 1 });
    taskId = await waitFor('the mock task running', async () => {
      const a = await client.get<{ tasks: { id: string; state: string }[] }>('/v1/apps/web');
      return a.tasks.find((t) => t.state === 'running')?.id;
    });
  } finally {
    client.close();
  }
});

afterAll(async () => {
  for (const s of extra) await s.close();
  await daemon?.shutdown('test done');
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Another API server on the same daemon, with its own limits. */
async function apiWith(limits: Partial<ApiLimits>): Promise<number> {
  const api = new ApiServer(daemon.apiDeps, daemon.log, limits);
  registerAppRoutes(api, daemon.apiDeps);
  await api.listen('127.0.0.1:0');
  extra.push(api);
  return Number(new URL(api.url).port);
}

const portOf = (url: string) => Number(new URL(url).port);
const auth = () => `Authorization: Bearer ${token}\r\n`;
const get = (port: number, path: string) => rawHttp(port, `GET ${path} HTTP/1.1\r\nHost: omni\r\n${auth()}Connection: close\r\n\r\n`);

function openSocket(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => resolve(s));
    s.on('error', () => undefined);
    s.once('error', reject);
  });
}

/** A follow=true log stream: its status line and everything received so far. */
function openStream(port: number): Promise<{ socket: Socket; status: number; text: () => string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(`GET /v1/apps/web/logs?follow=true&tail=0 HTTP/1.1\r\nHost: omni\r\n${auth()}\r\n`));
    let buf = '';
    socket.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(buf);
      if (m && buf.includes('\r\n\r\n')) resolve({ socket, status: Number(m[1]), text: () => buf });
    });
    socket.on('error', reject);
    socket.on('close', () => reject(new Error(`stream closed before its answer: ${JSON.stringify(buf.slice(0, 200))}`)));
    setTimeout(() => reject(new Error(`no stream answer within 20 s: ${JSON.stringify(buf.slice(0, 200))}`)), 20_000).unref();
  });
}

describe('API limits', () => {
  it('closes connections over the cap; the node keeps answering', async () => {
    const cap = 8;
    const port = await apiWith({ maxConnections: cap, headersTimeoutMs: 5000, requestTimeoutMs: 5000 });
    const sockets = await Promise.all(Array.from({ length: cap + 8 }, () => openSocket(port)));
    let closed = 0;
    for (const s of sockets) void whenClosed(s).then(() => closed++);
    // The excess are closed on accept, while the first `cap` (idle) are still held.
    await waitFor('the excess connections closed', () => closed >= 8, 4000, 20);
    expect(closed).toBe(8);
    expect(sockets.filter((s) => !s.destroyed)).toHaveLength(cap);
    // The trusted control socket is a separate server: it still answers.
    const control = new ApiClient(`unix:${join(dir, 'n1', 'api.sock')}`, undefined);
    expect((await control.get<{ node: string }>('/v1/status')).node).toBe('n1');
    control.close();
    // The idle connections are dropped at the header timeout, then normal requests get in.
    await waitFor('a normal request answered', async () => (await get(port, '/v1/status')).status === 200, 30_000, 200);
    for (const s of sockets) s.destroy();
  });

  it('closes a slowloris connection at the header timeout, and an idle kept-alive one', async () => {
    const port = portOf(daemon.apiUrl);
    const slow = await openSocket(port);
    let answer = '';
    slow.on('data', (d: Buffer) => (answer += d.toString('latin1')));
    const head = `GET /healthz HTTP/1.1\r\nHost: omni\r\nX-Slow: ${'a'.repeat(1000)}`;
    let i = 0;
    const drip = setInterval(() => !slow.destroyed && slow.write(head[i++ % head.length]), 100);
    const bound = 10 * DAEMON_LIMITS.headersTimeoutMs!;
    try {
      await waitFor('the slowloris connection closed', () => slow.destroyed || slow.readableEnded, bound, 50);
    } finally {
      clearInterval(drip);
    }
    expect(answer).toMatch(/^HTTP\/1\.1 408/);

    // A kept-alive connection that goes quiet after its request is closed too.
    const idle = await openSocket(port);
    let got = '';
    idle.on('data', (d: Buffer) => (got += d.toString('latin1')));
    idle.write(`GET /healthz HTTP/1.1\r\nHost: omni\r\n\r\n`);
    await waitFor('the idle kept-alive connection closed', () => idle.destroyed || idle.readableEnded, bound, 50);
    expect(got).toMatch(/^HTTP\/1\.1 200/);
  });

  it('answers 503 BUSY with Retry-After beyond the in-flight limit; liveness still answers', async () => {
    const port = await apiWith({ maxInFlight: 2 });
    // Two PUTs whose bodies have not all arrived yet: in flight until they do.
    const body = JSON.stringify({ value: 'v' });
    const held = await Promise.all([1, 2].map(async (n) => {
      const s = await openSocket(port);
      let text = '';
      s.on('data', (d: Buffer) => (text += d.toString('utf8')));
      s.write(`PUT /v1/kv/busy${n} HTTP/1.1\r\nHost: omni\r\n${auth()}Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body.slice(0, 3)}`);
      return { s, text: () => text };
    }));
    const busy = await waitFor('a BUSY answer', async () => {
      const r = await get(port, '/v1/status');
      return r.status === 503 ? r : undefined;
    }, 10_000, 50);
    expect(JSON.parse(busy.body).error.code).toBe('BUSY');
    expect(busy.headers['retry-after']).toBe('1');
    expect((await rawHttp(port, 'GET /healthz HTTP/1.1\r\nHost: omni\r\nConnection: close\r\n\r\n')).status).toBe(200);
    // The held requests complete normally, and their slots are free again.
    for (const h of held) h.s.write(body.slice(3));
    await Promise.all(held.map((h) => whenClosed(h.s)));
    for (const h of held) expect(h.text()).toMatch(/^HTTP\/1\.1 200/);
    expect((await get(port, '/v1/status')).status).toBe(200);
  });

  it('keeps log streams open past the request timeout, and limits them separately', async () => {
    const port = await apiWith({ maxInFlight: 1, maxStreams: 2, headersTimeoutMs: 500, requestTimeoutMs: 500, keepAliveTimeoutMs: 500 });
    const streams = [await openStream(port), await openStream(port)];
    for (const s of streams) expect(s.status).toBe(200);
    const third = await get(port, '/v1/apps/web/logs?follow=true');
    expect(third.status).toBe(503);
    expect(JSON.parse(third.body).error.code).toBe('BUSY');
    // Streams do not take the (single) in-flight slot.
    expect((await get(port, '/v1/status')).status).toBe(200);
    // Well past every timeout of this server, both streams are still open and still deliver.
    await new Promise((r) => setTimeout(r, 4 * 500));
    const driver = daemon.agent!.driverFor(taskId) as MockDriver;
    driver.emitLog(taskId, 'still-streaming');
    await waitFor('the line on both streams', () => streams.every((s) => s.text().includes('still-streaming')), 10_000, 50);
    for (const s of streams) expect(s.socket.destroyed).toBe(false);
    for (const s of streams) s.socket.destroy();
    await waitFor('a stream slot free again', async () => {
      const s = await openStream(port);
      s.socket.destroy();
      return s.status === 200;
    }, 10_000, 50);
  });
});
