// The replicated cluster state machine (Nomad FSM style: one switch over command types).
// Every node applies the committed Raft entries, in log order, to its own ClusterState, so
// the machine is pure and deterministic: no I/O, no clock, no randomness, and the same
// sequence of apply / applyConfChange calls yields the same results and the same snapshot
// bytes on every replica.
//
// apply never throws, whatever the bytes: a command that does not decode or does not
// hold fails with an error result and leaves the state as it was (only appliedIndex moves
// on, since the entry was applied). Each handler checks everything before it changes
// anything, and records are replaced whole, never mutated in place, so queries can share
// nothing with callers (they hand out copies).

import { TASK_PREFIX } from '../apps/model.js';
import { AppTables, TABLE_PREFIXES } from '../apps/tables.js';
import { CorruptPageError, KvIndex, PAGE_ROW_PREFIX, type KvEntry, type Page } from './kv-index.js';
import { KvSpace, type RowValue } from './kv-space.js';
import { RECORD_ROW_PREFIX, RecordStore } from './record-store.js';
import { CONFIG_ROW, RECORD_ROW_MESSAGES, isBinaryRow, messageOfRow, protobufRow, rowKindOf } from './row-format.js';
import { recordKindOf } from '../apps/record-codec.js';
import {
  DEFAULT_VOTER_TARGET,
  InvalidFieldError,
  MAX_VOTER_TARGET,
  MIN_VOTER_TARGET,
  decodeCommand,
  decodeMessage,
  encodeMessage,
  isNodeId,
  isOddVoterTarget,
  isPlainObject,
  parseJson,
  quote,
  readBoolean,
  NODE_ELIGIBILITIES,
  readClusterId,
  readKvKey,
  readKvValue,
  readNodeId,
  readNodeRegistrationFields,
  readNumber,
  readObject,
  readOneOf,
  readSafeInt,
  readStatusReason,
  readTokenGrant,
  utf8SizeBytes,
  jsonStringBytes,
  type ApplyResult,
  type ClusterConfig,
  type ClusterInitCommand,
  type ConfigSetCommand,
  type Command,
  type KvDeleteCommand,
  type KvTxnCommand,
  type KvPutCommand,
  type KvRecord,
  type NodeRecord,
  type NodeEligibilityCommand,
  type NodeRegisterCommand,
  type NodeRole,
  type NodeStatusCommand,
  type TokenAddCommand,
  type TokenRecord,
} from './commands.js';
import { SCHEMA_QUOTA_SET, SCHEMA_RECORDS } from './schema.js';

export {
  COMMAND_TYPES,
  CommandEncodeError,
  DEFAULT_VOTER_TARGET,
  MAX_API_URL_CHARS,
  MAX_ARCH_CHARS,
  MAX_CLUSTER_ID_CHARS,
  MAX_COMMAND_BYTES,
  MAX_CPU_CORES,
  MAX_GPU_MODEL_CHARS,
  MAX_KV_KEY_BYTES,
  MAX_KV_VALUE_BYTES,
  MAX_LABEL_KEY_CHARS,
  MAX_LABEL_VALUE_CHARS,
  MAX_NODE_ADDRS,
  MAX_NODE_ADDR_CHARS,
  MAX_NODE_GPUS,
  MAX_NODE_ID_CHARS,
  MAX_NODE_LABELS,
  MAX_NODE_NAME_CHARS,
  MAX_STATUS_REASON_CHARS,
  MAX_TOKEN_ID_CHARS,
  MAX_TOKEN_NAME_CHARS,
  MAX_VOTER_TARGET,
  MIN_VOTER_TARGET,
  decodeCommand,
  encodeCommand,
} from './commands.js';
export type {
  KvCompare,
  KvTxnOp,
  KvTxnCommand,
  ApplyResult,
  ClusterConfig,
  Command,
  CommandError,
  CommandType,
  DecodeResult,
  GpuInfo,
  KvRecord,
  NodeEligibility,
  NodeRecord,
  NodeRegistration,
  NodeResources,
  NodeRole,
  NodeStatus,
  TokenGrant,
  TokenRecord,
  TokenRole,
} from './commands.js';

// ---------------------------------------------------------------------------
// Limits

/** Most node records, 'left' ones included. */
export const MAX_NODES = 10_000;
export const MAX_TOKENS = 10_000;
/** Most kv keys: each costs about 110 bytes of memory (its metadata stays in memory, as etcd's index; see kv-index.ts). */
export const MAX_KV_KEYS = 2_000_000;
/**
 * Most bytes of encoded node, token and kv records: the state machine's hard limit (etcd's
 * suggested maximum). A command that would grow the state past it fails RESOURCE_EXHAUSTED; the
 * quota (below) stops writes well before. The state lives in rows on disk and snapshots stream
 * row by row, so nothing needs it in memory or in one message.
 */
export const MAX_STATE_BYTES = 8 * 1024 ** 3;
/**
 * Room kept above the state quota (protocol/cluster/quota.ts) for the cluster's own writes:
 * members reporting about themselves, the leader's autopilot and orchestrator. An admin's
 * writes stop at the quota; theirs stop at the quota plus this, and never past MAX_STATE_BYTES.
 */
export const STATE_RESERVE_BYTES = 2 * 1024 * 1024;
/** The state quota without omnid init --max-state-bytes (etcd's default, 2 GiB), and its bounds. */
export const DEFAULT_MAX_STATE_BYTES = 2 * 1024 ** 3;
export const MIN_MAX_STATE_BYTES = 64 * 1024;
export const MAX_MAX_STATE_BYTES = MAX_STATE_BYTES - STATE_RESERVE_BYTES;
/**
 * Largest whole snapshot restore accepts: one travelling inside a Raft message (the simulator,
 * and a data dir written before the state lived in rows). Streamed snapshots have no such bound.
 */
export const MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024;
export const SNAPSHOT_FORMAT = 'omni.cluster-state';
export const SNAPSHOT_VERSION = 1;

// ---------------------------------------------------------------------------
// Types

export type ConfChangeKind = 'addVoter' | 'addLearner' | 'remove';
export interface StateConfChange { type: ConfChangeKind; node: string }

/** Snapshot bytes that do not describe a valid state. */
export class StateRestoreError extends Error {
  readonly code = 'BAD_SNAPSHOT';
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'StateRestoreError';
  }
}

type PendingRole = Exclude<NodeRole, 'none'>;

const CONF_ROLES: ReadonlyMap<unknown, NodeRole> = new Map<unknown, NodeRole>([
  ['addVoter', 'voter'],
  ['addLearner', 'learner'],
  ['remove', 'none'],
]);

const utf8Encoder = new TextEncoder();
/** Strict, and a leading U+FEFF is part of the text (a value may start with one). */
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Key prefixes of the cluster's own records (apps, tasks, the registry's catalog), read
 * synchronously by the orchestrator, agents and registry: their values stay in memory until
 * they move to typed tables of their own.
 */
export const RESIDENT_KV_PREFIXES: readonly string[] = ['apps/', 'appspecs/', 'tasks/', 'taskstatus/', 'volumes/', 'sched/', 'registry/', 'stacks/'];

/** How a state keeps kv values. */
export interface StateOptions {
  /**
   * Values longer than this (UTF-16 code units) live on disk only (RaftNode); undefined: all in
   * memory. A transaction that compares a spilled value needs it given to apply() (NeedsValues).
   */
  spillValuesOverBytes?: number;
  /**
   * kv pages kept parsed in memory at once (kv-index.ts, DEFAULT_MAX_OPEN_PAGES); the others stay as
   * their row text. Local: replicas may differ.
   */
  kvMaxOpenPages?: number;
  /** Lower hard limits (tests of the limits); every replica must use the same. */
  maxKvKeys?: number;
  maxStateBytes?: number;
}

