// How the omni CLI finds a node: --addr/--token/--ca flags, then OMNI_ADDR/OMNI_TOKEN/OMNI_CA,
// then the config file omnid init wrote ($OMNI_CONFIG or ~/.config/omni/config.json). An
// https address is verified against the cluster CA only (never the system CAs when one is set).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { ApiClient, ApiClientOptions } from '../../node/api/client.js';
import { writeFileAtomic } from '../../node/files.js';
import { FailoverClient, type ApiTarget } from './failover-client.js';
import { OmniError } from '../../node/errors.js';
import { clientConfigPath, UsageError, type Flags } from '../common.js';

export const CONNECTION_FLAGS: Flags = {
  addr: { type: 'string' },
  token: { type: 'string' },
  ca: { type: 'string' },
  json: { type: 'boolean' },
};

export const CONNECTION_HELP = `
  --addr URL     ask this node only (default $OMNI_ADDR, then the config file, each with failover
                 to the cluster's other API addresses the config file keeps)
  --token TOKEN  API token (default $OMNI_TOKEN, then the config file)
  --ca FILE      cluster CA certificate (PEM) for https addresses (default $OMNI_CA, then the config file)
  --json         machine-readable output`;

/** The config file omnid init writes; `addrs` are the cluster's API addresses the CLI learned. */
interface ConfigFile {
  addr?: string;
  token?: string;
  ca?: string;
  addrs?: string[];
  addrsUpdatedAtMs?: number;
}

/** The member list in the config file is refreshed from /v1/nodes at most this often. */
const MEMBERS_REFRESH_MS = 10 * 60_000;
const MAX_KNOWN_ADDRS = 32;
const MAX_CONFIG_BYTES = 1024 * 1024;

function readConfig(path: string): ConfigFile {
  try {
    const text = readFileSync(path, 'utf8');
    if (text.length > MAX_CONFIG_BYTES) return {};
    const v = JSON.parse(text) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as ConfigFile) : {};
  } catch {
    return {};
  }
}

/**
 * A client for the address given (--addr, then $OMNI_ADDR, then the config file), failing over
 * to the cluster's other API addresses from the config file when it does not answer.
 */
export function connect(values: Record<string, unknown>): ApiClient {
  const path = clientConfigPath();
  const file = readConfig(path);
  const flagAddr = values.addr as string | undefined;
  const envAddr = process.env.OMNI_ADDR;
  const token = (values.token as string | undefined) ?? process.env.OMNI_TOKEN ?? file.token;
  const first: ApiTarget | undefined = flagAddr ? { addr: flagAddr, source: '--addr' } : envAddr ? { addr: envAddr, source: '$OMNI_ADDR' } : file.addr ? { addr: file.addr, source: `config file ${path}` } : undefined;
  if (!first) throw new UsageError('no node address: pass --addr, set OMNI_ADDR, or run omnid init on this host');
  // The config file's members belong to its cluster: used only with its token.
  // --addr names one node on purpose (e.g. to ask it how it sees the cluster): no failover.
  const sameCluster = file.token !== undefined && token === file.token;
  const others = sameCluster && !flagAddr ? [file.addr, ...(Array.isArray(file.addrs) ? file.addrs : [])].filter((a): a is string => typeof a === 'string' && a !== first.addr) : [];
  const targets = [first, ...[...new Set(others)].slice(0, MAX_KNOWN_ADDRS).map((addr) => ({ addr, source: `config file ${path} (cluster members)` }))];
  const client = new FailoverClient(targets, token, caOption(values.ca as string | undefined, file.ca));
  if (sameCluster && Date.now() - (file.addrsUpdatedAtMs ?? 0) > MEMBERS_REFRESH_MS) client.afterFirstAnswer = () => rememberMembers(client, path);
  return client;
}

/** The token and CA the CLI would use (for talking to a node's /v2/ registry with the same credentials). */
export function credentials(values: Record<string, unknown>): { token: string | undefined; ca?: string } {
  const file = readConfig(clientConfigPath());
  const token = (values.token as string | undefined) ?? process.env.OMNI_TOKEN ?? file.token;
  return { token, ...caOption(values.ca as string | undefined, file.ca) };
}

/** Saves the API addresses of the cluster's live members in the config file (for failover). */
async function rememberMembers(client: ApiClient, path: string): Promise<void> {
  const r = await client.get<{ nodes: { apiUrl?: unknown; status?: unknown }[] }>('/v1/nodes?stale=true');
  const addrs = r.nodes.filter((n) => n.status !== 'left' && typeof n.apiUrl === 'string' && /^https?:\/\//.test(n.apiUrl)).map((n) => n.apiUrl as string);
  const file = readConfig(path);
  await writeFileAtomic(path, JSON.stringify({ ...file, addrs: addrs.slice(0, MAX_KNOWN_ADDRS), addrsUpdatedAtMs: Date.now() }, null, 2) + '\n', 0o600);
}

/** --ca or $OMNI_CA (a PEM file) override the CA saved in the config file. */
function caOption(flag: string | undefined, fromFile: string | undefined): ApiClientOptions {
  const path = flag ?? process.env.OMNI_CA;
  if (path) {
    let ca: string;
    try {
      ca = readFileSync(path, 'utf8');
      // node:crypto only here (a CLI start that needs no CA does not load it)
      new (createRequire(import.meta.url)('node:crypto') as typeof import('node:crypto')).X509Certificate(ca);
    } catch (err) {
      throw new OmniError('BAD_CA', `cannot read the CA certificate ${path}: ${(err as Error).message}`);
    }
    return { ca, caSource: path };
  }
  return fromFile ? { ca: fromFile, caSource: clientConfigPath() } : {};
}
