// The state quota, checked by the leader BEFORE it proposes (as etcd checks its backend quota
// at the API): a write refused for space never enters the Raft log, so a full cluster does not
// keep replicating and fsync'ing refused entries until its disks fill (issue 9, point 3).
//
// The quota is replicated (ClusterConfig.maxStateBytes, set by omnid init --max-state-bytes and
// changed by `omni quota set`: a config.set command),
// so every leader applies the same one. It bounds the bytes of the node, token and kv records
// (ClusterState.sizeBytes). An admin's writes stop at the quota. The cluster's own writes — a
// member reporting about itself, the leader's autopilot and orchestrator — may use a reserve
// above it (STATE_RESERVE_BYTES), so a cluster filled by its users still manages itself. A
// command that does not grow the state (a delete, a revoke, a smaller value) is always
// admitted: that is how an operator frees space. The state machine's own hard limit
// (MAX_STATE_BYTES, checked at apply) stays as the last line.
import type { PrincipalKind } from './authz.js';
import {
  DEFAULT_MAX_STATE_BYTES,
  MAX_STATE_BYTES,
  STATE_RESERVE_BYTES,
  kvRecordSizeBytes,
  recordSizeBytes,
  type ClusterConfig,
  type Command,
  type CommandError,
  type KvMeta,
  type NodeRecord,
  type TokenRecord,
} from './state.js';

/** What the estimate reads from the current state. */
export interface QuotaView {
  kvMeta(key: string): KvMeta | undefined;
  node(id: string): NodeRecord | undefined;
  tokenById(id: string): TokenRecord | undefined;
}

/** Stands in for the Raft indexes a record will carry (the largest, so estimates never fall short). */
const ANY_INDEX = Number.MAX_SAFE_INTEGER;

export function quotaBytes(config: ClusterConfig): number {
  return config.maxStateBytes ?? DEFAULT_MAX_STATE_BYTES;
}

/** How far past the state size a principal's writes may go. */
export function limitBytes(principal: PrincipalKind, quota: number): number {
  return principal === 'admin' ? quota : Math.min(MAX_STATE_BYTES, quota + STATE_RESERVE_BYTES);
}

/**
 * Bytes `c` adds to the state if it applies (negative when it frees space). Never less than
 * what the state machine will count: record indexes are taken at their largest.
 */
export function growthBytes(c: Command, view: QuotaView): number {
  switch (c.type) {
    case 'kv.put':
      return kvPutGrowth(c.key, c.value, view);
    case 'kv.delete':
      return 0 - (view.kvMeta(c.key)?.sizeBytes ?? 0);
    case 'kv.txn':
      return c.ops.reduce((sum, op) => sum + (op.op === 'put' ? kvPutGrowth(op.key, op.value, view) : 0 - (view.kvMeta(op.key)?.sizeBytes ?? 0)), 0);
    case 'token.add':
      return recordSizeBytes({ ...c.token, createdIndex: ANY_INDEX });
    case 'token.revoke':
      return 0 - sizeOf(view.tokenById(c.id));
    case 'node.register': {
      const prev = view.node(c.node.id);
      const next = { ...c.node, role: prev?.role ?? 'learner', status: 'down', statusReason: '', root: false, joinedIndex: ANY_INDEX, updatedIndex: ANY_INDEX, ...(prev?.eligibility ? { eligibility: prev.eligibility } : {}) };
      return recordSizeBytes(next) - sizeOf(prev);
    }
    case 'node.status': {
      const prev = view.node(c.id);
      return prev ? recordSizeBytes({ ...prev, status: c.status, statusReason: c.reason ?? '', updatedIndex: ANY_INDEX }) - recordSizeBytes(prev) : 0;
    }
    // Changes of a few bytes in records bounded in number (nodes), or none at all (config).
    case 'node.remove':
    case 'node.eligibility':
    case 'cluster.init':
    case 'config.set':
    case 'root.retire':
      return 0;
  }
}

/** The kv keys a command writes (puts and deletes; a txn's ops), for the gate's in-flight tracking. */
export function kvKeysOf(c: Command): string[] {
  if (c.type === 'kv.put' || c.type === 'kv.delete') return [c.key];
  if (c.type === 'kv.txn') return c.ops.map((op) => op.key);
  return [];
}

/**
 * `view` with the given kv keys absent: the growth of a write to a key that writes still in
 * flight change is estimated as if the key held nothing (its full size), since what it will
 * replace when applied is not known yet (an earlier pending write may shrink or delete it).
 */
export function withoutKeys(view: QuotaView, keys: ReadonlyMap<string, unknown> | ReadonlySet<string>): QuotaView {
  return { kvMeta: (key) => (keys.has(key) ? undefined : view.kvMeta(key)), node: (id) => view.node(id), tokenById: (id) => view.tokenById(id) };
}

/**
 * QUOTA_EXCEEDED when `growth` more bytes would take the state (plus what is already
 * proposed and not applied yet, `pendingBytes`) past the principal's limit; undefined to admit.
 */
export function quotaRefusal(input: { principal: PrincipalKind; growthBytes: number; stateBytes: number; pendingBytes: number; quotaBytes: number }): CommandError | undefined {
  if (input.growthBytes <= 0) return undefined;
  const limit = limitBytes(input.principal, input.quotaBytes);
  const after = input.stateBytes + input.pendingBytes + input.growthBytes;
  if (after <= limit) return undefined;
  return {
    code: 'QUOTA_EXCEEDED',
    message:
      `the cluster state holds ${input.stateBytes + input.pendingBytes} bytes; this write (+${input.growthBytes}) would pass its quota of ${limit} bytes. ` +
      'Delete keys or apps to free space (deletes are always accepted), or raise the quota: omni quota set SIZE (an admin)',
  };
}

function kvPutGrowth(key: string, value: string, view: QuotaView): number {
  const prev = view.kvMeta(key);
  const next = { key, value, version: (prev?.version ?? 0) + 1, createIndex: ANY_INDEX, modIndex: ANY_INDEX };
  return kvRecordSizeBytes(next) - (prev?.sizeBytes ?? 0);
}

function sizeOf(r: object | undefined): number {
  return r ? recordSizeBytes(r) : 0;
}
