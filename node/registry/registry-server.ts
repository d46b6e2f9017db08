// The HTTP listener of the registry (`omnid --registry HOST:PORT`, default 127.0.0.1:5000): its
// own port, so the node's Docker engine can use it as a registry (Docker trusts 127.0.0.0/8 as
// an insecure registry by default). Off loopback it serves HTTPS with the node's cluster-CA
// certificate (node/api/tls.ts), as the API does.
//
// Every request is authenticated (node/registry/registry-auth.ts) before it is routed; errors
// are the distribution API's `{"errors": [{code, message, detail}]}`. Limits: connections,
// requests in flight, the time to send a request head; a request body (a layer upload) may
// take as long as it needs while bytes keep coming (an idle socket is closed).
import type { IncomingMessage, ServerResponse, Server } from 'node:http';
import { FreshTokens } from '../api/fresh-tokens.js';
import type { AddressInfo } from 'node:net';
import { OmniError } from '../errors.js';
import type { Logger } from '../logger.js';
import { apiUrlFor, type ApiTls } from '../api/tls.js';
import { parseHostPort } from '../api/server.js';
import { capConnections, Gate, lingeringClose, type ApiLimits } from '../api/limits.js';
import { parseRequestUrl } from '../api/input.js';
import { registryErrorStatus } from '../../protocol/registry/errors.js';
import type { TokenRecord } from '../../protocol/cluster/state.js';
import { challenge, issueToken, presentedSecret, principalOf, scopeFor, TOKEN_PATH } from './registry-auth.js';
import type { OciApi } from './oci-api.js';

export interface RegistryServerLimits {
  maxConnections: number;
  maxInFlight: number;
  headersTimeoutMs: number;
  /** A connection with no bytes either way for this long is closed. */
  idleTimeoutMs: number;
  keepAliveTimeoutMs: number;
}

export const DEFAULT_REGISTRY_LIMITS: RegistryServerLimits = {
  maxConnections: 512,
  maxInFlight: 256,
  headersTimeoutMs: 10_000,
  idleTimeoutMs: 120_000,
  keepAliveTimeoutMs: 5_000,
};

/** Longest token-endpoint form body. */
const MAX_FORM_BYTES = 8 * 1024;

export interface RegistryServerDeps {
  api: OciApi;
  /** The replicated token records (hashes). */
  tokens(): readonly TokenRecord[];
  /** A linearizable read barrier: a token this replica does not know yet is looked up again after it. */
  readBarrier(): Promise<void>;
  /** This node's own pull credential (for its Docker engine). */
  nodeSecret?: string;
  log: Logger;
}

export class RegistryServer {
  private server: Server | undefined;
  url = '';
  private readonly inFlight: Gate;
  private readonly freshTokens: FreshTokens;
  private scheme: 'http' | 'https' = 'http';

  constructor(
    private readonly d: RegistryServerDeps,
    private readonly limits: RegistryServerLimits = DEFAULT_REGISTRY_LIMITS,
  ) {
    this.inFlight = new Gate(limits.maxInFlight, 'registry requests');
    this.freshTokens = new FreshTokens(() => this.d.readBarrier());
  }

  /** Listens on HOST:PORT; `tls` decides HTTP or HTTPS by the loopback rule. */
  async listen(hostPort: string, tls: ApiTls): Promise<void> {
    const { host, port } = parseHostPort(hostPort);
    this.scheme = tls.scheme;
    const server = tls.createServer(
      { headersTimeout: this.limits.headersTimeoutMs, requestTimeout: 0, keepAliveTimeout: this.limits.keepAliveTimeoutMs, connectionsCheckingInterval: 1000 },
      (req, res) => void this.handle(req, res),
    );
    server.timeout = this.limits.idleTimeoutMs;
    capConnections(server, { maxConnections: this.limits.maxConnections } as ApiLimits, this.d.log, 'registry');
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    this.server = server;
    this.url = apiUrlFor(tls.scheme, server.address() as AddressInfo);
  }

