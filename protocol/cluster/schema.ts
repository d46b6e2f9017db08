// The command schema: which replicated-command fields every member can decode (etcd's cluster
// version, for Omni's commands). The protobuf and JSON readers refuse a field they do not know —
// on purpose, so no member silently drops part of a command — so a field added by a newer
// omnid must not reach the log while an older member could apply it: the older member would
// refuse the entry and its state would differ from the others'. Each omnid speaks
// COMMAND_SCHEMA and announces it in its heartbeat; the cluster's schema is the lowest of its
// members' (a member not heard from counts as schema 1, the first); a field of schema N is
// written only once the cluster's schema is at least N, and a node that speaks less than the
// cluster's schema is refused at join (its replica could not read the state). Pure.
import type { NodeResources } from './commands.js';

/**
 * This build's schema. 1: before node drivers; 2: NodeResources.drivers; 3:
 * ConfigSetCommand.maxStateBytes; 4: the apps' records in protobuf in kv puts (KvPutCommand.record,
 * KvTxnPut.record).
 */
export const COMMAND_SCHEMA = 4;
/** The schema that introduced a field (written only at or above it). */
export const SCHEMA_NODE_DRIVERS = 2;
export const SCHEMA_QUOTA_SET = 3;
export const SCHEMA_RECORDS = 4;

/**
 * The cluster's schema as `selfId` sees it: the lowest of its members' that have not left
 * (`peerSchema` undefined: not heard from, counts as 1); 1 while this node is not a member.
 */
export function clusterSchema(selfId: string, members: readonly { id: string; status: string }[], peerSchema: (id: string) => number | undefined): number {
  const live = members.filter((m) => m.status !== 'left');
  if (!live.some((m) => m.id === selfId)) return 1;
  let min = COMMAND_SCHEMA;
  for (const m of live) if (m.id !== selfId) min = Math.min(min, peerSchema(m.id) ?? 1);
  return min;
}

/** A node's resources as a command of `schema` may carry them (fields of a later schema left out). */
export function resourcesForSchema(r: NodeResources, schema: number): NodeResources {
  if (schema >= SCHEMA_NODE_DRIVERS || r.drivers === undefined) return r;
  const { drivers: _drivers, ...rest } = r;
  return rest;
}

/** A schema number from an untrusted message (a heartbeat, a join request): absent or malformed is 1. */
export function readSchema(v: unknown): number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 1_000_000 ? v : 1;
}
