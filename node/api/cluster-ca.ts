// The cluster's certificate authority and each node's API certificate (P-256 ECDSA, built
// with @peculiar/x509 over Node's WebCrypto). `omnid init` creates the CA; the join reply
// hands the CA key and certificate to every member (over the pnet + noise libp2p stream), so
// each member signs its own certificate for the addresses it serves the API on, and signs a
// new one on restart when those change. Files live in DIR/tls (0700), keys 0600.
// Trust model: whoever holds a member's data dir can mint certificates for the cluster — the
// same power its network key and peer key already give.
import { webcrypto, X509Certificate, KeyObject, createPrivateKey, createPublicKey } from 'node:crypto';
import { isIP } from 'node:net';
import { mkdir, readFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { networkInterfaces } from 'node:os';
import { writeFileAtomic } from '../files.js';
import { OmniError } from '../errors.js';

type KeyPair = webcrypto.CryptoKeyPair;
type X509 = typeof import('@peculiar/x509');

let x509Module: Promise<X509> | undefined;
/**
 * @peculiar/x509 is loaded only to sign (about a second of start-up on a busy host): a node
 * restarting with a valid certificate, or serving plain HTTP, never needs it.
 */
function loadX509(): Promise<X509> {
  x509Module ??= (async () => {
    await import('reflect-metadata'); // its ASN.1 schemas need this loaded first
    const m = await import('@peculiar/x509');
    m.cryptoProvider.set(webcrypto as never);
    return m;
  })();
  return x509Module;
}

const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
/** The CA cannot be rotated yet, so it outlives any realistic cluster. */
export const CA_VALIDITY_MS = 20 * 365 * 86_400_000;
export const NODE_CERT_VALIDITY_MS = 365 * 86_400_000;
/** A node certificate this close to expiry is signed again (at start, and by the API's renewal timer). */
export const NODE_CERT_RENEW_BEFORE_MS = 30 * 86_400_000;
/** Certificates start an hour in the past: clocks of new hosts are often a little behind. */
const BACKDATE_MS = 3_600_000;
/** A PEM received from a peer (join reply) is refused above this size. */
export const MAX_PEM_BYTES = 16 * 1024;
/** SANs per certificate: hosts with many interfaces (containers, VPNs) stay bounded. */
const MAX_SANS = 64;

const TLS_DIR = 'tls';
const CA_KEY = 'ca.key';
const CA_CERT = 'ca.crt';
const NODE_KEY = 'node.key';
const NODE_CERT = 'node.crt';

export interface Pems {
  certPem: string;
  keyPem: string;
}

/** The names a node certificate must carry. */
export interface CertNames {
  ips: string[];
  dns: string[];
}

export function tlsDir(dataDir: string): string {
  return join(dataDir, TLS_DIR);
}

export function caCertPath(dataDir: string): string {
  return join(tlsDir(dataDir), CA_CERT);
}

// ------------------------------------------------------------------ pure certificate work

/** A self-signed CA certificate for one cluster (path length 0: it signs only node certificates). */
export async function createCa(clusterLabel: string, nowMs = Date.now()): Promise<Pems> {
  const x509 = await loadX509();
  const keys = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as KeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: [{ CN: [`omni cluster CA ${clusterLabel}`.slice(0, 64)] }, { O: ['omni'] }],
    keys,
    signingAlgorithm: EC,
    notBefore: new Date(nowMs - BACKDATE_MS),
    notAfter: new Date(nowMs + CA_VALIDITY_MS),
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await exportKeyPem(keys.privateKey) };
}

/** A server certificate for one node, signed by the CA, valid for exactly `names`. */
export async function issueNodeCert(ca: Pems, names: CertNames, commonName: string, nowMs = Date.now()): Promise<Pems> {
  if (names.ips.length + names.dns.length === 0) throw new OmniError('BAD_REQUEST', 'a node certificate needs at least one name');
  const x509 = await loadX509();
  const caCert = new x509.X509Certificate(ca.certPem);
  const caKey = createPrivateKey(ca.keyPem).toCryptoKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
  const keys = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as KeyPair;
  const sans = [...names.ips.map((value) => ({ type: 'ip' as const, value })), ...names.dns.map((value) => ({ type: 'dns' as const, value }))];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: [{ CN: [commonName.slice(0, 64) || 'omni node'] }, { O: ['omni'] }],
    issuer: caCert.subject,
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm: EC,
    notBefore: new Date(nowMs - BACKDATE_MS),
    notAfter: new Date(Math.min(nowMs + NODE_CERT_VALIDITY_MS, caCert.notAfter.getTime())),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(sans),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await exportKeyPem(keys.privateKey) };
}

/**
 * The names a node's API certificate carries: the --api host, the libp2p addresses it listens
 * on (IP SANs for IPs, DNS SANs for names), every interface address when either is a wildcard
 * (0.0.0.0 / ::), plus 127.0.0.1, ::1, localhost and the host name.
 */
export function certNames(input: { apiHost: string; addrs: string[]; hostname: string; interfaceAddrs?: () => string[] }): CertNames {
  const ips = new Set<string>(['127.0.0.1', '::1']);
  const dns = new Set<string>(['localhost']);
  let wildcard = false;
  const add = (host: string) => {
    const h = host.replace(/^\[|\]$/g, '').toLowerCase();
    if (h === '0.0.0.0' || h === '::') wildcard = true;
    else if (isIP(h)) ips.add(h);
    else if (isDnsName(h)) dns.add(h);
  };
  add(input.apiHost);
  for (const a of input.addrs) {
    const m = /^\/(ip4|ip6|dns|dns4|dns6)\/([^/]+)/.exec(a);
    if (m) add(m[2]);
  }
  if (wildcard) for (const ip of (input.interfaceAddrs ?? localInterfaceAddrs)()) add(ip);
  if (isDnsName(input.hostname.toLowerCase())) dns.add(input.hostname.toLowerCase());
  return { ips: [...ips].slice(0, MAX_SANS), dns: [...dns].slice(0, MAX_SANS) };
}