  /** host:port as docker names this registry (e.g. 127.0.0.1:5000). */
  get hostPort(): string {
    return this.url.replace(/^https?:\/\//, '');
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let release: (() => void) | undefined;
    let scope: string | undefined;
    try {
      res.setHeader('docker-distribution-api-version', 'registry/2.0');
      const url = parseRequestUrl(req.url);
      if (!url.pathname.startsWith('/v2/') && url.pathname !== '/v2') throw new OmniError('NAME_UNKNOWN', `no route ${url.pathname.slice(0, 200)} (the registry serves /v2/)`);
      release = this.inFlight.enter();
      if (url.pathname === TOKEN_PATH) return await this.token(req, res);
      const path = url.pathname === '/v2' ? '/v2/' : url.pathname;
      const matching = this.d.api.routes.filter((r) => r.pattern.test(path));
      const route = matching.find((r) => r.method === req.method);
      const write = route ? route.write : req.method !== 'GET' && req.method !== 'HEAD';
      scope = scopeFor(/^\/v2\/(.+?)\/(?:manifests|blobs|tags|referrers)\//.exec(path)?.[1], write);
      const secret = presentedSecret(req.headers.authorization);
      const principal = secret === '' ? undefined : await this.freshTokens.check(() => principalOf(secret, this.d.tokens(), this.d.nodeSecret));
      if (!principal) throw new OmniError('UNAUTHORIZED', req.headers.authorization ? 'invalid credentials: use an Omni admin or pull token' : 'authentication required (docker login with an Omni admin or pull token)');
      if (matching.length === 0) throw new OmniError('NAME_UNKNOWN', `no route ${path.slice(0, 200)}`);
      if (!route) throw new OmniError('METHOD_UNKNOWN', `${req.method} is not supported on ${path.slice(0, 200)}`);
      if (write && principal.role !== 'admin') throw new OmniError('DENIED', 'requested access to the resource is denied: this token may only pull');
      const params = route.pattern.exec(path)!.slice(1).map((p) => decodeURIComponent(p));
      await route.handle({ req, res, url, caller: principal.caller }, params);
    } catch (err) {
      this.fail(req, res, err, scope);
    } finally {
      release?.();
    }
  }

  private async token(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let form: URLSearchParams | undefined;
    if (req.method === 'POST') {
      const parts: Buffer[] = [];
      let n = 0;
      for await (const c of req) {
        n += (c as Buffer).length;
        if (n > MAX_FORM_BYTES) throw new OmniError('PAYLOAD_TOO_LARGE', 'token request too large');
        parts.push(c as Buffer);
      }
      form = new URLSearchParams(Buffer.concat(parts).toString('utf8'));
    } else if (req.method !== 'GET') {
      throw new OmniError('METHOD_UNKNOWN', 'the token endpoint takes GET or POST');
    }
    let body: Record<string, unknown>;
    try {
      body = (await this.freshTokens.check(() => issueToken(req.headers.authorization, form, this.d.tokens(), this.d.nodeSecret)))!;
    } catch (err) {
      // A failed login answers with a Basic challenge: the credentials themselves were wrong.
      res.setHeader('www-authenticate', `Basic realm="omni registry"`);
      throw err;
    }
    const text = JSON.stringify(body);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
    res.end(text);
  }

  private fail(req: IncomingMessage, res: ServerResponse, err: unknown, scope: string | undefined): void {
    const e = err instanceof OmniError ? err : new OmniError('INTERNAL', (err as Error)?.message ?? String(err));
    const [code, status] = registryErrorStatus(e.code);
    if (status >= 500 && e.code !== 'NO_SPACE' && status !== 503 && status !== 504) this.d.log.error(`registry: ${req.method} ${req.url?.slice(0, 200)}: ${(err as Error)?.stack ?? e.message}`);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const text = JSON.stringify({ errors: [{ code, message: e.message, detail: e.detail ?? {} }] });
    const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) };
    if (status === 401 && !res.hasHeader('www-authenticate')) headers['www-authenticate'] = challenge(req, this.scheme, scope);
    if (status === 503 || status === 429) headers['retry-after'] = 1;
    if (!req.complete) {
      headers.connection = 'close';
      lingeringClose(req);
    }
    res.writeHead(status, headers);
    res.end(req.method === 'HEAD' ? undefined : text);
  }
}