/** Metadata of a kv record: everything but its value. */
export interface KvMeta {
  key: string;
  version: number;
  createIndex: number;
  modIndex: number;
  /** Bytes the record counts in the state. */
  sizeBytes: number;
}

/** A kv change not yet handed out as rows: the entry and its whole value (null: deleted). */
type KvChange = { entry: KvEntry; value: string } | null;

/** A kv value asked of the state that lives on disk only (read it with RaftNode.kvGet). */
export class SpilledValueError extends Error {
  readonly code = 'INTERNAL';
  constructor(key: string) {
    super(`the value of kv key ${quote(key.slice(0, 200))} is on disk, not in memory: read it through the node`);
    this.name = 'SpilledValueError';
  }
}

/**
 * apply() of a transaction that compares values living on disk only (spilled): nothing was
 * applied (the applied index did not move); apply again with those keys' current values.
 */
export interface NeedsValues {
  ok: false;
  error: { code: 'NEEDS_VALUES'; message: string };
  needsValues: string[];
}

export function needsValues(r: ApplyResult): r is NeedsValues {
  return !r.ok && r.error.code === 'NEEDS_VALUES' && Array.isArray((r as Partial<NeedsValues>).needsValues);
}

/** The record with its value, or undefined when its value is on disk only. */
function recordInMemory(e: KvEntry): KvRecord | undefined {
  // Read once: a record's value is rendered from its protobuf on every read (record-store.ts).
  const value = e.value;
  return value === undefined ? undefined : { key: e.key, value, version: e.version, createIndex: e.createIndex, modIndex: e.modIndex };
}

function recordOf(e: KvEntry): KvRecord {
  const r = recordInMemory(e);
  if (!r) throw new SpilledValueError(e.key);
  return r;
}

function metaOf(e: KvEntry): KvMeta {
  return { key: e.key, version: e.version, createIndex: e.createIndex, modIndex: e.modIndex, sizeBytes: e.sizeBytes };
}

/** Rows of one kv record each (JSON), as written before pages (kv-index.ts): still read, and converted. */
const KV_ROW_PREFIX = 'k/';
const VALUE_ROW_PREFIX = 'v/';
/** The row of a spilled value. */
export const valueRow = (key: string): string => `${VALUE_ROW_PREFIX}${key}`;
const nodeRow = (id: string): string => `n/${id}`;
const pendingRoleRow = (id: string): string => `p/${id}`;
const tokenRow = (id: string): string => `t/${id}`;

// ---------------------------------------------------------------------------
// The state machine

export class ClusterState {
  #appliedIndex = 0;
  #config: ClusterConfig = initialConfig();
  readonly #nodes = new Map<string, NodeRecord>();
  /** Roles from conf changes for nodes not registered yet; node.register picks them up. */
  readonly #pendingRoles = new Map<string, PendingRole>();
  readonly #tokens = new Map<string, TokenRecord>();
  readonly #tokenIdByHash = new Map<string, string>();
  /** The kv records in UTF-16 code unit order: the apps' records in rows of their own, the others in pages (kv-space.ts). */
  #kv: KvSpace;
  readonly #options: StateOptions;
  /** Typed tables of the apps' records with their secondary indexes (protocol/apps/tables.ts). */
  readonly #tables = new AppTables();
  #sizeBytes = 0;
  /** Rows other than kv ones changed since the last takeChangedRows() (row key → record, or null when deleted). */
  readonly #changed = new Map<string, object | null>();
  /** Kv records changed since the last takeChangedRows(), by key (their pages are dirty in #kv). */
  readonly #kvChanged = new Map<string, KvChange>();
  /** Rows of an older format read by fromRows, deleted by the next takeChangedRows() (which writes their pages). */
  #legacyRows: string[] = [];

  constructor(options: StateOptions = {}) {
    this.#options = options;
    this.#kv = new KvSpace(new KvIndex(options.kvMaxOpenPages));
  }

