// An in-process registry over a real cluster state machine whose proposals apply at once: the
// set-up of the registry and Forge unit tests (the real server, OCI routes, blob store, catalog).
import { ClusterState, encodeCommand, type Command } from '../../protocol/cluster/state.js';
import { Registry } from '../../node/registry/registry.js';
import { ApiTls } from '../../node/api/tls.js';
import { silentLogger } from '../../node/logger.js';
import { OmniError } from '../../node/errors.js';
import { sha256Hex } from '../../node/api/tokens.js';

export interface TestToken {
  id: string;
  secret: string;
  role: 'admin' | 'pull' | 'join';
}

/** A cluster state with the given tokens, as the registry's `cluster` dependency. */
export function registryCluster(tokens: TestToken[]) {
  const state = new ClusterState();
  const apply = (cmd: Command) => {
    const r = state.apply(state.appliedIndex + 1, encodeCommand(cmd));
    if (!r.ok) throw new OmniError(r.error.code, r.error.message);
    return r.value;
  };
  for (const t of tokens) apply({ type: 'token.add', token: { id: t.id, hash: sha256Hex(t.secret), role: t.role, name: t.role } });
  return { raft: { state, raft: undefined as never, isLeader: true }, readBarrier: async () => undefined, proposeOk: async (cmd: Command) => apply(cmd) };
}

export type RegistryCluster = ReturnType<typeof registryCluster>;

/** Opens a registry on dataDir; with `listen`, its /v2/ server answers on 127.0.0.1 (TLS off). */
export async function openTestRegistry(opts: { cluster: RegistryCluster; dataDir: string; pieceSizeBytes?: number; listen?: boolean }): Promise<Registry> {
  const registry = await Registry.open({ cluster: opts.cluster, log: silentLogger, dataDir: opts.dataDir, store: { pieceSizeBytes: opts.pieceSizeBytes ?? 64 * 1024, minFreeBytes: 0 } });
  if (opts.listen) await registry.listen('127.0.0.1:0', await ApiTls.prepare({ dataDir: opts.dataDir, apiHost: '127.0.0.1', addrs: () => [], nodeName: 't', flags: {}, log: silentLogger }));
  return registry;
}