/** Why `certPem` cannot be kept for `names` (undefined: it can): other CA, a missing name, near expiry. */
export function certProblem(certPem: string, caCertPem: string, names: CertNames, nowMs = Date.now()): string | undefined {
  let cert: X509Certificate;
  let ca: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
    ca = new X509Certificate(caCertPem);
  } catch (err) {
    return `unreadable certificate (${(err as Error).message})`;
  }
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) return 'not signed by the cluster CA';
  if (Date.parse(cert.validTo) - nowMs < NODE_CERT_RENEW_BEFORE_MS) return 'expires soon';
  const missing = [...names.ips.filter((ip) => cert.checkIP(ip) === undefined), ...names.dns.filter((h) => cert.checkHost(h, { subject: 'never' }) === undefined)];
  return missing.length > 0 ? `does not cover ${missing.slice(0, 5).join(', ')}` : undefined;
}

/** Checks a CA received from a peer: a CA certificate, and the private key that matches it. */
export function validateCa(input: unknown): Pems {
  const c = input as Partial<Pems> | undefined;
  if (typeof c?.certPem !== 'string' || typeof c.keyPem !== 'string' || c.certPem.length > MAX_PEM_BYTES || c.keyPem.length > MAX_PEM_BYTES) {
    throw new OmniError('BAD_CA', 'the cluster CA must be {certPem, keyPem} PEM strings');
  }
  try {
    const cert = new X509Certificate(c.certPem);
    if (!cert.ca) throw new Error('the certificate is not a CA');
    if (!cert.checkPrivateKey(createPrivateKey(c.keyPem))) throw new Error('the key does not match the certificate');
    if (!cert.verify(createPublicKey(cert.publicKey.export({ type: 'spki', format: 'pem' })))) throw new Error('the certificate is not self-signed');
  } catch (err) {
    throw new OmniError('BAD_CA', `invalid cluster CA: ${(err as Error).message}`);
  }
  return { certPem: c.certPem, keyPem: c.keyPem };
}

// ------------------------------------------------------------------ data dir

/** `omnid init`: a new CA in DIR/tls. */
export async function initClusterCa(dataDir: string, clusterLabel: string): Promise<Pems> {
  const ca = await createCa(clusterLabel);
  await saveClusterCa(dataDir, ca);
  return ca;
}

export async function saveClusterCa(dataDir: string, input: unknown): Promise<Pems> {
  const ca = validateCa(input);
  await ensureTlsDir(dataDir);
  await writeFileAtomic(join(tlsDir(dataDir), CA_KEY), ca.keyPem, 0o600);
  await writeFileAtomic(join(tlsDir(dataDir), CA_CERT), ca.certPem, 0o644);
  return ca;
}

/** The CA this member holds, or undefined (a node whose join reply never arrived). */
export async function loadClusterCa(dataDir: string): Promise<Pems | undefined> {
  const [certPem, keyPem] = await Promise.all([readOptional(join(tlsDir(dataDir), CA_CERT)), readOptional(join(tlsDir(dataDir), CA_KEY))]);
  return certPem && keyPem ? { certPem, keyPem } : undefined;
}

/**
 * The node's API certificate for `names`: the one on disk while it is signed by this CA,
 * covers every name and is not about to expire; otherwise a new one, saved.
 */
export async function ensureNodeCert(dataDir: string, ca: Pems, names: CertNames, commonName: string, nowMs = Date.now()): Promise<Pems & { issued: boolean; reason?: string }> {
  const dir = tlsDir(dataDir);
  const [certPem, keyPem] = await Promise.all([readOptional(join(dir, NODE_CERT)), readOptional(join(dir, NODE_KEY))]);
  const reason = certPem && keyPem ? certProblem(certPem, ca.certPem, names, nowMs) : 'none yet';
  if (certPem && keyPem && reason === undefined) return { certPem, keyPem, issued: false };
  const fresh = await issueNodeCert(ca, names, commonName, nowMs);
  await ensureTlsDir(dataDir);
  await writeFileAtomic(join(dir, NODE_KEY), fresh.keyPem, 0o600);
  await writeFileAtomic(join(dir, NODE_CERT), fresh.certPem, 0o644);
  return { ...fresh, issued: true, reason };
}

// ------------------------------------------------------------------ helpers

function localInterfaceAddrs(): string[] {
  return Object.values(networkInterfaces())
    .flatMap((list) => list ?? [])
    .filter((i) => !(i.family === 'IPv6' && i.scopeid)) // link-local needs a zone, useless in a URL
    .map((i) => i.address);
}

function isDnsName(h: string): boolean {
  return h.length > 0 && h.length <= 253 && /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(h);
}

function randomSerial(): string {
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0] &= 0x7f; // a positive INTEGER
  return Buffer.from(b).toString('hex');
}

async function exportKeyPem(key: webcrypto.CryptoKey): Promise<string> {
  return KeyObject.from(key).export({ type: 'pkcs8', format: 'pem' }) as string;
}

async function ensureTlsDir(dataDir: string): Promise<void> {
  await mkdir(tlsDir(dataDir), { recursive: true, mode: 0o700 });
  await chmod(tlsDir(dataDir), 0o700);
}

async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
