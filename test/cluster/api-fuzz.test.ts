// The HTTP API against malformed input, on a real single-node cluster (an omnid process):
// known bad requests each get a 4xx with a JSON error code, and fast-check throws arbitrary
// methods, targets, query strings, headers and bodies at every route. No answer may be a 5xx
// other than the documented 503 (no leader / busy) and 504 (timeout), no request may log an
// internal error, and the node keeps serving.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { LocalCluster } from '../../node/local-cluster.js';
import { MAX_BODY_BYTES } from '../../node/api/input.js';
import { TEST_FLAGS, waitFor } from './helpers.js';
import { rawHttp, type RawResponse } from '../support/raw-http.js';

let c: LocalCluster;
let port = 0;
let stderr = '';
const MOCK_APP = { name: 'web', image: 'fuzz/web:1', driver: 'mock', replicas: 1 };

beforeAll(async () => {
  c = await LocalCluster.create({ flags: TEST_FLAGS, echo: process.env.OMNI_TEST_ECHO === '1' });
  const n1 = await c.init('n1', ['--voters', '1']);
  // Every line the node writes, not only the last few the LocalCluster keeps.
  n1.proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  port = Number(new URL(n1.apiUrl).port);
  const client = c.client('n1');
  try {
    await waitFor('a leader', async () => (await client.get<{ leader: string | null }>('/v1/status')).leader !== null);
    await client.post('/v1/apps', MOCK_APP);
    await client.put('/v1/kv/fuzz/a', { value: '1' });
  } finally {
    client.close();
  }
});

afterAll(async () => {
  await c?.destroy();
});

interface Req {
  method: string;
  target: string;
  headers?: [string, string][];
  body?: string | Buffer;
  chunked?: boolean;
  auth?: string | null;
}

function encode(r: Req): Buffer {
  const auth = r.auth === undefined ? `Bearer ${c.adminToken}` : r.auth;
  const lines = [`${r.method} ${r.target} HTTP/1.1`, 'Host: omni', 'Connection: close'];
  if (auth !== null) lines.push(`Authorization: ${auth}`);
  for (const [k, v] of r.headers ?? []) lines.push(`${k}: ${v}`);
  const body = r.body === undefined ? Buffer.alloc(0) : Buffer.from(r.body);
  if (r.chunked) {
    lines.push('Transfer-Encoding: chunked');
    const chunks = body.length ? [Buffer.from(`${body.length.toString(16)}\r\n`), body, Buffer.from('\r\n')] : [];
    return Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n'), ...chunks, Buffer.from('0\r\n\r\n')]);
  }
  if (r.body !== undefined) lines.push(`Content-Length: ${body.length}`);
  return Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n'), body]);
}

const send = (r: Req): Promise<RawResponse> => rawHttp(port, encode(r));

function errorCode(res: RawResponse): string | undefined {
  try {
    return (JSON.parse(res.body) as { error?: { code?: string } }).error?.code;
  } catch {
    return undefined;
  }
}

/** The answer is a 4xx from the API itself, with a JSON error code. */
function expect4xx(res: RawResponse, status: number, what: string): void {
  expect(res.status, `${what}: ${res.body} ${res.error ?? ""}`).toBe(status);
  expect(res.headers['content-type'], what).toBe('application/json');
  expect(errorCode(res), what).toMatch(/^[A-Z_]+$/);
}

/** No 5xx but 503/504, a JSON body with an error code for API errors, and some answer at all. */
function expectWellFormed(res: RawResponse, method: string, what: string): void {
  expect(res.status, `${what}: no answer (${res.error ?? 'closed'})`).toBeGreaterThan(0);
  if (res.status >= 500) expect([503, 504], `${what}: ${res.status} ${res.body}`).toContain(res.status);
  if (res.status >= 400 && res.headers['content-type'] === 'application/json' && method !== 'HEAD') expect(errorCode(res), `${what}: ${res.body}`).toMatch(/^[A-Z_]+$/);
}

async function expectServing(): Promise<void> {
  const hz = await send({ method: 'GET', target: '/healthz', auth: null });
  expect(hz.status).toBe(200);
  const st = await send({ method: 'GET', target: '/v1/status' });
  expect(st.status).toBe(200);
  // An internal error is logged with its stack as "api: METHOD TARGET: …".
  expect(stderr).not.toMatch(/ERROR .*\bapi: /);
}

