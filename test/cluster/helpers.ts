// Shared by the multi-process cluster tests: start clusters of real omnid processes on loopback.
import { spawn, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { LocalCluster, tcpPortFree, waitFor } from '../../node/local-cluster.js';
import type { StatusView } from '../../cli/omni/status.js';

/** Faster failure detection than the defaults so tests finish quickly; Raft timing unchanged. */
export const TEST_FLAGS = ['--heartbeat-ms', '250', '--down-after-ms', '2000', '--replace-after-ms', '3000'];

export async function status(c: LocalCluster, name: string, stale = false): Promise<StatusView> {
  const client = c.client(name);
  try {
    return await client.get<StatusView>(`/v1/status${stale ? '?stale=true' : ''}`);
  } finally {
    client.close();
  }
}

/** init + joins, then waits until the voter target is reached and the root has stepped down. */
export async function formCluster(names: string[], opts: { initFlags?: string[]; voters?: number; flags?: string[]; nodeFlags?: (name: string) => string[] } = {}): Promise<LocalCluster> {
  const c = await LocalCluster.create({ flags: [...TEST_FLAGS, ...(opts.flags ?? [])], echo: process.env.OMNI_TEST_ECHO === '1' });
  try {
    await c.init(names[0], [...(opts.initFlags ?? []), ...(opts.nodeFlags?.(names[0]) ?? [])]);
    for (const n of names.slice(1)) await c.join(n, opts.nodeFlags?.(n) ?? []);
    await waitForFormed(c, names, opts.voters ?? 3);
  } catch (err) {
    await c.destroy();
    throw err;
  }
  return c;
}

export async function waitForFormed(c: LocalCluster, names: string[], target: number): Promise<void> {
  await waitFor(
    `${target} voters and root step-down`,
    async () => {
      // Every node's replica, not only the last one's: a test may read any of them at once.
      for (const n of [...names].reverse()) {
        const s = await status(c, n);
        if (!(s.voters.length === target && s.rootRetired && s.leader !== null && s.leader !== names[0] && s.health === 'healthy')) return undefined;
      }
      return true;
    },
    60_000,
  );
}

export async function put(c: LocalCluster, name: string, key: string, value: string): Promise<{ version: number }> {
  const client = c.client(name);
  try {
    return await client.put<{ version: number }>(`/v1/kv/${encodeURIComponent(key)}`, { value });
  } finally {
    client.close();
  }
}

export async function get(c: LocalCluster, name: string, key: string, stale = false): Promise<{ value: string; version: number }> {
  const client = c.client(name);
  try {
    return await client.get(`/v1/kv/${encodeURIComponent(key)}${stale ? '?stale=true' : ''}`);
  } finally {
    client.close();
  }
}

export { waitFor };

/**
 * A base for the ports a test publishes (base … base + span - 1), free on 127.0.0.1 when picked.
 * Below the kernel's ephemeral range (32768-60999: the local ports of outgoing connections, which
 * a listener cannot bind while they last; a node kept failing to publish on one) and the
 * scheduler's dynamic host ports (20000-32000).
 */
export async function freePublishBase(span: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 10_000 + Math.floor(Math.random() * (9_900 - span));
    let free = true;
    for (let port = base; port < base + span && free; port++) free = await tcpPortFree('127.0.0.1', port);
    if (free) return base;
  }
  throw new Error(`no ${span} free ports in a row below 20000 on 127.0.0.1`);
}


/** GET of a published port until it answers 200; the timeout's message carries the last failure and the node's mesh warnings. */
export async function waitPublished(c: LocalCluster, node: string, port: number, path = '/', timeoutMs = 15_000): Promise<{ status: number; body: string }> {
  let last = '';
  try {
    return await waitFor(`published port ${port} on ${node}`, async () => {
      const r = await httpGet(port, path).catch((err: Error) => {
        last = err.message;
        return undefined;
      });
      if (r && r.status !== 200) last = `HTTP ${r.status}: ${r.body.slice(0, 200)}`;
      return r?.status === 200 ? r : undefined;
    }, timeoutMs, 200);
  } catch (err) {
    const warnings = c.recentOutput(node, 200).filter((l) => l.includes('mesh')).slice(-10);
    throw new Error(`${(err as Error).message}; last failure: ${last || 'none'}; ${node}'s mesh lines:\n${warnings.join('\n') || '(none)'}`);
  }
}

