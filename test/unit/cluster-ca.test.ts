// The cluster CA and node certificates (node/api/cluster-ca.ts), checked with node:crypto's own
// X509Certificate: SANs present, signed by the CA and by no other, re-signed only when needed.
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { certNames, certProblem, createCa, ensureNodeCert, initClusterCa, issueNodeCert, loadClusterCa, saveClusterCa, tlsDir, validateCa, NODE_CERT_VALIDITY_MS, type Pems } from '../../node/api/cluster-ca.js';

describe('cluster CA and node certificates', () => {
  let ca: Pems;
  let other: Pems;
  let dir: string;
  beforeAll(async () => {
    [ca, other] = await Promise.all([createCa('test'), createCa('other')]);
    dir = await mkdtemp(join(tmpdir(), 'omni-ca-'));
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  it('creates a self-signed P-256 CA certificate that may sign node certificates', () => {
    const c = new X509Certificate(ca.certPem);
    expect(c.ca).toBe(true);
    expect(c.verify(c.publicKey)).toBe(true);
    expect(c.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(c.subject).toContain('omni cluster CA test');
  });

  it('issues a node certificate with the SANs, signed by the CA and verified only by it', async () => {
    const names = certNames({ apiHost: '10.1.2.3', addrs: ['/ip4/192.168.7.9/tcp/7946/p2p/12D3KooWabc', '/ip6/fd00::5/tcp/7946', '/dns4/node-a.example.org/tcp/7946'], hostname: 'Host-A' });
    const issued = await issueNodeCert(ca, names, 'n1');
    const cert = new X509Certificate(issued.certPem);
    const caCert = new X509Certificate(ca.certPem);
    expect(cert.ca).toBe(false);
    expect(cert.checkIssued(caCert)).toBe(true);
    expect(cert.verify(caCert.publicKey)).toBe(true);
    expect(cert.verify(new X509Certificate(other.certPem).publicKey)).toBe(false);
    for (const ip of ['10.1.2.3', '192.168.7.9', 'fd00::5', '127.0.0.1', '::1']) expect(cert.checkIP(ip)).toBe(ip);
    for (const host of ['localhost', 'host-a', 'node-a.example.org']) expect(cert.checkHost(host)).toBe(host);
    expect(cert.checkIP('10.9.9.9')).toBeUndefined();
    expect(cert.checkHost('evil.example.org')).toBeUndefined();
    expect(cert.keyUsage).toContain('1.3.6.1.5.5.7.3.1'); // serverAuth
    expect(cert.checkPrivateKey((await import('node:crypto')).createPrivateKey(issued.keyPem))).toBe(true);
    const lifetime = Date.parse(cert.validTo) - Date.parse(cert.validFrom);
    expect(lifetime).toBeLessThanOrEqual(NODE_CERT_VALIDITY_MS + 3_600_000);
  });

  it('names every interface address when the API or the listener is a wildcard, never 0.0.0.0', () => {
    const names = certNames({ apiHost: '0.0.0.0', addrs: ['/ip4/0.0.0.0/tcp/7946'], hostname: 'h', interfaceAddrs: () => ['127.0.0.1', '10.0.0.5', 'fe80::1'] });
    expect(names.ips).toEqual(expect.arrayContaining(['127.0.0.1', '::1', '10.0.0.5', 'fe80::1']));
    expect(names.ips).not.toContain('0.0.0.0');
    const loopback = certNames({ apiHost: '127.0.0.1', addrs: ['/ip4/127.0.0.1/tcp/1'], hostname: 'h', interfaceAddrs: () => ['10.0.0.5'] });
    expect(loopback.ips).not.toContain('10.0.0.5');
  });

  it('keeps a node certificate while it fits, signs a new one when an address, the CA or the date says so', async () => {
    await initClusterCa(dir, 'unit');
    const mine = (await loadClusterCa(dir))!;
    const names = certNames({ apiHost: '127.0.0.1', addrs: ['/ip4/10.0.0.5/tcp/7946'], hostname: 'h' });
    const first = await ensureNodeCert(dir, mine, names, 'n1');
    expect(first.issued).toBe(true);
    expect((await ensureNodeCert(dir, mine, names, 'n1')).issued).toBe(false);
    const moved = certNames({ apiHost: '127.0.0.1', addrs: ['/ip4/10.0.0.6/tcp/7946'], hostname: 'h' });
    expect(certProblem(first.certPem, mine.certPem, moved)).toMatch(/does not cover 10\.0\.0\.6/);
    const again = await ensureNodeCert(dir, mine, moved, 'n1');
    expect(again.issued).toBe(true);
    expect(new X509Certificate(again.certPem).checkIP('10.0.0.6')).toBe('10.0.0.6');
    expect(certProblem(again.certPem, other.certPem, moved)).toBe('not signed by the cluster CA');
    expect(certProblem(again.certPem, mine.certPem, moved, Date.now() + NODE_CERT_VALIDITY_MS - 86_400_000)).toBe('expires soon');
    for (const f of ['ca.key', 'node.key']) expect((await stat(join(tlsDir(dir), f))).mode & 0o777).toBe(0o600);
    expect((await stat(tlsDir(dir))).mode & 0o777).toBe(0o700);
  });

  it('accepts a CA from a peer only as a matching CA certificate and key', async () => {
    expect(validateCa(ca)).toEqual(ca);
    expect(() => validateCa({ certPem: ca.certPem, keyPem: other.keyPem })).toThrow(/does not match/);
    const leaf = await issueNodeCert(ca, { ips: ['127.0.0.1'], dns: [] }, 'x');
    expect(() => validateCa(leaf)).toThrow(/not a CA/);
    expect(() => validateCa({ certPem: 'x'.repeat(20_000), keyPem: '' })).toThrow(/PEM strings/);
    expect(() => validateCa(undefined)).toThrow(/BAD_CA|PEM/);
    await expect(saveClusterCa(dir, { certPem: 'garbage', keyPem: 'garbage' })).rejects.toThrow(/invalid cluster CA/);
  });
});