describe('API input validation', () => {
  it('answers known malformed requests with a 4xx and an error code', async () => {
    const json = (v: unknown) => JSON.stringify(v);
    const cases: [string, Req, number][] = [
      ['key over 512 bytes', { method: 'PUT', target: `/v1/kv/${'k'.repeat(513)}`, body: json({ value: 'v' }) }, 400],
      ['key over 512 bytes (get)', { method: 'GET', target: `/v1/kv/${'k'.repeat(513)}` }, 400],
      ['key with NUL', { method: 'PUT', target: '/v1/kv/a%00b', body: json({ value: 'v' }) }, 400],
      ['key with NUL (delete)', { method: 'DELETE', target: '/v1/kv/a%00b' }, 400],
      ['key with a lone surrogate', { method: 'PUT', target: '/v1/kv/a%ED%A0%80', body: json({ value: 'v' }) }, 400],
      ['malformed percent-encoding', { method: 'GET', target: '/v1/kv/%E0%A4%A' }, 400],
      ['malformed percent-encoding (app)', { method: 'GET', target: '/v1/apps/%' }, 400],
      ['expectedVersion 1e300', { method: 'PUT', target: '/v1/kv/k', body: '{"value":"v","expectedVersion":1e300}' }, 400],
      ['expectedVersion unsafe integer', { method: 'PUT', target: '/v1/kv/k', body: json({ value: 'v', expectedVersion: 2 ** 60 }) }, 400],
      ['expectedVersion 1e300 (delete)', { method: 'DELETE', target: '/v1/kv/k?expectedVersion=1e300' }, 400],
      ['expectedVersion empty (delete)', { method: 'DELETE', target: '/v1/kv/k?expectedVersion=' }, 400],
      ['expectedVersion repeated (delete)', { method: 'DELETE', target: '/v1/kv/k?expectedVersion=1&expectedVersion=2' }, 400],
      ['value with a lone surrogate', { method: 'PUT', target: '/v1/kv/k', body: '{"value":"\\ud800"}' }, 400],
      ['unknown body field', { method: 'PUT', target: '/v1/kv/k', body: json({ value: 'v', expectedversion: 1 }) }, 400],
      ['body is an array', { method: 'PUT', target: '/v1/kv/k', body: '[1,2]' }, 400],
      ['body is null', { method: 'POST', target: '/v1/tokens', body: 'null' }, 400],
      ['token name with control characters', { method: 'POST', target: '/v1/tokens', body: json({ role: 'admin', name: 'a\u0000b' }) }, 400],
      ['token name not a string', { method: 'POST', target: '/v1/tokens', body: json({ role: 'admin', name: 5 }) }, 400],
      ['scale with an unknown field', { method: 'POST', target: '/v1/apps/web/scale', body: json({ replicas: 1, replica: 2 }) }, 400],
      ['scale body is a string', { method: 'POST', target: '/v1/apps/web/scale', body: '"x"' }, 400],
      ['spec with an unknown field', { method: 'POST', target: '/v1/apps', body: json({ ...MOCK_APP, replicaz: 2 }) }, 400],
      ['spec is an array', { method: 'POST', target: '/v1/apps', body: json([MOCK_APP]) }, 400],
      ['list limit negative', { method: 'GET', target: '/v1/kv?limit=-1' }, 400],
      ['list limit garbage', { method: 'GET', target: '/v1/kv?limit=abc' }, 400],
      ['list limit zero', { method: 'GET', target: '/v1/kv?limit=0' }, 400],
      ['stale garbage', { method: 'GET', target: '/v1/kv/fuzz/a?stale=yes' }, 400],
      ['stale repeated', { method: 'GET', target: '/v1/status?x=1&stale=true&stale=false' }, 200],
      ['stale repeated on a read', { method: 'GET', target: '/v1/kv/fuzz/a?stale=true&stale=false' }, 400],
      ['logs since garbage', { method: 'GET', target: '/v1/apps/web/logs?since=yesterday' }, 400],
      ['logs since negative', { method: 'GET', target: '/v1/apps/web/logs?since=-5' }, 400],
      ['logs tail garbage', { method: 'GET', target: '/v1/apps/web/logs?tail=lots' }, 400],
      ['logs tail fraction', { method: 'GET', target: '/v1/apps/web/logs?tail=1.5' }, 400],
      ['logs follow garbage', { method: 'GET', target: '/v1/apps/web/logs?follow=1' }, 400],
      ['task logs tail garbage', { method: 'GET', target: '/v1/tasks/nope/logs?tail=x' }, 400],
      ['absolute-form target with a bad host', { method: 'GET', target: 'http://[/v1/status' }, 400],
      ['asterisk target', { method: 'OPTIONS', target: '*' }, 400],
      ['absolute-form target', { method: 'GET', target: 'http://omni/v1/status' }, 200],
    ];
    const failures: string[] = [];
    for (const [what, req, status] of cases) {
      const res = await send(req);
      if (res.status !== status || errorCode(res) === undefined && status >= 400 || res.headers['content-type'] !== 'application/json') {
        failures.push(`${what}: expected ${status}, got ${res.status} ${res.body.trim().slice(0, 160)}`);
      }
    }
    expect(failures).toEqual([]);
    await expectServing();
  });

  it('accepts the bearer scheme in any case', async () => {
    for (const scheme of ['Bearer', 'bearer', 'BEARER', 'bEaReR']) {
      const res = await send({ method: 'GET', target: '/v1/status', auth: `${scheme} ${c.adminToken}` });
      expect(res.status, scheme).toBe(200);
    }
    expect4xx(await send({ method: 'GET', target: '/v1/status', auth: `Basic ${c.adminToken}` }), 401, 'Basic');
    expect4xx(await send({ method: 'GET', target: '/v1/status', auth: `Bearer${c.adminToken}` }), 401, 'no space');
  });

  it('answers an oversized chunked body with 413 and a JSON error, then closes', async () => {
    const chunk = Buffer.alloc(64 * 1024, 'a');
    const res = await rawHttp(port, (s) => {
      s.write('PUT /v1/kv/big HTTP/1.1\r\nHost: omni\r\n' + `Authorization: Bearer ${c.adminToken}\r\nTransfer-Encoding: chunked\r\n\r\n`);
      let sent = 0;
      const pump = () => {
        // Up to 4× the limit: the server must answer long before that.
        while (!s.destroyed && sent < 4 * MAX_BODY_BYTES) {
          sent += chunk.length;
          if (!s.write(`${chunk.length.toString(16)}\r\n${chunk}\r\n`)) return void s.once('drain', pump);
        }
      };
      pump();
    });
    expect4xx(res, 413, 'chunked body over the limit');
    expect(errorCode(res)).toBe('TOO_LARGE');
    expect(res.headers.connection).toBe('close');
    // Declared too large up front: refused before reading it.
    const declared = await rawHttp(port, `PUT /v1/kv/big HTTP/1.1\r\nHost: omni\r\nAuthorization: Bearer ${c.adminToken}\r\nContent-Length: ${MAX_BODY_BYTES + 1}\r\n\r\n{"value":"`);
    expect4xx(declared, 413, 'content-length over the limit');
    expect(declared.headers.connection).toBe('close');
    await expectServing();
  });

  it('never answers a fuzzed request with an unexpected 5xx, and keeps serving', async () => {
    const seg = fc.oneof(
      fc.constantFrom('web', 'fuzz%2Fa', 'k', 'nope', 'é', 'a b', '%00', '%', '%E0%A4%A', '%ED%A0%80', '..', '%2F', 'x'.repeat(600), '%F0%9F%98%80'),
      fc.string({ maxLength: 20 }).map(encodeURIComponent),
      fc.stringMatching(/^[A-Za-z0-9%._~-]{1,30}$/),
    );
    const path = fc.oneof(
      fc.constantFrom('/healthz', '/health', '/v1/status', '/v1/nodes', '/v1/kv', '/v1/tokens', '/v1/apps', '/', '//v1/status', '/v1/', '/v1/kv/'),
      seg.map((s) => `/v1/kv/${s}`),
      fc.tuple(seg, seg).map(([a, b]) => `/v1/kv/${a}/${b}`),
      seg.map((s) => `/v1/apps/${s}`),
      fc.tuple(seg, fc.constantFrom('scale', 'stop', 'start', 'endpoints', 'logs', 'other')).map(([a, op]) => `/v1/apps/${a}/${op}`),
      seg.map((s) => `/v1/tasks/${s}/logs`),
      fc.stringMatching(/^\/[\x21-\x7e]{0,40}$/),
    );
    const qValue = fc.oneof(
      fc.constantFrom('true', 'false', '', '0', '1', '10', '-1', '1e300', '1.5', 'NaN', '99999999999999999999', '%', '%zz', '%00'),
      fc.string({ maxLength: 12 }).map(encodeURIComponent),
    );
    const qName = fc.oneof(fc.constantFrom('stale', 'limit', 'prefix', 'expectedVersion', 'since', 'tail', 'task', 'follow'), fc.stringMatching(/^[a-z]{1,8}$/));
    const query = fc.array(fc.tuple(qName, qValue), { maxLength: 4 }).map((ps) => (ps.length ? `?${ps.map(([k, v]) => `${k}=${v}`).join('&')}` : ''));
    const json = fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v) ?? 'null');
    const kvBody = fc.record({ value: fc.oneof(fc.string(), fc.jsonValue({ maxDepth: 1 })), expectedVersion: fc.oneof(fc.nat(), fc.double(), fc.constant(1e300), fc.string()) }, { requiredKeys: [] });
    const tokenBody = fc.record({ role: fc.constantFrom('admin', 'join', 'root', ''), name: fc.oneof(fc.string({ maxLength: 200 }), fc.integer()) }, { requiredKeys: [] });
    // Mutations of a valid mock-driver spec: one field replaced by anything (never a runnable command).
    const specBody = fc.tuple(fc.constantFrom('name', 'image', 'replicas', 'ports', 'env', 'resources', 'constraints', 'volumes', 'healthCheck', 'update', 'restart', 'extra'), fc.jsonValue({ maxDepth: 3 }))
      .map(([k, v]) => ({ ...MOCK_APP, name: 'fz', [k]: v }));
    const body = fc.oneof(
      { weight: 2, arbitrary: fc.constant(undefined) },
      { weight: 3, arbitrary: json },
      { weight: 2, arbitrary: kvBody.map((b) => JSON.stringify(b)) },
      { weight: 1, arbitrary: tokenBody.map((b) => JSON.stringify(b)) },
      { weight: 2, arbitrary: specBody.map((b) => JSON.stringify(b)) },
      { weight: 1, arbitrary: fc.record({ replicas: fc.oneof(fc.integer(), fc.double(), fc.constant(1e300), fc.string()) }).map((b) => JSON.stringify(b)) },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)) },
      { weight: 1, arbitrary: fc.string({ maxLength: 64 }) },
    );
    const method = fc.oneof(fc.constantFrom('GET', 'PUT', 'POST', 'DELETE', 'HEAD', 'PATCH', 'OPTIONS'), fc.stringMatching(/^[A-Z]{1,8}$/));
    const auth = fc.oneof(
      { weight: 6, arbitrary: fc.constant(undefined) },
      { weight: 1, arbitrary: fc.constant(null) },
      { weight: 1, arbitrary: fc.constantFrom('Bearer', 'Bearer ', 'Basic x', 'bearer OMNIA1.nope', `Bearer ${'x'.repeat(400)}`) },
      { weight: 1, arbitrary: fc.stringMatching(/^[\x20-\x7e]{0,40}$/) },
    );
    const headers = fc.array(
      fc.tuple(fc.constantFrom('Content-Type', 'Accept', 'X-Forwarded-For', 'Expect', 'Accept-Encoding', 'X-Custom'), fc.stringMatching(/^[\x21-\x7e]{0,30}$/)),
      { maxLength: 3 },
    );
    const request = fc.record({ method, target: fc.tuple(path, query).map(([p, q]) => p + q), body, auth, headers, chunked: fc.boolean() });

    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        // Leaving the cluster is a valid request, not a fuzz target.
        fc.pre(!/^\/v1\/leave\b/.test(r.target));
        expectWellFormed(await send(r), r.method, `${r.method} ${r.target}`);
      }),
      { numRuns: Number(process.env.OMNI_FUZZ_RUNS ?? 400) },
    );
    await expectServing();
  });
});
