// The API's TLS rule (loopback stays HTTP unless --tls; anything else is HTTPS unless
// --insecure-http), the served certificate, and the client's one-line errors when a
// certificate does not verify or the scheme is wrong.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiTls, apiScheme, apiUrlFor, isLoopbackHost } from '../../node/api/tls.js';
import { createCa, initClusterCa, issueNodeCert, type Pems } from '../../node/api/cluster-ca.js';
import { createServer as createHttpsServer } from 'node:https';
import { ApiClient } from '../../node/api/client.js';
import { silentLogger, type Logger } from '../../node/logger.js';
import type { OmniError } from '../../node/errors.js';

describe('the loopback rule', () => {
  it('keeps loopback APIs on plain HTTP and puts every other address on HTTPS', () => {
    for (const h of ['127.0.0.1', '127.3.4.5', '::1', '[::1]', 'localhost']) expect(isLoopbackHost(h)).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.5', '192.168.1.2', 'fd00::1', 'node-a.example.org', '128.0.0.1']) expect(isLoopbackHost(h)).toBe(false);
    expect(apiScheme('127.0.0.1', {})).toBe('http');
    expect(apiScheme('::1', {})).toBe('http');
    expect(apiScheme('0.0.0.0', {})).toBe('https');
    expect(apiScheme('10.0.0.5', {})).toBe('https');
    expect(apiScheme('node-a.example.org', {})).toBe('https');
  });

  it('--tls forces HTTPS on loopback; --insecure-http forces HTTP elsewhere; both is an error', () => {
    expect(apiScheme('127.0.0.1', { tls: true })).toBe('https');
    expect(apiScheme('0.0.0.0', { insecureHttp: true })).toBe('http');
    expect(() => apiScheme('0.0.0.0', { tls: true, insecureHttp: true })).toThrow(/contradict/);
  });

  it('advertises a usable address for a wildcard bind', () => {
    const ifaces = { lo: [{ address: '127.0.0.1', family: 'IPv4', internal: true }], eth0: [{ address: '10.0.0.5', family: 'IPv4', internal: false }] } as never;
    expect(apiUrlFor('https', { address: '0.0.0.0', family: 'IPv4', port: 7070 }, ifaces)).toBe('https://10.0.0.5:7070');
    expect(apiUrlFor('http', { address: '::1', family: 'IPv6', port: 1 })).toBe('http://[::1]:1');
    expect(apiUrlFor('https', { address: '0.0.0.0', family: 'IPv4', port: 7070 }, {})).toBe('https://127.0.0.1:7070');
  });

  it('warns loudly when --insecure-http serves a network address', async () => {
    const warnings: string[] = [];
    const log: Logger = { ...silentLogger, warn: (m) => warnings.push(m) };
    const t = await ApiTls.prepare({ dataDir: '/nonexistent', apiHost: '0.0.0.0', addrs: () => [], nodeName: 'n', flags: { insecureHttp: true }, log });
    expect(t.enabled).toBe(false);
    expect(warnings.join('\n')).toMatch(/WARNING.*plain HTTP.*in clear/);
  });
});

describe('an HTTPS API with the node certificate', () => {
  let dir: string;
  let ca: Pems;
  let tls: ApiTls;
  let server: Server;
  let port = 0;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-tls-'));
    ca = await initClusterCa(dir, 'unit');
    tls = await ApiTls.prepare({ dataDir: dir, apiHost: '127.0.0.1', addrs: () => [], nodeName: 'n1', flags: { tls: true }, log: silentLogger });
    server = tls.createServer({}, (_req, res) => res.end('{"ok":true}'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    server?.closeAllConnections();
    await new Promise((r) => server?.close(r));
    await rm(dir, { recursive: true, force: true });
  });

  const call = async (addr: string, caPem?: string) => {
    const c = new ApiClient(addr, 'tok', 5000, { ca: caPem, caSource: 'test' });
    try {
      return await c.get('/healthz');
    } finally {
      c.close();
    }
  };

  it('answers https clients that trust the cluster CA, by IP and by name', async () => {
    expect(tls.enabled).toBe(true);
    expect(await call(`https://127.0.0.1:${port}`, ca.certPem)).toEqual({ ok: true });
    expect(await call(`https://localhost:${port}`, ca.certPem)).toEqual({ ok: true });
  });

  it('a client without the CA, or with another CA, fails with TLS_VERIFY_FAILED', async () => {
    const noCa = (await call(`https://127.0.0.1:${port}`).catch((e: OmniError) => e)) as OmniError;
    expect(noCa.code).toBe('TLS_VERIFY_FAILED');
    expect(noCa.message).toMatch(/OMNI_CA/);
    const wrong = (await call(`https://127.0.0.1:${port}`, (await createCa('other')).certPem).catch((e: OmniError) => e)) as OmniError;
    expect(wrong.code).toBe('TLS_VERIFY_FAILED');
    expect(wrong.message).toMatch(/cluster CA from test/);
  });

  it('a certificate from the CA that does not name the address fails with TLS_VERIFY_FAILED', async () => {
    const elsewhere = await issueNodeCert(ca, { ips: ['10.9.9.9'], dns: ['elsewhere.example.org'] }, 'elsewhere');
    const s = createHttpsServer({ cert: elsewhere.certPem, key: elsewhere.keyPem }, (_q, r) => r.end('{}'));
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
    try {
      const err = (await call(`https://127.0.0.1:${(s.address() as AddressInfo).port}`, ca.certPem).catch((e: OmniError) => e)) as OmniError;
      expect(err.code).toBe('TLS_VERIFY_FAILED');
      expect(err.message).toMatch(/IP: 127\.0\.0\.1 is not in the cert's list/);
    } finally {
      s.closeAllConnections();
      s.close();
    }
  });

  it('plain HTTP to the TLS port gets no answer; https to a plain HTTP port says so', async () => {
    const plain = (await call(`http://127.0.0.1:${port}`).catch((e: OmniError) => e)) as OmniError;
    expect(plain.code).toBe('UNAVAILABLE');
    expect(plain.message).toMatch(/use https:\/\//);
    const { createServer } = await import('node:http');
    const h = createServer((_q, s) => s.end('{}'));
    await new Promise<void>((r) => h.listen(0, '127.0.0.1', () => r()));
    const err = (await call(`https://127.0.0.1:${(h.address() as AddressInfo).port}`, ca.certPem).catch((e: OmniError) => e)) as OmniError;
    h.close();
    expect(err.code).toBe('TLS_HANDSHAKE_FAILED');
  });
});
