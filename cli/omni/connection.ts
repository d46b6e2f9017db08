// How the omni CLI finds a node: --addr/--token/--ca flags, then OMNI_ADDR/OMNI_TOKEN/OMNI_CA,
// then the config file omnid init wrote ($OMNI_CONFIG or ~/.config/omni/config.json). An
// https address is verified against the cluster CA only (never the system CAs when one is set).
import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { ApiClient, type ApiClientOptions } from '../../node/api/client.js';
import { OmniError } from '../../node/errors.js';
import { clientConfigPath, UsageError, type Flags } from '../common.js';

export const CONNECTION_FLAGS: Flags = {
  addr: { type: 'string' },
  token: { type: 'string' },
  ca: { type: 'string' },
  json: { type: 'boolean' },
};

export const CONNECTION_HELP = `
  --addr URL     node API address (default $OMNI_ADDR, then the config file)
  --token TOKEN  API token (default $OMNI_TOKEN, then the config file)
  --ca FILE      cluster CA certificate (PEM) for https addresses (default $OMNI_CA, then the config file)
  --json         machine-readable output`;

export function connect(values: Record<string, unknown>): ApiClient {
  let file: { addr?: string; token?: string; ca?: string } = {};
  try {
    file = JSON.parse(readFileSync(clientConfigPath(), 'utf8'));
  } catch {
    file = {};
  }
  const addr = (values.addr as string | undefined) ?? process.env.OMNI_ADDR ?? file.addr;
  const token = (values.token as string | undefined) ?? process.env.OMNI_TOKEN ?? file.token;
  if (!addr) throw new UsageError('no node address: pass --addr, set OMNI_ADDR, or run omnid init on this host');
  return new ApiClient(addr, token, undefined, caOption(values.ca as string | undefined, file.ca));
}

/** --ca or $OMNI_CA (a PEM file) override the CA saved in the config file. */
function caOption(flag: string | undefined, fromFile: string | undefined): ApiClientOptions {
  const path = flag ?? process.env.OMNI_CA;
  if (path) {
    let ca: string;
    try {
      ca = readFileSync(path, 'utf8');
      new X509Certificate(ca);
    } catch (err) {
      throw new OmniError('BAD_CA', `cannot read the CA certificate ${path}: ${(err as Error).message}`);
    }
    return { ca, caSource: path };
  }
  return fromFile ? { ca: fromFile, caSource: clientConfigPath() } : {};
}
