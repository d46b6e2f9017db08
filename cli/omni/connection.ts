// How the omni CLI finds a node: --addr/--token flags, then OMNI_ADDR/OMNI_TOKEN, then the
// config file omnid init wrote ($OMNI_CONFIG or ~/.config/omni/config.json).
import { readFileSync } from 'node:fs';
import { ApiClient } from '../../node/client.js';
import { clientConfigPath, UsageError, type Flags } from '../common.js';

export const CONNECTION_FLAGS: Flags = {
  addr: { type: 'string' },
  token: { type: 'string' },
  json: { type: 'boolean' },
};

export const CONNECTION_HELP = `
  --addr URL     node API address (default $OMNI_ADDR, then the config file)
  --token TOKEN  API token (default $OMNI_TOKEN, then the config file)
  --json         machine-readable output`;

export function connect(values: Record<string, unknown>): ApiClient {
  let file: { addr?: string; token?: string } = {};
  try {
    file = JSON.parse(readFileSync(clientConfigPath(), 'utf8'));
  } catch {
    file = {};
  }
  const addr = (values.addr as string | undefined) ?? process.env.OMNI_ADDR ?? file.addr;
  const token = (values.token as string | undefined) ?? process.env.OMNI_TOKEN ?? file.token;
  if (!addr) throw new UsageError('no node address: pass --addr, set OMNI_ADDR, or run omnid init on this host');
  return new ApiClient(addr, token);
}