/** GET http://127.0.0.1:PORT/PATH (a published app port) with a short timeout. */
export function httpGet(port: number, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, timeout: 2000 }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** One API call through a node's client (opened and closed for the call). */
export function apiCall<T>(c: LocalCluster, node: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  const client = c.client(node);
  return client.raw(method, path, body).finally(() => client.close()) as Promise<{ status: number; body: T }>;
}

/** Node source of a UDP echo service: answers each datagram with `u <task id>: <datagram>`. */
export const udpEchoSource = (port: string, host: string) =>
  `const s = require('dgram').createSocket('udp4'); s.on('message', (m, r) => s.send('u ' + process.env.OMNI_TASK_ID + ': ' + m, r.port, r.address)); s.bind(${port}, ${JSON.stringify(host)});`;

/** Node source of an HTTP service that, for GET /X, sends `ping X` over UDP to u:5353 (by name) and answers with the reply. */
export const udpAskerSource = (port: string, host: string) => `
const http = require('http');
const dgram = require('dgram');
http.createServer((q, res) => {
  const s = dgram.createSocket('udp4');
  const t = setTimeout(() => { s.close(); res.statusCode = 504; res.end('no answer'); }, 2000);
  s.on('message', (m) => { clearTimeout(t); s.close(); res.end(String(m)); });
  s.send('ping ' + q.url.slice(1), 5353, 'u', (e) => { if (e) { clearTimeout(t); s.close(); res.statusCode = 502; res.end(String(e.message)); } });
}).listen(${port}, ${JSON.stringify(host)});
`;

/** One datagram to 127.0.0.1:port; the reply, or undefined after a second. */
export async function udpAsk(port: number, text: string): Promise<string | undefined> {
  const { createSocket } = await import('node:dgram');
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    const t = setTimeout(() => (s.close(), resolve(undefined)), 1000);
    s.on('message', (m) => (clearTimeout(t), s.close(), resolve(String(m))));
    s.send(text, port, '127.0.0.1');
  });
}

/**
 * Every running node's count of the apps' records it keeps as JSON text rather than protobuf
 * (`omni_state_records_as_text` in /metrics). 0 for all Omni wrote: a record that falls back to
 * text has a field proto/omni.proto lacks (README: Records in protobuf).
 */
export async function recordsKeptAsText(c: LocalCluster): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [name, n] of c.nodes) {
    if (!n.running) continue;
    const { status, body } = await apiCall<string>(c, name, 'GET', '/metrics');
    if (status !== 200) throw new Error(`GET /metrics on ${name}: ${status}`);
    const line = String(body).split('\n').find((l) => l.startsWith('omni_state_records_as_text '));
    out[name] = line === undefined ? NaN : Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return out;
}

/**
 * Runs bin/omnid until a line of its output matches `ready`; that line and a stop function
 * (SIGTERM, then waits for the exit). `started` collects the process (an afterAll kills what is
 * left). Rejects with the output when omnid exits first, or after 60 s.
 */
export async function omnidUntil(args: string[], ready: RegExp, opts: { env?: NodeJS.ProcessEnv; started?: Set<ChildProcess> } = {}): Promise<{ line: string; stop: () => Promise<void> }> {
  const p = spawn('bin/omnid', args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
  opts.started?.add(p);
  let out = '';
  const exited = new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
  let timer: NodeJS.Timeout | undefined;
  const line = await new Promise<string>((resolve, reject) => {
    const onData = (b: Buffer) => {
      out += b.toString();
      const m = out.split('\n').find((l) => ready.test(l));
      if (m) resolve(m);
    };
    p.stdout!.on('data', onData);
    p.stderr!.on('data', onData);
    void exited.then((code) => reject(new Error(`omnid exited ${code} before ready:\n${out}`)));
    timer = setTimeout(() => reject(new Error(`omnid not ready in 60 s:\n${out}`)), 60_000);
  }).finally(() => clearTimeout(timer));
  return {
    line,
    stop: async () => {
      p.kill('SIGTERM');
      await exited;
      opts.started?.delete(p);
    },
  };
}