  get #maxKvKeys(): number {
    return this.#options.maxKvKeys ?? MAX_KV_KEYS;
  }

  get #maxStateBytes(): number {
    return this.#options.maxStateBytes ?? MAX_STATE_BYTES;
  }

  /** Index of the last entry applied (normal or conf change); 0 before the first. */
  get appliedIndex(): number {
    return this.#appliedIndex;
  }

  /** Encoded size of the node, token and kv records: what MAX_STATE_BYTES bounds. */
  get sizeBytes(): number {
    return this.#sizeBytes;
  }

  /**
   * Applies a normal entry. index must be above appliedIndex (else STALE_INDEX, or
   * INVALID_INDEX when not a positive safe integer, and nothing changes). Empty data (the
   * leader's no-op entry) only advances appliedIndex. Never throws.
   *
   * A kv.txn that compares the value of a key whose value is on disk only (spilled) returns
   * NeedsValues and changes nothing, unless `values` holds those keys' current values (the
   * caller reads them from its store and applies again).
   */
  apply(index: number, data: Uint8Array, values?: ReadonlyMap<string, string>): ApplyResult {
    const refused = this.#checkIndex(index);
    if (refused) return refused;
    if (data instanceof Uint8Array && data.byteLength === 0) {
      this.#appliedIndex = index;
      return { ok: true };
    }
    const decoded = decodeCommand(data);
    if (decoded.ok && decoded.command.type === 'kv.txn') {
      const missing = this.#spilledCompares(decoded.command).filter((k) => !values?.has(k));
      if (missing.length > 0) {
        const needs: NeedsValues = { ok: false, error: { code: 'NEEDS_VALUES', message: `the transaction compares ${missing.length} value(s) kept on disk only` }, needsValues: missing };
        return needs;
      }
    }
    this.#appliedIndex = index;
    if (!decoded.ok) return decoded;
    // A record in protobuf is in the log now (schema 4): no member below it may join from here on.
    if (decoded.usesRecords && (this.#config.minSchema ?? 1) < SCHEMA_RECORDS) this.#setConfig({ ...this.#config, minSchema: SCHEMA_RECORDS });
    return this.#execute(index, decoded.command, values);
  }

  /** Keys whose value a transaction compares while the value is on disk only. */
  #spilledCompares(c: KvTxnCommand): string[] {
    const keys: string[] = [];
    for (const cmp of c.compares) {
      // The apps' records are always in memory (they never spill).
      if (!('value' in cmp) || keys.includes(cmp.key) || recordKindOf(cmp.key)) continue;
      const rec = this.#kv.get(cmp.key);
      if (rec && rec.value === undefined) keys.push(cmp.key);
    }
    return keys;
  }

  /**
   * Applies a committed conf change: the node's role becomes voter / learner / none. For an
   * id not registered yet the role is remembered until it registers. An unknown change type
   * or an id that is not a node id changes nothing but appliedIndex (INVALID_ARGUMENT).
   */
  applyConfChange(index: number, cc: StateConfChange): ApplyResult {
    const refused = this.#advance(index);
    if (refused) return refused;
    const role = isPlainObject(cc) ? CONF_ROLES.get(cc.type) : undefined;
    if (role === undefined) return fail('INVALID_ARGUMENT', 'conf change: type must be addVoter, addLearner or remove');
    if (!isNodeId(cc.node)) return fail('INVALID_ARGUMENT', 'conf change: node must be a node id');
    const node = this.#nodes.get(cc.node);
    if (node) {
      this.#storeNode(index, { ...node, role }, node);
    } else if (role === 'none') {
      this.#deletePendingRole(cc.node);
    } else if (this.#pendingRoles.has(cc.node) || this.#pendingRoles.size < MAX_NODES) {
      this.#pendingRoles.set(cc.node, role);
      this.#changed.set(pendingRoleRow(cc.node), { id: cc.node, role });
    }
    return { ok: true };
  }

  #advance(index: number): ApplyResult | undefined {
    const refused = this.#checkIndex(index);
    if (!refused) this.#appliedIndex = index;
    return refused;
  }

  #checkIndex(index: number): ApplyResult | undefined {
    if (typeof index !== 'number' || !Number.isSafeInteger(index) || index < 1) {
      return fail('INVALID_INDEX', `index must be a positive integer, got ${typeof index === 'number' ? String(index) : typeof index}`);
    }
    if (index <= this.#appliedIndex) {
      return fail('STALE_INDEX', `index ${index} is not above the applied index ${this.#appliedIndex}`);
    }
    return undefined;
  }

  #execute(index: number, c: Command, values: ReadonlyMap<string, string> | undefined): ApplyResult {
    switch (c.type) {
      case 'cluster.init': return this.#clusterInit(index, c);
      case 'config.set': return this.#configSet(c);
      case 'root.retire': return this.#rootRetire(index);
      case 'node.register': return this.#nodeRegister(index, c);
      case 'node.status': return this.#nodeStatus(index, c);
      case 'node.remove': return this.#nodeRemove(index, c.id);
      case 'node.eligibility': return this.#nodeEligibility(index, c);
      case 'token.add': return this.#tokenAdd(index, c);
      case 'token.revoke': return this.#tokenRevoke(c.id);
      case 'kv.put': return this.#kvPut(index, c);
      case 'kv.delete': return this.#kvDelete(c);
      case 'kv.txn': return this.#kvTxn(index, c, values);
      default: return fail('UNKNOWN_COMMAND', `unknown command type ${quote(String((c as { type: unknown }).type))}`);
    }
  }

  // -- cluster -------------------------------------------------------------

  #clusterInit(index: number, c: ClusterInitCommand): ApplyResult {
    if (this.#config.clusterId !== '') {
      return fail('ALREADY_INITIALIZED', `cluster ${quote(this.#config.clusterId)} is already initialized`);
    }
    const bad = checkVoterTarget(c.voterTarget) ?? checkMaxStateBytes(c.maxStateBytes);
    if (bad) return bad;
    this.#setConfig({
      clusterId: c.clusterId,
      voterTarget: c.voterTarget,
      rootNodeId: c.rootNodeId,
      rootRetired: false,
      ephemeralRoot: c.ephemeralRoot,
      ...(c.maxStateBytes !== undefined ? { maxStateBytes: c.maxStateBytes } : {}),
    });
    const root = this.#nodes.get(c.rootNodeId);
    if (root) this.#storeNode(index, { ...root, root: true }, root);
    return { ok: true };
  }

  #configSet(c: ConfigSetCommand): ApplyResult {
    const bad = checkVoterTarget(c.voterTarget) ?? checkMaxStateBytes(c.maxStateBytes);
    if (bad) return bad;
    const next: ClusterConfig = { ...this.#config, voterTarget: c.voterTarget };
    if (c.maxStateBytes !== undefined) {
      next.maxStateBytes = c.maxStateBytes;
      // A field of schema 3 is in the log now: no member below it may join from here on.
      next.minSchema = Math.max(this.#config.minSchema ?? 1, SCHEMA_QUOTA_SET);
    }
    this.#setConfig(next);
    return { ok: true };
  }

  #rootRetire(index: number): ApplyResult {
    if (this.#config.rootRetired) return { ok: true };
    this.#setConfig({ ...this.#config, rootRetired: true });
    const root = this.#nodes.get(this.#config.rootNodeId);
    if (root) this.#storeNode(index, { ...root, root: false }, root);
    return { ok: true };
  }

  // -- nodes ---------------------------------------------------------------

  #nodeRegister(index: number, c: NodeRegisterCommand): ApplyResult {
    const reg = c.node;
    const prev = this.#nodes.get(reg.id);
    const holder = this.#liveNodeNamed(reg.name);
    if (holder && holder.id !== reg.id) {
      return fail('NAME_TAKEN', `node name ${quote(reg.name)} is taken by node ${holder.id}`);
    }
    if (!prev && this.#nodes.size >= MAX_NODES) {
      return fail('RESOURCE_EXHAUSTED', `the cluster already holds the maximum of ${MAX_NODES} nodes`);
    }
    const next: NodeRecord = {
      ...reg,
      role: prev ? prev.role : (this.#pendingRoles.get(reg.id) ?? 'none'),
      status: 'up',
      statusReason: '',
      root: reg.id === this.#config.rootNodeId && !this.#config.rootRetired,
      joinedIndex: prev ? prev.joinedIndex : index,
      updatedIndex: index,
    };
    // A restart re-registers: a drain or ineligibility set by an operator stays.
    if (prev?.eligibility) next.eligibility = prev.eligibility;
    const full = this.#overBudget(next, prev);
    if (full) return full;
    this.#deletePendingRole(reg.id);
    return { ok: true, value: copyNode(this.#storeNode(index, next, prev)) };
  }

  #nodeStatus(index: number, c: NodeStatusCommand): ApplyResult {
    const node = this.#nodes.get(c.id);
    if (!node) return fail('NOT_FOUND', `node ${c.id} not found`);
    if (node.status === 'left') return fail('CONFLICT', `node ${c.id} has left the cluster; it must register again`);
    this.#storeNode(index, { ...node, status: c.status, statusReason: c.reason ?? '' }, node);
    return { ok: true };
  }

  #nodeRemove(index: number, id: string): ApplyResult {
    const node = this.#nodes.get(id);
    if (!node) return fail('NOT_FOUND', `node ${id} not found`);
    this.#storeNode(index, { ...node, status: 'left', statusReason: '', role: 'none' }, node);
    return { ok: true };
  }

  #nodeEligibility(index: number, c: NodeEligibilityCommand): ApplyResult {
    const node = this.#nodes.get(c.id);
    if (!node) return fail('NOT_FOUND', `node ${c.id} not found`);
    if (node.status === 'left') return fail('CONFLICT', `node ${c.id} has left the cluster`);
    const current = node.eligibility ?? 'eligible';
    if (c.expected !== undefined && c.expected !== current) return fail('CONFLICT', `node ${c.id} is ${current}, not ${c.expected}`);
    const { eligibility: _, ...rest } = node;
    const next: NodeRecord = c.eligibility === 'eligible' ? rest : { ...rest, eligibility: c.eligibility };
    const full = this.#overBudget(next, node);
    if (full) return full;
    this.#storeNode(index, next, node);
    return { ok: true };
  }

  /** Stores next in place of prev, stamped with index, unless only updatedIndex would differ. */
  #storeNode(index: number, next: NodeRecord, prev: NodeRecord | undefined): NodeRecord {
    if (prev && sameRecord({ ...next, updatedIndex: prev.updatedIndex }, prev)) return prev;
    const stamped = { ...next, updatedIndex: index };
    this.#sizeBytes += recordSizeBytes(stamped) - (prev ? recordSizeBytes(prev) : 0);
    this.#nodes.set(stamped.id, stamped);
    this.#changed.set(nodeRow(stamped.id), stamped);
    return stamped;
  }

  #setConfig(config: ClusterConfig): void {
    this.#config = config;
    this.#changed.set(CONFIG_ROW, config);
  }

  #deletePendingRole(id: string): void {
    if (this.#pendingRoles.delete(id)) this.#changed.set(pendingRoleRow(id), null);
  }

  #liveNodeNamed(name: string): NodeRecord | undefined {
    for (const n of this.#nodes.values()) if (n.name === name && n.status !== 'left') return n;
    return undefined;
  }

  // -- tokens --------------------------------------------------------------

  #tokenAdd(index: number, c: TokenAddCommand): ApplyResult {
    const t = c.token;
    if (this.#tokens.has(t.id)) return fail('CONFLICT', `token ${t.id} already exists`);
    const sameHash = this.#tokenIdByHash.get(t.hash);
    if (sameHash !== undefined) return fail('CONFLICT', `token ${sameHash} already has this hash`);
    if (this.#tokens.size >= MAX_TOKENS) {
      return fail('RESOURCE_EXHAUSTED', `the cluster already holds the maximum of ${MAX_TOKENS} tokens`);
    }
    const record: TokenRecord = { ...t, createdIndex: index };
    const full = this.#overBudget(record, undefined);
    if (full) return full;
    this.#tokens.set(t.id, record);
    this.#tokenIdByHash.set(t.hash, t.id);
    this.#sizeBytes += recordSizeBytes(record);
    this.#changed.set(tokenRow(t.id), record);
    return { ok: true };
  }

  #tokenRevoke(id: string): ApplyResult {
    const t = this.#tokens.get(id);
    if (!t) return fail('NOT_FOUND', `token ${id} not found`);
    this.#tokens.delete(id);
    this.#tokenIdByHash.delete(t.hash);
    this.#sizeBytes -= recordSizeBytes(t);
    this.#changed.set(tokenRow(id), null);
    return { ok: true };
  }

  // -- kv ------------------------------------------------------------------

  #kvPut(index: number, c: KvPutCommand): ApplyResult {
    const prev = this.#kv.get(c.key);
    const version = prev ? prev.version : 0;
    const mismatch = checkExpectedVersion(c.key, c.expectedVersion, version);
    if (mismatch) return mismatch;
    if (!prev && this.#kv.size >= this.#maxKvKeys) {
      return fail('RESOURCE_EXHAUSTED', `the kv store already holds the maximum of ${this.#maxKvKeys} keys`);
    }
    if (version >= Number.MAX_SAFE_INTEGER) return fail('RESOURCE_EXHAUSTED', `kv key ${quote(c.key)}: version overflow`);
    const record: KvRecord = {
      key: c.key,
      value: c.value,
      version: version + 1,
      createIndex: prev ? prev.createIndex : index,
      modIndex: index,
    };
    const nextBytes = kvRecordSizeBytes(record);
    const prevBytes = prev ? prev.sizeBytes : 0;
    const full = this.#overBudgetBy(nextBytes, prevBytes);
    if (full) return full;
    this.#sizeBytes += nextBytes - prevBytes;
    const next = this.#entryOf(record, nextBytes);
    this.#kv.set(next);
    this.#mirrorKv(c.key, c.value);
    this.#kvChanged.set(c.key, { entry: next, value: c.value });
    return { ok: true, value: { key: c.key, version: next.version, modIndex: index } };
  }

  #kvDelete(c: KvDeleteCommand): ApplyResult {
    const prev = this.#kv.get(c.key);
    if (!prev) return fail('NOT_FOUND', `kv key ${quote(c.key)} not found`);
    const mismatch = checkExpectedVersion(c.key, c.expectedVersion, prev.version);
    if (mismatch) return mismatch;
    this.#kv.delete(c.key);
    this.#mirrorKv(c.key, undefined);
    this.#kvChanged.set(c.key, null);
    this.#sizeBytes -= prev.sizeBytes;
    return { ok: true, value: { key: c.key, version: prev.version } };
  }

  #kvTxn(index: number, c: KvTxnCommand, values: ReadonlyMap<string, string> | undefined): ApplyResult {
    for (const cmp of c.compares) {
      const rec = this.#kv.get(cmp.key);
      if ('value' in cmp) {
        // A spilled value was read from disk by the caller (apply checked it was given).
        if (!rec || (rec.value ?? values?.get(cmp.key)) !== cmp.value) return fail('CONFLICT', `kv key ${quote(cmp.key)} ${rec ? 'holds another value' : 'does not exist'}; the transaction expected a given value`);
        continue;
      }
      const current = rec?.version ?? 0;
      if (current !== cmp.version) {
        return fail('CONFLICT', `kv key ${quote(cmp.key)} is at version ${current}, the transaction expected ${cmp.version}`);
      }
    }
    // Check every limit before changing anything, so the transaction is all-or-nothing.
    let newKeys = 0;
    let sizeDelta = 0;
    for (const op of c.ops) {
      const prev = this.#kv.get(op.key);
      if (op.op === 'put') {
        if (!prev) newKeys++;
        const next = { key: op.key, value: op.value, version: (prev?.version ?? 0) + 1, createIndex: prev?.createIndex ?? index, modIndex: index };
        sizeDelta += kvRecordSizeBytes(next) - (prev ? prev.sizeBytes : 0);
      } else if (prev) {
        newKeys--;
        sizeDelta -= prev.sizeBytes;
      }
    }
    if (this.#kv.size + newKeys > this.#maxKvKeys) return fail('RESOURCE_EXHAUSTED', `the kv store would exceed the maximum of ${this.#maxKvKeys} keys`);
    if (sizeDelta > 0 && this.#sizeBytes + sizeDelta > this.#maxStateBytes) {
      return fail('RESOURCE_EXHAUSTED', `the cluster state would grow past the limit of ${this.#maxStateBytes} bytes`);
    }
    for (const op of c.ops) {
      if (op.op === 'put') this.#kvPut(index, { type: 'kv.put', key: op.key, value: op.value });
      else if (this.#kv.has(op.key)) this.#kvDelete({ type: 'kv.delete', key: op.key });
    }
    return { ok: true, value: { applied: c.ops.length, modIndex: index } };
  }

  /** The in-memory entry of a record: its value kept, or (a large value) only its metadata. */
  #entryOf(r: KvRecord, sizeBytes: number): KvEntry {
    const meta = { key: r.key, version: r.version, createIndex: r.createIndex, modIndex: r.modIndex, sizeBytes };
    return this.#spills(r.key, r.value) ? meta : { ...meta, value: r.value };
  }

  #spills(key: string, value: string): boolean {
    const over = this.#options.spillValuesOverBytes;
    return over !== undefined && value.length > over && !RESIDENT_KV_PREFIXES.some((p) => key.startsWith(p));
  }

  /** RESOURCE_EXHAUSTED when replacing prev by next would grow the state past MAX_STATE_BYTES. */
  #overBudget(next: object, prev: object | undefined): ApplyResult | undefined {
    return this.#overBudgetBy(recordSizeBytes(next), prev ? recordSizeBytes(prev) : 0);
  }

  #overBudgetBy(nextBytes: number, prevBytes: number): ApplyResult | undefined {
    const total = this.#sizeBytes - prevBytes + nextBytes;
    if (nextBytes <= prevBytes || total <= this.#maxStateBytes) return undefined;
    return fail('RESOURCE_EXHAUSTED', `the cluster state would grow to ${total} bytes, over the limit of ${this.#maxStateBytes} bytes`);
  }

  // -- queries (copies: callers cannot reach the state) ---------------------

  config(): ClusterConfig {
    return { ...this.#config };
  }

  node(id: string): NodeRecord | undefined {
    const n = this.#nodes.get(id);
    return n && copyNode(n);
  }

  /** How many node records there are, 'left' ones included (cheap: no copies). */
  nodeCount(): number {
    return this.#nodes.size;
  }

  /** All nodes, 'left' ones included, by name then id. */
  nodes(): NodeRecord[] {
    return [...this.#nodes.values()].sort((a, b) => compare(a.name, b.name) || compare(a.id, b.id)).map(copyNode);
  }

  /** The node holding the name; when none that has not left does, the last one that left. */
  nodeByName(name: string): NodeRecord | undefined {
    let best: NodeRecord | undefined;
    for (const n of this.#nodes.values()) {
      if (n.name !== name) continue;
      if (n.status !== 'left') return copyNode(n);
      if (!best || n.updatedIndex > best.updatedIndex || (n.updatedIndex === best.updatedIndex && n.id < best.id)) best = n;
    }
    return best && copyNode(best);
  }

  /** All tokens, by id. */
  tokens(): TokenRecord[] {
    return sortedKeys(this.#tokens).map((id) => ({ ...this.#tokens.get(id)! }));
  }

  tokenById(id: string): TokenRecord | undefined {
    const t = this.#tokens.get(id);
    return t && { ...t };
  }

  /** The token whose secret hashes (SHA-256, lowercase hex) to hash. */
  tokenByHash(hash: string): TokenRecord | undefined {
    const id = this.#tokenIdByHash.get(hash);
    return id === undefined ? undefined : this.tokenById(id);
  }

  /** Voters and learners as the applied conf changes (and snapshot) say, registered or not. */
  memberRoles(): { voters: string[]; learners: string[] } {
    const voters: string[] = [];
    const learners: string[] = [];
    const add = (id: string, role: NodeRole | PendingRole) => (role === 'voter' ? voters.push(id) : role === 'learner' ? learners.push(id) : 0);
    for (const [id, n] of this.#nodes) add(id, n.role);
    for (const [id, role] of this.#pendingRoles) add(id, role);
    return { voters: voters.sort(), learners: learners.sort() };
  }

  /**
   * The record at key. Only for keys whose value is kept in memory (RESIDENT_KV_PREFIXES, or a
   * state that does not spill): a value that lives on disk is read with RaftNode.kvGet, and
   * asking for it here is a programming error (SpilledValueError).
   */
  kvGet(key: string): KvRecord | undefined {
    const r = this.#kv.get(key);
    return r && recordOf(r);
  }

  /** The record at key when its value is in memory; undefined when absent or spilled. */
  kvInMemory(key: string): KvRecord | undefined {
    const r = this.#kv.get(key);
    return r && recordInMemory(r);
  }

  /**
   * The apps' typed tables and indexes (apps, tasks by node and by app, statuses by task, volume
   * pins), kept in step with every apply. Their records are frozen and shared: read, never change.
   */
  get tables(): AppTables {
    return this.#tables;
  }

  /**
   * Keys under apps/, tasks/ and taskstatus/ whose value is kept as text rather than protobuf
   * (it has no exact protobuf form: written by hand through the kv API, or by another build).
   */
  recordsKeptAsText(): string[] {
    return this.#kv.records.keptAsText();
  }

  /** Keys of the task records placed on a node (the tasks-by-node index), by key. */
  taskKeysOnNode(nodeId: string): string[] {
    return this.#tables.taskIdsOnNode(nodeId).map((id) => `${TASK_PREFIX}${id}`);
  }

  /** Mirrors a kv change into the typed tables (an app's record as the record store holds it: protobuf, not text). */
  #mirrorKv(key: string, value: string | undefined): void {
    this.#tables.onKv(key, value !== undefined && recordKindOf(key) ? this.#kv.records.held(key) : value);
  }

  /** The record at key without its value (always in memory), or undefined. */
  kvMeta(key: string): KvMeta | undefined {
    const r = this.#kv.get(key);
    return r && metaOf(r);
  }

  /** Up to limit records' metadata whose key starts with prefix, by key. */
  kvListMeta(prefix: string, limit: number): KvMeta[] {
    return this.#kvEntriesWith(prefix, limit).map(metaOf);
  }

  /** Bytes the record at key counts in the state (0: no such key). */
  kvSizeBytes(key: string): number {
    return this.#kv.get(key)?.sizeBytes ?? 0;
  }

  /**
   * The value of the record as it was last changed by an applied entry not yet handed out by
   * takeChangedRows() (undefined: not changed since, read it from the stored rows).
   */
  changedKvValue(key: string): { value: string | null } | undefined {
    const c = this.#kvChanged.get(key);
    if (c === undefined) return undefined;
    return { value: c === null ? null : c.value };
  }

  #kvEntriesWith(prefix: string, limit: number): KvEntry[] {
    const out: KvEntry[] = [];
    if (typeof prefix !== 'string' || !(limit > 0)) return out;
    for (const e of this.#kv.withPrefix(prefix)) {
      if (out.length >= limit) break;
      out.push(e);
    }
    return out;
  }

  /** Up to limit records whose key starts with prefix, by key (UTF-16 code unit order). */
  kvList(prefix: string, limit: number): KvRecord[] {
    return this.#kvEntriesWith(prefix, limit).map(recordOf);
  }

  /** Number of kv keys. */
  kvCount(): number {
    return this.#kv.size;
  }

  // -- snapshots -----------------------------------------------------------

  /** Canonical JSON (sorted keys, records in id / key order): same state, same bytes. */
  snapshot(): Uint8Array {
    const doc = {
      format: SNAPSHOT_FORMAT,
      version: SNAPSHOT_VERSION,
      appliedIndex: this.#appliedIndex,
      config: this.#config,
      nodes: sortedKeys(this.#nodes).map((id) => this.#nodes.get(id)!),
      pendingRoles: sortedKeys(this.#pendingRoles).map((id) => ({ id, role: this.#pendingRoles.get(id)! })),
      tokens: sortedKeys(this.#tokens).map((id) => this.#tokens.get(id)!),
      kv: [...this.#kv.entries()].map(recordOf),
    };
    return utf8Encoder.encode(canonicalJson(doc));
  }

  // -- rows on disk (node/raft: the state store) ------------------------------
  // The state is also kept as rows, so a node writes only what each Ready changed (with the
  // applied index, atomically) and starts from its rows instead of replaying its log. Row keys:
  // `cfg`, `n/<node id>`, `p/<node id>` (roles of unregistered nodes), `t/<token id>`, whose
  // values are the records' canonical JSON; `i/<page id>`, a page of kv records in key order
  // (kv-index.ts: keys, numbers, and each value or, when it spills (StateOptions), its hash); and
  // `v/<kv key>`, a spilled value — read from disk when asked for, never loaded at start.
  // Rows `k/<kv key>` (one JSON record each, written before pages) are still read, and replaced
  // by pages at the next takeChangedRows().

  /** The rows changed since the last call (null: deleted), and forgets them. */
  takeChangedRows(): Map<string, RowValue | null> {
    const out = new Map<string, RowValue | null>();
    for (const row of this.#legacyRows) out.set(row, null);
    this.#legacyRows = [];
    for (const [row, rec] of this.#changed) out.set(row, rec === null ? null : encodeRecordRow(row, rec));
    this.#changed.clear();
    for (const [key, change] of this.#kvChanged) {
      // A value row exists only for a spilled value (a key of a resident prefix never spills).
      if (change === null || change.entry.value === undefined || !RESIDENT_KV_PREFIXES.some((p) => key.startsWith(p))) {
        out.set(valueRow(key), change === null || change.entry.value !== undefined ? null : change.value);
      }
    }
    this.#kvChanged.clear();
    this.#kv.takeDirty(out);
    return out;
  }

  /** Whether rows changed since the last takeChangedRows(). */
  get hasChangedRows(): boolean {
    return this.#changed.size > 0 || this.#kvChanged.size > 0 || this.#kv.hasDirty || this.#legacyRows.length > 0;
  }

  /**
   * Every row of the state, by row key, values split off as `spillValuesOverBytes` says (this
   * state's option unless given), kv pages written from scratch. Only a state that holds all its
   * values can list them: one restored from a snapshot's bytes (else SpilledValueError).
   */
  *rows(spillValuesOverBytes = this.#options.spillValuesOverBytes): IterableIterator<[string, RowValue]> {
    const writer = new ClusterState({ ...this.#options, spillValuesOverBytes });
    const all: [string, RowValue][] = [[CONFIG_ROW, encodeRecordRow(CONFIG_ROW, this.#config)]];
    for (const [id, n] of this.#nodes) all.push([nodeRow(id), encodeRecordRow(nodeRow(id), n)]);
    for (const [id, role] of this.#pendingRoles) all.push([pendingRoleRow(id), encodeRecordRow(pendingRoleRow(id), { id, role })]);
    for (const [id, t] of this.#tokens) all.push([tokenRow(id), encodeRecordRow(tokenRow(id), t)]);
    const entries: KvEntry[] = [];
    for (const row of this.#kv.records.rows()) all.push(row);
    for (const e of this.#kv.pages.entries()) {
      const r = recordOf(e);
      const entry = writer.#entryOf(r, e.sizeBytes);
      entries.push(entry);
      if (entry.value === undefined) all.push([valueRow(r.key), r.value]);
    }
    for (const row of KvIndex.pageRows(entries)) all.push(row);
    all.sort((a, b) => compare(a[0], b[0]));
    yield* all;
  }

  /**
   * The state that `rows` (as rows() and takeChangedRows() wrote them) describe at
   * appliedIndex; StateRestoreError (BAD_SNAPSHOT) on a row that does not hold. Rows of the
   * older one-record-per-key format are read too; the state then has changed rows that replace
   * them by pages (write them, takeChangedRows(), to convert the store once).
   */
  static fromRows(appliedIndex: number, rows: Iterable<[string, RowValue]>, options: StateOptions = {}): ClusterState {
    const reader = ClusterState.rowsReader(appliedIndex, options);
    reader.add(rows);
    return reader.finish();
  }

  /**
   * fromRows a batch of rows at a time, as they are read (a start never holds every row):
   * add() each batch, in any order, then finish(). Both throw StateRestoreError. A row may be
   * given as its UTF-8 bytes: kv pages are then kept as such until first used.
   */
  static rowsReader(appliedIndex: number, options: StateOptions = {}): { add(rows: Iterable<[string, string | Uint8Array]>): void; finish(): ClusterState } {
    const guard = <T>(fn: () => T): T => {
      try {
        return fn();
      } catch (err) {
        if (err instanceof StateRestoreError) throw err;
        if (err instanceof InvalidFieldError || err instanceof CorruptPageError) throw new StateRestoreError(`state rows: ${err.message}`, { cause: err });
        throw new StateRestoreError('state rows: unreadable', { cause: err });
      }
    };
    const state = new ClusterState(options);
    const applied = guard(() => readSafeInt(appliedIndex, 'appliedIndex', 0));
    const byKind = new Map<string, [string, unknown][]>();
    const values = new Map<string, string>();
    const pages: Page[] = [];
    const records = new RecordStore();
    let jsonRecordRows = false;
    let finished = false;
    const add = (rows: Iterable<[string, string | Uint8Array]>) => guard(() => {
      if (finished) throw new Error('rowsReader: add after finish');
      for (const [row, data] of rows) {
        if (row.startsWith(PAGE_ROW_PREFIX)) {
          pages.push(KvIndex.readPage(row, data));
          continue;
        }
        if (row.startsWith(RECORD_ROW_PREFIX)) {
          if (typeof data === 'string') throw new StateRestoreError(`state row ${quote(row.slice(0, 80))}: a record row is binary`);
          records.load(row, data, applied);
          continue;
        }
        if (row.startsWith(VALUE_ROW_PREFIX)) {
          // Spilled values: kept only by a state that does not spill (to describe it whole).
          if (options.spillValuesOverBytes === undefined) values.set(row.slice(VALUE_ROW_PREFIX.length), typeof data === 'string' ? data : strictUtf8.decode(data));
          continue;
        }
        const kind = rowKindOf(row);
        let value: unknown;
        const message = RECORD_ROW_MESSAGES.get(kind);
        if (message && typeof data !== 'string' && isBinaryRow(row, data)) value = decodeMessage(message, messageOfRow(data), row);
        else {
          const parsed = parseJson(typeof data === 'string' ? utf8Encoder.encode(data) : data);
          if (!parsed.ok) throw new StateRestoreError(`state row ${quote(row.slice(0, 80))}: not valid JSON`);
          value = parsed.value;
          // A record row of JSON text (written before they were protobuf): written again as protobuf.
          if (message) jsonRecordRows = true;
        }
        let list = byKind.get(kind);
        if (!list) byKind.set(kind, (list = []));
        list.push([row, value]);
      }
    });
    const finish = () => guard(() => {
      if (finished) throw new Error('rowsReader: finished twice');
      finished = true;
      const cfg = byKind.get(CONFIG_ROW);
      if (cfg) state.#config = readConfig(cfg[0][1], 'config');
      const load = (kind: string, fn: (v: unknown, path: string) => void) => {
        for (const [row, v] of byKind.get(kind) ?? []) fn(v, row);
        byKind.delete(kind);
      };
      load('n/', (v, path) => state.#loadNode(v, path, applied));
      load('p/', (v, path) => state.#loadPendingRole(v, path));
      load('t/', (v, path) => state.#loadToken(v, path, applied));
      state.#kv = new KvSpace(KvIndex.fromRead(pages, applied, state.#options.kvMaxOpenPages), records);
      state.#afterPagesLoaded(values);
      const legacy = byKind.get(KV_ROW_PREFIX) ?? [];
      load(KV_ROW_PREFIX, (v, path) => state.#loadKvRow(v, path, applied, values));
      byKind.delete(CONFIG_ROW);
      for (const [kind] of byKind) throw new StateRestoreError(`state row kind ${quote(kind)} is unknown`);
      if (state.#kv.size > state.#maxKvKeys) throw new StateRestoreError(`state rows: more than ${state.#maxKvKeys} kv records`);
      if (legacy.length > 0) {
        state.#legacyRows = legacy.map(([row]) => row);
        state.#kv.pages.markAllDirty();
        state.#kv.records.markAllDirty();
      } else {
        state.#kv.clearDirty();
      }
      if (jsonRecordRows) state.#rewriteRecordRows();
      // Records kept in pages (a store written before record rows): moved to rows of their own,
      // written by the next takeChangedRows() with their pages, in one batch.
      state.#moveRecordsOutOfPages();
      state.#appliedIndex = applied;
      return state;
    });
    return { add, finish };
  }

  /**
   * After pages are in #kv (before any legacy row): counts their bytes, indexes task records, and —
   * in a state that does not spill — takes spilled values back from their value rows.
   */
  #afterPagesLoaded(values: ReadonlyMap<string, string>): void {
    this.#sizeBytes += this.#kv.sumSizeBytes();
    this.#mirrorRecords();
    for (const prefix of TABLE_PREFIXES) {
      if (recordKindOf(prefix)) continue;
      for (const e of this.#kv.pages.entries(prefix)) {
        if (!e.key.startsWith(prefix)) break;
        if (e.value !== undefined) this.#mirrorKv(e.key, e.value);
      }
    }
    if (values.size === 0) return;
    const unspill: KvEntry[] = [];
    for (const e of this.#kv.pages.entries()) {
      const value = e.value === undefined ? values.get(e.key) : undefined;
      if (value !== undefined) unspill.push({ key: e.key, version: e.version, createIndex: e.createIndex, modIndex: e.modIndex, sizeBytes: e.sizeBytes, value });
    }
    for (const e of unspill) {
      readKvValue(e.value, valueRow(e.key));
      this.#kv.set(e);
      this.#mirrorKv(e.key, e.value);
    }
  }

  /** Marks the config, node, pending role and token rows changed (to write them again, as protobuf). */
  #rewriteRecordRows(): void {
    this.#changed.set(CONFIG_ROW, this.#config);
    for (const [id, n] of this.#nodes) this.#changed.set(nodeRow(id), n);
    for (const [id, role] of this.#pendingRoles) this.#changed.set(pendingRoleRow(id), { id, role });
    for (const [id, t] of this.#tokens) this.#changed.set(tokenRow(id), t);
  }

  /** Every record of the record store into the typed tables, as held (protobuf, not text). */
  #mirrorRecords(): void {
    for (const [key, held] of this.#kv.records.allHeld()) this.#tables.onKv(key, held);
  }

  /** Records found in kv pages (written before record rows) move to the record store. */
  #moveRecordsOutOfPages(): void {
    if (this.#kv.moveRecordsOutOfPages() > 0) this.#mirrorRecords();
  }

  /** The state a snapshot() describes; StateRestoreError (BAD_SNAPSHOT) on anything else. */
  static restore(bytes: Uint8Array, options: StateOptions = {}): ClusterState {
    try {
      if (!(bytes instanceof Uint8Array)) throw new StateRestoreError('snapshot: must be bytes');
      if (bytes.byteLength > MAX_SNAPSHOT_BYTES) {
        throw new StateRestoreError(`snapshot of ${bytes.byteLength} bytes exceeds the limit of ${MAX_SNAPSHOT_BYTES} bytes`);
      }
      const parsed = parseJson(bytes);
      if (!parsed.ok) throw new StateRestoreError('snapshot: not valid UTF-8 JSON');
      const state = new ClusterState(options);
      state.#load(parsed.value);
      return state;
    } catch (err) {
      if (err instanceof StateRestoreError) throw err;
      if (err instanceof InvalidFieldError) throw new StateRestoreError(`snapshot: ${err.message}`, { cause: err });
      throw new StateRestoreError('snapshot: unreadable', { cause: err });
    }
  }

  #load(doc: unknown): void {
    if (!isPlainObject(doc)) throw new StateRestoreError('snapshot: not a JSON object');
    if (doc.format !== SNAPSHOT_FORMAT) throw new StateRestoreError(`snapshot: format is not ${SNAPSHOT_FORMAT}`);
    if (doc.version !== SNAPSHOT_VERSION) throw new StateRestoreError(`snapshot: unsupported version (this build reads ${SNAPSHOT_VERSION})`);
    readObject(doc, '', ['format', 'version', 'appliedIndex', 'config', 'nodes', 'pendingRoles', 'tokens', 'kv']);
    const applied = readSafeInt(doc.appliedIndex, 'appliedIndex', 0);
    this.#config = readConfig(doc.config, 'config');
    for (const [i, v] of readList(doc.nodes, 'nodes', MAX_NODES)) this.#loadNode(v, `nodes[${i}]`, applied);
    for (const [i, v] of readList(doc.pendingRoles, 'pendingRoles', MAX_NODES)) this.#loadPendingRole(v, `pendingRoles[${i}]`);
    for (const [i, v] of readList(doc.tokens, 'tokens', MAX_TOKENS)) this.#loadToken(v, `tokens[${i}]`, applied);
    for (const [i, v] of readList(doc.kv, 'kv', this.#maxKvKeys)) this.#loadKv(v, `kv[${i}]`, applied);
    this.#kv.clearDirty();
    this.#appliedIndex = applied;
  }

  #loadNode(v: unknown, path: string, applied: number): void {
    const o = readObject(v, path, [
      'id', 'name', 'addrs', 'apiUrl', 'resources', 'labels',
      'role', 'status', 'statusReason', 'root', 'joinedIndex', 'updatedIndex',
    ], ['eligibility']);
    const joinedIndex = readIndex(o.joinedIndex, `${path}.joinedIndex`, 1, applied);
    const n: NodeRecord = {
      ...readNodeRegistrationFields(o, path),
      role: readOneOf(o.role, `${path}.role`, ['voter', 'learner', 'none'] as const),
      status: readOneOf(o.status, `${path}.status`, ['up', 'down', 'left'] as const),
      statusReason: readStatusReason(o.statusReason, `${path}.statusReason`),
      root: readBoolean(o.root, `${path}.root`),
      joinedIndex,
      updatedIndex: readIndex(o.updatedIndex, `${path}.updatedIndex`, joinedIndex, applied),
    };
    if (o.eligibility !== undefined) n.eligibility = readOneOf(o.eligibility, `${path}.eligibility`, NODE_ELIGIBILITIES.filter((e) => e !== 'eligible'));
    if (this.#nodes.has(n.id)) throw new InvalidFieldError(`${path}.id`, `duplicate node ${n.id}`);
    if (n.status !== 'left' && this.#liveNodeNamed(n.name)) throw new InvalidFieldError(`${path}.name`, `duplicate name ${quote(n.name)}`);
    if (n.root && (n.id !== this.#config.rootNodeId || this.#config.rootRetired)) {
      throw new InvalidFieldError(`${path}.root`, 'only the root node of config, before it retires, is root');
    }
    this.#nodes.set(n.id, n);
    this.#sizeBytes += recordSizeBytes(n);
  }

  #loadPendingRole(v: unknown, path: string): void {
    const o = readObject(v, path, ['id', 'role']);
    const id = readNodeId(o.id, `${path}.id`, false);
    const role = readOneOf(o.role, `${path}.role`, ['voter', 'learner'] as const);
    if (this.#nodes.has(id) || this.#pendingRoles.has(id)) throw new InvalidFieldError(`${path}.id`, `duplicate node ${id}`);
    this.#pendingRoles.set(id, role);
  }

  #loadToken(v: unknown, path: string, applied: number): void {
    const o = readObject(v, path, ['id', 'hash', 'role', 'name', 'createdIndex']);
    const t: TokenRecord = { ...readTokenGrant(o, path), createdIndex: readIndex(o.createdIndex, `${path}.createdIndex`, 1, applied) };
    if (this.#tokens.has(t.id)) throw new InvalidFieldError(`${path}.id`, `duplicate token ${t.id}`);
    if (this.#tokenIdByHash.has(t.hash)) throw new InvalidFieldError(`${path}.hash`, 'duplicate hash');
    this.#tokens.set(t.id, t);
    this.#tokenIdByHash.set(t.hash, t.id);
    this.#sizeBytes += recordSizeBytes(t);
  }

  #loadKv(v: unknown, path: string, applied: number): void {
    const o = readObject(v, path, ['key', 'value', 'version', 'createIndex', 'modIndex']);
    const createIndex = readIndex(o.createIndex, `${path}.createIndex`, 1, applied);
    const r: KvRecord = {
      key: readKvKey(o.key, `${path}.key`),
      value: readKvValue(o.value, `${path}.value`),
      version: readSafeInt(o.version, `${path}.version`, 1),
      createIndex,
      modIndex: readIndex(o.modIndex, `${path}.modIndex`, createIndex, applied),
    };
    if (this.#kv.has(r.key)) throw new InvalidFieldError(`${path}.key`, `duplicate key ${quote(r.key)}`);
    const sizeBytes = kvRecordSizeBytes(r);
    this.#kv.set(this.#entryOf(r, sizeBytes));
    this.#mirrorKv(r.key, r.value);
    this.#sizeBytes += sizeBytes;
  }

  /**
   * A `k/` row (the format before pages): a whole record, or the metadata of a spilled value
   * with its hash in hex (its value in `values` when kept).
   */
  #loadKvRow(v: unknown, path: string, applied: number, values: ReadonlyMap<string, string>): void {
    if (!isPlainObject(v) || !('valueHash' in v)) return this.#loadKv(v, path, applied);
    const o = readObject(v, path, ['key', 'version', 'createIndex', 'modIndex', 'sizeBytes', 'valueHash']);
    const createIndex = readIndex(o.createIndex, `${path}.createIndex`, 1, applied);
    const key = readKvKey(o.key, `${path}.key`);
    const value = values.get(key);
    if (value !== undefined) {
      return this.#loadKv({ key, value, version: o.version, createIndex: o.createIndex, modIndex: o.modIndex }, path, applied);
    }
    const e: KvEntry = {
      key,
      version: readSafeInt(o.version, `${path}.version`, 1),
      createIndex,
      modIndex: readIndex(o.modIndex, `${path}.modIndex`, createIndex, applied),
      sizeBytes: readSafeInt(o.sizeBytes, `${path}.sizeBytes`, 1),
    };
    // The hash of the value is not kept any more (a compare reads the value from disk).
    if (typeof o.valueHash !== 'string') throw new InvalidFieldError(`${path}.valueHash`, 'must be a string');
    if (this.#kv.has(e.key)) throw new InvalidFieldError(`${path}.key`, `duplicate key ${quote(e.key)}`);
    this.#kv.set(e);
    this.#sizeBytes += e.sizeBytes;
  }
}

// ---------------------------------------------------------------------------
// Helpers

function initialConfig(): ClusterConfig {
  return { clusterId: '', voterTarget: DEFAULT_VOTER_TARGET, rootNodeId: '', rootRetired: false, ephemeralRoot: false };
}

function fail(code: string, message: string): ApplyResult {
  return { ok: false, error: { code, message } };
}

function checkVoterTarget(n: number): ApplyResult | undefined {
  if (isOddVoterTarget(n)) return undefined;
  return fail('INVALID_ARGUMENT', `voterTarget: must be an odd integer from ${MIN_VOTER_TARGET} to ${MAX_VOTER_TARGET}, got ${n}`);
}

function checkMaxStateBytes(n: number | undefined): ApplyResult | undefined {
  if (n === undefined || (n >= MIN_MAX_STATE_BYTES && n <= MAX_MAX_STATE_BYTES)) return undefined;
  return fail('INVALID_ARGUMENT', `maxStateBytes: must be from ${MIN_MAX_STATE_BYTES} to ${MAX_MAX_STATE_BYTES}, got ${n}`);
}

function checkExpectedVersion(key: string, expected: number | undefined, current: number): ApplyResult | undefined {
  if (expected === undefined || expected === current) return undefined;
  return fail('CONFLICT', `kv key ${quote(key)}: expected version ${expected}, current version ${current}`);
}

function readConfig(v: unknown, path: string): ClusterConfig {
  const o = readObject(v, path, ['clusterId', 'voterTarget', 'rootNodeId', 'rootRetired', 'ephemeralRoot'], ['maxStateBytes', 'minSchema']);
  const voterTarget = readNumber(o.voterTarget, `${path}.voterTarget`);
  if (!isOddVoterTarget(voterTarget)) {
    throw new InvalidFieldError(`${path}.voterTarget`, `must be an odd integer from ${MIN_VOTER_TARGET} to ${MAX_VOTER_TARGET}`);
  }
  const config: ClusterConfig = {
    clusterId: readClusterId(o.clusterId, `${path}.clusterId`, true),
    voterTarget,
    rootNodeId: readNodeId(o.rootNodeId, `${path}.rootNodeId`, true),
    rootRetired: readBoolean(o.rootRetired, `${path}.rootRetired`),
    ephemeralRoot: readBoolean(o.ephemeralRoot, `${path}.ephemeralRoot`),
  };
  if (o.maxStateBytes !== undefined) {
    const n = readSafeInt(o.maxStateBytes, `${path}.maxStateBytes`, MIN_MAX_STATE_BYTES);
    if (n > MAX_MAX_STATE_BYTES) throw new InvalidFieldError(`${path}.maxStateBytes`, `must be at most ${MAX_MAX_STATE_BYTES}`);
    config.maxStateBytes = n;
  }
  if (o.minSchema !== undefined) {
    const n = readSafeInt(o.minSchema, `${path}.minSchema`, 1);
    if (n > 1_000_000) throw new InvalidFieldError(`${path}.minSchema`, 'must be at most 1000000');
    config.minSchema = n;
  }
  return config;
}

function readList(v: unknown, path: string, maxItems: number): IterableIterator<[number, unknown]> {
  if (!Array.isArray(v) || v.length > maxItems) throw new InvalidFieldError(path, `must be an array of at most ${maxItems} items`);
  return (v as unknown[]).entries();
}

function readIndex(v: unknown, path: string, min: number, max: number): number {
  const n = readSafeInt(v, path, min);
  if (n > max) throw new InvalidFieldError(path, `must be from ${min} to the applied index ${max}`);
  return n;
}

function copyNode(n: NodeRecord): NodeRecord {
  return {
    ...n,
    addrs: [...n.addrs],
    resources: { ...n.resources, gpus: n.resources.gpus.map((g) => ({ ...g })), ...(n.resources.drivers ? { drivers: [...n.resources.drivers] } : {}) },
    // Spread defines own properties, so a '__proto__' label is copied as a label.
    labels: { ...n.labels },
  };
}

/** UTF-16 code unit order: the same on every replica, unlike localeCompare. */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function sortedKeys(m: ReadonlyMap<string, unknown>): string[] {
  return [...m.keys()].sort(compare);
}


/** A config, node, pending role or token record as its row: protobuf (row-format.ts). */
function encodeRecordRow(row: string, rec: object): Uint8Array {
  const kind = rowKindOf(row);
  const message = RECORD_ROW_MESSAGES.get(kind);
  if (!message) throw new Error(`no record row kind for ${row}`);
  // Labels in key order: the same record gives the same bytes, whatever order they came in.
  const body = kind === 'n/' ? { ...rec, labels: Object.fromEntries(Object.entries((rec as NodeRecord).labels).sort((a, b) => compare(a[0], b[0]))) } : rec;
  return protobufRow(encodeMessage(message, body));
}

/** JSON with object keys sorted, so equal values encode to equal text. */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (isPlainObject(v)) {
    const parts = Object.keys(v).sort(compare).map((k) => `${JSON.stringify(k)}:${canonicalJson(v[k])}`);
    return `{${parts.join(',')}}`;
  }
  return JSON.stringify(v);
}

/** The fixed text of a kv record's canonical JSON: `{"createIndex":,"key":,"modIndex":,"value":,"version":}`. */
const KV_RECORD_JSON_FIXED_BYTES = '{"createIndex":,"key":,"modIndex":,"value":,"version":}'.length;

/**
 * recordSizeBytes of a kv record, counted without building its JSON (the hot path of every write,
 * on every node: building and measuring it was ~11 ms for a 1 MiB value).
 */
export function kvRecordSizeBytes(r: Pick<KvRecord, 'key' | 'value' | 'version' | 'createIndex' | 'modIndex'>): number {
  const digits = String(r.createIndex).length + String(r.modIndex).length + String(r.version).length;
  return KV_RECORD_JSON_FIXED_BYTES + digits + jsonStringBytes(r.key) + jsonStringBytes(r.value) + 1;
}

/** The bytes a record counts for in sizeBytes (its canonical JSON); quota.ts estimates with it. */
export function recordSizeBytes(r: object): number {
  return utf8SizeBytes(canonicalJson(r)) + 1;
}

function sameRecord(a: object, b: object): boolean {
  return canonicalJson(a) === canonicalJson(b);
}
