// Whether and how a node serves its HTTP API over TLS, and the certificate it serves.
// The rule: an API bound to a loopback address stays plain HTTP (nothing crosses a network)
// unless --tls; any other address is HTTPS; --insecure-http opts out, with a loud warning.
// The certificate is the node's own, signed by the cluster CA (node/api/cluster-ca.ts); a node
// that has no CA yet (a join in progress) serves a throwaway one that no client trusts.
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse, type Server, type ServerOptions as HttpServerOptions } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { isIP } from 'node:net';
import { hostname, networkInterfaces } from 'node:os';
import { OmniError } from '../errors.js';
import type { Logger } from '../logger.js';
import { certNames, createCa, ensureNodeCert, issueNodeCert, loadClusterCa, saveClusterCa, type Pems } from './cluster-ca.js';

export interface ApiTlsFlags {
  /** --tls: HTTPS even on a loopback address. */
  tls?: boolean;
  /** --insecure-http: plain HTTP even on a network address. */
  insecureHttp?: boolean;
}

/** How often a serving node checks whether its certificate must be signed again. */
const RENEW_CHECK_MS = 12 * 3_600_000;
/** A member with no CA (its join reply was lost) asks the cluster for it this often. */
const CA_FETCH_RETRY_MS = 2000;
const MIN_TLS_VERSION = 'TLSv1.2';

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  return h === '::1' || /^::ffff:127\./.test(h);
}

/** The loopback rule (see the top of this file). */
export function apiScheme(apiHost: string, flags: ApiTlsFlags): 'https' | 'http' {
  if (flags.tls && flags.insecureHttp) throw new OmniError('BAD_REQUEST', '--tls and --insecure-http contradict each other');
  if (flags.tls) return 'https';
  if (flags.insecureHttp) return 'http';
  return isLoopbackHost(apiHost) ? 'http' : 'https';
}

/**
 * The URL clients use for a bound address. A wildcard bind (0.0.0.0, ::) is no address a
 * client can use, nor one a certificate can name: advertise this host's first external
 * interface address instead (it is in the certificate), or loopback when there is none.
 */
export function apiUrlFor(scheme: 'https' | 'http', addr: AddressInfo, interfaces = networkInterfaces()): string {
  let host = addr.address;
  if (host === '0.0.0.0' || host === '::') {
    const external = Object.values(interfaces)
      .flatMap((l) => l ?? [])
      .filter((i) => !i.internal && !(i.family === 'IPv6' && i.scopeid));
    host = (external.find((i) => i.family === 'IPv4') ?? external[0])?.address ?? '127.0.0.1';
  }
  return `${scheme}://${isIP(host) === 6 ? `[${host}]` : host}:${addr.port}`;
}

export interface ApiTlsOptions {
  dataDir: string;
  /** The --api HOST:PORT's host. */
  apiHost: string;
  /** The node's libp2p addresses (their hosts go into the certificate). */
  addrs: () => string[];
  nodeName: string;
  flags: ApiTlsFlags;
  log: Logger;
}

export class ApiTls {
  private server: HttpsServer | undefined;
  private current: Pems | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(
    private readonly opts: ApiTlsOptions,
    readonly scheme: 'https' | 'http',
  ) {}

  /** Applies the loopback rule; for HTTPS, gets the node certificate ready before the API listens. */
  static async prepare(opts: ApiTlsOptions): Promise<ApiTls> {
    const t = new ApiTls(opts, apiScheme(opts.apiHost, opts.flags));
    if (t.scheme === 'https') await t.refresh();
    else if (!isLoopbackHost(opts.apiHost)) {
      opts.log.warn(`WARNING: --insecure-http: the API on ${opts.apiHost} is plain HTTP; API tokens and data cross the network in clear`);
    }
    return t;
  }

  get enabled(): boolean {
    return this.scheme === 'https';
  }

  /** An HTTPS server with the node certificate (renewed in place), or a plain HTTP server. */
  createServer(options: HttpServerOptions, handler: (req: IncomingMessage, res: ServerResponse) => void): Server {
    if (!this.enabled) return createHttpServer(options, handler);
    const server = createHttpsServer({ ...options, cert: this.current!.certPem, key: this.current!.keyPem, minVersion: MIN_TLS_VERSION }, handler);
    server.on('secureConnection', (s) => this.opts.log.debug(`api: TLS connection from ${s.remoteAddress}:${s.remotePort}`));
    server.on('tlsClientError', (err, s) => this.opts.log.debug(`api: TLS handshake from ${s.remoteAddress} failed: ${err.message}`));
    server.on('close', () => this.stop());
    this.server = server;
    this.renewTimer = setInterval(() => void this.refresh().catch((err: Error) => this.opts.log.warn(`api: certificate renewal failed: ${err.message}`)), RENEW_CHECK_MS);
    this.renewTimer.unref();
    return server;
  }

  /** The join reply's CA: kept in the data dir (even on a plain-HTTP node, which may be joined through). */
  async adoptCa(ca: unknown): Promise<void> {
    await saveClusterCa(this.opts.dataDir, ca);
    if (this.enabled) await this.refresh();
  }

  /** The CA in a join reply. The node is a member by now whatever happens: a bad or missing CA is fetched later (ensureCa). */
  async adoptJoinedCa(ca: unknown): Promise<void> {
    try {
      await this.adoptCa(ca);
    } catch (err) {
      this.opts.log.warn(`api: the join reply carried no usable cluster CA (${(err as Error).message}); asking the cluster for it`);
    }
  }

  /**
   * A member without the CA (its join reply was lost, so `omnid start` resumed the join) asks
   * the cluster for it until it has it; then it can serve, and sign, like any member.
   */
  async ensureCa(fetch: () => Promise<unknown>): Promise<void> {
    while (!this.closed && !(await loadClusterCa(this.opts.dataDir))) {
      try {
        await this.adoptCa(await fetch());
        this.opts.log.info('api: received the cluster CA');
        return;
      } catch (err) {
        this.opts.log.debug(`api: cluster CA not received yet: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, CA_FETCH_RETRY_MS));
      }
    }
  }

  stop(): void {
    this.closed = true;
    if (this.renewTimer) clearInterval(this.renewTimer);
  }

  /** Makes sure the served certificate is signed by the CA for today's names; swaps it in live. */
  private async refresh(): Promise<void> {
    const { dataDir, apiHost, nodeName, log } = this.opts;
    const names = certNames({ apiHost, addrs: this.opts.addrs(), hostname: hostname() });
    const ca = await loadClusterCa(dataDir);
    let next: Pems;
    if (ca) {
      const r = await ensureNodeCert(dataDir, ca, names, nodeName);
      if (r.issued) log.info(`api: signed a new TLS certificate (${r.reason}) for ${[...names.ips, ...names.dns].join(', ')}`);
      next = r;
    } else {
      if (this.current) return;
      log.warn('api: no cluster CA yet (join in progress); serving a provisional certificate that clients refuse until the join completes');
      next = await issueNodeCert(await createCa('provisional'), names, nodeName);
    }
    if (next.certPem === this.current?.certPem) return;
    this.current = { certPem: next.certPem, keyPem: next.keyPem };
    this.server?.setSecureContext({ cert: next.certPem, key: next.keyPem, minVersion: MIN_TLS_VERSION });
  }
}
