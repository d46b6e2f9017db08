// Garbage collection of the registry (`omni images gc`), the I/O around the pure plan of
// protocol/registry/gc.ts. Any node can run it:
//
// 1. Mark, after a linearizable read barrier, from this node's replica: tags (after the
//    retention policy), the images of every app version the state keeps (the versions running
//    tasks run among them), manifests younger than the grace period.
// 2. Remove the catalog records nothing references — retention's tags, manifests, blob records and
//    their repository links — in transactions through the leader that compare the version of
//    every key they delete and of the GC fence (registry/gc-fence, bumped by every write that
//    adds a reference: a push, a mount, an app deploy). A reference added after the mark makes the
//    transaction fail: the plan is marked again from the newer state (a few attempts).
// 3. Sweep: every member that is up (this node included) is asked to delete its own copies of
//    blobs the catalog no longer records. Each computes that from its own replica after its own
//    read barrier — so it sees the removals of step 2 — rather than from a list sent to it: the
//    mark set can be large, and a node deletes only what its own linearizable view says nothing
//    references, whatever a message says. A copy that arrived (or was pushed again) within the
//    grace period stays, as do uploads in progress (temp files, not in the store yet).
//
// A dry run does steps 1 and 3 without removing anything and reports what would go. A real run
// records itself (registry/gc-last: its number, grace and retention) between steps 2 and 3; every
// node keeps the number of the last run it swept after (DIR/registry/gc-swept), and one that was
// down or cut off during a run sweeps its own copies when it sees a newer record (catchUp).
//
// The policy saved in the cluster (registry/gc-policy, `omni images gc --save`) gives the grace
// period and retention of runs that do not set them, scheduled runs (node/registry/gc-schedule.ts)
// included.
import { OmniError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Caller } from '../cluster/caller.js';
import type { ClusterState, KvCompare, KvTxnOp } from '../../protocol/cluster/state.js';
import { MAX_TXN_COMPARES } from '../../protocol/cluster/commands.js';
import { parseRecord, specKey, SPEC_PREFIX } from '../../protocol/apps/model.js';
import type { AppSpec } from '../../protocol/apps/spec.js';
import { planGc, sweepDecision, MAX_GC_GRACE_MS, MAX_KEEP_LAST, type GcInput, type GcLink, type GcPlan } from '../../protocol/registry/gc.js';
import {
  blobKey,
  manifestKey,
  parseRepoLinkKey,
  parseTagKey,
  readRepoLink,
  readTagRecord,
  repoBlobKey,
  repoManifestKey,
  tagKey,
  GC_FENCE_KEY,
  REPO_BLOB_PREFIX,
  REPO_MANIFEST_PREFIX,
  TAG_PREFIX,
} from '../../protocol/registry/records.js';
import { listBlobRecords, listManifestRecords, type CatalogAccess } from './catalog.js';
import type { BlobStore } from './blob-store.js';
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../files.js';
import { DEFAULT_GC_GRACE_MS } from '../../protocol/registry/gc.js';
import { GC_LAST_KEY, GC_POLICY_KEY, readGcPolicy, readGcRunRecord, type GcPolicy, type GcRunRecord } from '../../protocol/registry/records.js';

/** Most entries one listing scans (the replicated state holds at most 100,000 keys). */
const MAX_SCAN = 100_000;
/** Times a run marks again after a reference was added under it. */
const MAX_ATTEMPTS = 5;
/** Deletions per transaction (each compares its key's version, plus the fence). */
const OPS_PER_TXN = MAX_TXN_COMPARES - 1;
/** Items listed per category in a report (counts and bytes are always complete). */
export const MAX_LISTED = 1000;
/** How long a member may take to sweep (the API answers within the CLI's 30 s; a slower node is reported, and finishes on its own). */
export const SWEEP_TIMEOUT_MS = 20_000;
export const SWEEP_RPC = 'registry-gc-sweep';

export interface GcOptions {
  dryRun: boolean;
  graceMs: number;
  /** Keep the last N tags of each repository (by push time); undefined: keep every tag. */
  keepLast?: number;
}

export interface SweepReport {
  node: string;
  /** Copies deleted from this node's store (a dry run: that would be), at most MAX_LISTED listed. */
  deleted: { digest: string; sizeBytes: number }[];
  deletedCount: number;
  deletedBytes: number;
  /** Copies kept: referenced, still recorded by the catalog, younger than the grace period. */
  kept: { live: number; recorded: number; young: number };
  error?: string;
}

export interface GcReport {
  dryRun: boolean;
  graceMs: number;
  keepLast: number | null;
  /** Catalog records removed (a dry run: that would be). */
  removed: {
    tags: { repository: string; tag: string; digest: string }[];
    manifests: string[];
    blobs: { digest: string; sizeBytes: number }[];
    links: number;
  };
  reclaimBytes: number;
  live: { manifests: number; blobs: number };
  keptYoung: { manifests: number; blobs: number };
  /** Marks done (more than one: references were added during the run). */
  attempts: number;
  nodes: SweepReport[];
}

/** Validates GC options from the API or a peer (untrusted). */
export function readGcOptions(v: unknown): GcOptions {
  const o = (v ?? {}) as Record<string, unknown>;
  if (typeof o !== 'object' || Array.isArray(o)) throw new OmniError('BAD_REQUEST', 'gc options must be a JSON object');
  for (const k of Object.keys(o)) if (!['dryRun', 'graceMs', 'keepLast'].includes(k)) throw new OmniError('BAD_REQUEST', `unknown field ${JSON.stringify(k.slice(0, 40))} (expected dryRun, graceMs, keepLast)`);
  const dryRun = o.dryRun ?? false;
  if (typeof dryRun !== 'boolean') throw new OmniError('BAD_REQUEST', 'dryRun: must be true or false');
  const graceMs = o.graceMs ?? 60 * 60 * 1000;
  if (typeof graceMs !== 'number' || !Number.isSafeInteger(graceMs) || graceMs < 0 || graceMs > MAX_GC_GRACE_MS) throw new OmniError('BAD_REQUEST', `graceMs: must be an integer from 0 to ${MAX_GC_GRACE_MS}`);
  const keepLast = o.keepLast ?? undefined;
  if (keepLast !== undefined && (typeof keepLast !== 'number' || !Number.isSafeInteger(keepLast) || keepLast < 0 || keepLast > MAX_KEEP_LAST)) throw new OmniError('BAD_REQUEST', `keepLast: must be an integer from 0 to ${MAX_KEEP_LAST}`);
  return { dryRun, graceMs, ...(keepLast !== undefined ? { keepLast: keepLast as number } : {}) };
}

/** A run asked for through the API: flags not given come from the saved policy. */
export interface GcRequest {
  dryRun: boolean;
  graceMs?: number;
  /** null: keep every tag (whatever the policy says). */
  keepLast?: number | null;
  /** Save graceMs and keepLast as the policy before running. */
  save: boolean;
}

/** Validates POST /v1/images/gc (untrusted). */
export function readGcRequest(v: unknown): GcRequest {
  const o = (v ?? {}) as Record<string, unknown>;
  if (typeof o !== 'object' || Array.isArray(o)) throw new OmniError('BAD_REQUEST', 'gc options must be a JSON object');
  const { save, keepLast, ...rest } = o;
  if (save !== undefined && typeof save !== 'boolean') throw new OmniError('BAD_REQUEST', 'save: must be true or false');
  const base = readGcOptions({ ...rest, ...(keepLast !== null ? { keepLast } : {}) });
  return {
    dryRun: base.dryRun,
    ...(rest.graceMs !== undefined ? { graceMs: base.graceMs } : {}),
    ...(keepLast === null ? { keepLast: null } : base.keepLast !== undefined ? { keepLast: base.keepLast } : {}),
    save: save === true,
  };
}

/** The options of a run: the request's, else the policy's, else the defaults (1 h, every tag kept). */
export function effectiveGcOptions(req: Omit<GcRequest, 'save'>, policy: GcPolicy | undefined): GcOptions {
  const graceMs = req.graceMs ?? policy?.graceMs ?? DEFAULT_GC_GRACE_MS;
  const keepLast = req.keepLast === null ? undefined : (req.keepLast ?? policy?.keepLast);
  return { dryRun: req.dryRun, graceMs, ...(keepLast !== undefined ? { keepLast } : {}) };
}

/** The images of every app spec version kept in the state, and of the version of every task. */
export function appImages(state: ClusterState): string[] {
  const images = new Set<string>();
  for (const r of state.kvList(SPEC_PREFIX, MAX_SCAN)) {
    const spec = parseRecord<AppSpec>(r.value);
    if (typeof spec?.image === 'string') images.add(spec.image);
  }
  // Tasks run versions whose specs are kept (above); read them anyway, so no running task's image
  // can be missed should a spec ever be removed before its tasks.
  for (const t of state.tables.tasks().slice(0, MAX_SCAN)) {
    if (typeof t.app !== 'string' || !Number.isSafeInteger(t.version)) continue;
    const spec = parseRecord<AppSpec>(state.kvGet(specKey(t.app, t.version))?.value);
    if (typeof spec?.image === 'string') images.add(spec.image);
  }
  return [...images];
}

function links(state: ClusterState, prefix: string): GcLink[] {
  return state.kvList(prefix, MAX_SCAN).flatMap((r) => {
    const k = parseRepoLinkKey(r.key.slice(prefix.length));
    return k ? [{ repo: k.repo, digest: k.digest, createdAtMs: readRepoLink(r.value).createdAtMs }] : [];
  });
}

/** The pure plan's input, read from a replica. */
export function gcInput(state: ClusterState, nowMs: number, o: GcOptions): GcInput {
  return {
    nowMs,
    graceMs: o.graceMs,
    ...(o.keepLast !== undefined ? { keepLast: o.keepLast } : {}),
    tags: state.kvList(TAG_PREFIX, MAX_SCAN).flatMap((r) => {
      const k = parseTagKey(r.key.slice(TAG_PREFIX.length));
      const t = readTagRecord(r.value);
      return k && t ? [{ repo: k.repo, tag: k.tag, digest: t.digest, updatedAtMs: t.updatedAtMs }] : [];
    }),
    manifests: listManifestRecords(state),
    manifestLinks: links(state, REPO_MANIFEST_PREFIX),
    blobs: listBlobRecords(state),
    blobLinks: links(state, REPO_BLOB_PREFIX),
    appImages: appImages(state),
  };
}

export interface RegistryGcDeps {
  cluster: CatalogAccess;
  store: BlobStore;
  log: Logger;
  /** This node's name (for reports). */
  nodeName(): string;
  /** Where this node keeps the number of the last run it swept after (absent: in memory only). */
  sweptFile?: string;
}

/** How long a run asked for waits for one already going on here. */
const WAIT_FOR_RUN_MS = 10_000;
/** Attempts to record a run when another run records itself at the same moment. */
const MAX_RECORD_ATTEMPTS = 5;

/** Asks the other members to sweep (set once the peer-to-peer side runs). */
export interface SweepPeers {
  /** Members that are up, other than this node: id and name. */
  members(): { id: string; name: string }[];
  sweep(peer: string, o: GcOptions): Promise<SweepReport>;
}

export class RegistryGc {
  private peers: SweepPeers | undefined;
  private running: Promise<unknown> | undefined;
  /** The last run this node swept after (undefined: not read from its file yet). */
  private swept: number | undefined;

  constructor(private readonly d: RegistryGcDeps) {}

  /** The policy saved in the cluster (local replica). */
  policy(): GcPolicy | undefined {
    return readGcPolicy(this.state.kvGet(GC_POLICY_KEY)?.value);
  }

  /** The last real run (local replica). */
  lastRun(): GcRunRecord | undefined {
    return readGcRunRecord(this.state.kvGet(GC_LAST_KEY)?.value);
  }

  /** Saves the policy: the values given replace the saved ones (keepLast null: keep every tag). */
  async savePolicy(p: { graceMs?: number; keepLast?: number | null }, caller: Caller): Promise<GcPolicy> {
    await this.d.cluster.readBarrier();
    const cur = this.policy();
    const graceMs = p.graceMs ?? cur?.graceMs;
    const keepLast = p.keepLast === null ? undefined : (p.keepLast ?? cur?.keepLast);
    const next: GcPolicy = { ...(graceMs !== undefined ? { graceMs } : {}), ...(keepLast !== undefined ? { keepLast } : {}), updatedAtMs: Date.now() };
    await this.d.cluster.proposeOk({ type: 'kv.put', key: GC_POLICY_KEY, value: JSON.stringify(next) }, caller);
    this.d.log.info(`registry gc: policy saved (grace ${next.graceMs ?? DEFAULT_GC_GRACE_MS} ms, ${next.keepLast !== undefined ? `keep the last ${next.keepLast} tags` : 'keep every tag'})`);
    return next;
  }

  /** A run asked for through the API: the policy fills in what the request leaves out (and is saved first with save). */
  async request(req: GcRequest, caller: Caller): Promise<GcReport & { policy: GcPolicy | null; saved: boolean }> {
    await this.d.cluster.readBarrier();
    const policy = req.save ? await this.savePolicy({ graceMs: req.graceMs, keepLast: req.keepLast }, caller) : this.policy();
    const report = await this.run(effectiveGcOptions(req, policy), caller);
    return { ...report, policy: policy ?? null, saved: req.save };
  }

  setPeers(p: SweepPeers): void {
    this.peers = p;
  }

  private get state(): ClusterState {
    return this.d.cluster.raft.state;
  }

  /** Whether a run is going on on this node. */
  get busy(): boolean {
    return this.running !== undefined;
  }

  /**
   * A whole run (see the top of this file); one at a time on a node. A run asked for while another
   * is going on here (the schedule's, say) waits up to 10 s for it to end.
   */
  async run(o: GcOptions, caller: Caller, scheduled = false): Promise<GcReport> {
    if (this.running && !scheduled) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.running.catch(() => undefined), new Promise((r) => (timer = setTimeout(r, WAIT_FOR_RUN_MS)))]);
      clearTimeout(timer);
    }
    if (this.running) throw new OmniError('CONFLICT', 'a garbage collection is already running on this node; try again when it ends');
    const p = this.runOnce(o, caller, scheduled);
    this.running = p;
    try {
      return await p;
    } finally {
      this.running = undefined;
    }
  }

  private async runOnce(o: GcOptions, caller: Caller, scheduled: boolean): Promise<GcReport> {
    let plan: GcPlan | undefined;
    let sizes = new Map<string, number>();
    let attempts = 0;
    for (;;) {
      attempts++;
      await this.d.cluster.readBarrier();
      const input = gcInput(this.state, Date.now(), o);
      sizes = new Map(input.blobs.map((b) => [b.digest, b.sizeBytes]));
      const fence = this.state.kvGet(GC_FENCE_KEY)?.version ?? 0;
      plan = planGc(input);
      if (o.dryRun) break;
      try {
        await this.commit(plan, fence, caller);
        break;
      } catch (err) {
        const conflict = err instanceof OmniError && err.code === 'CONFLICT';
        if (!conflict || attempts >= MAX_ATTEMPTS) {
          if (conflict) throw new OmniError('CONFLICT', `the registry kept changing during garbage collection (${attempts} attempts); run it again`);
          throw err;
        }
        this.d.log.info(`registry gc: a reference was added during the run; marking again (attempt ${attempts + 1})`);
      }
    }
    const removedLinks = plan.removeManifestLinks.length + plan.removeBlobLinks.length;
    if (!o.dryRun) {
      this.d.log.info(`registry gc: ${scheduled ? 'scheduled run ' : ''}removed ${plan.removeTags.length} tags, ${plan.removeManifests.length} manifests, ${plan.removeBlobs.length} blobs (${plan.reclaimBytes} bytes) from the catalog`);
      await this.recordRun(o, scheduled, { tags: plan.removeTags.length, manifests: plan.removeManifests.length, blobs: plan.removeBlobs.length, bytes: plan.reclaimBytes }, caller);
    }
    const nodes = await this.sweepAll(o);
    return {
      dryRun: o.dryRun,
      graceMs: o.graceMs,
      keepLast: o.keepLast ?? null,
      removed: {
        tags: plan.removeTags.slice(0, MAX_LISTED).map((t) => ({ repository: t.repo, tag: t.tag, digest: t.digest })),
        manifests: plan.removeManifests.slice(0, MAX_LISTED),
        blobs: plan.removeBlobs.slice(0, MAX_LISTED).map((digest) => ({ digest, sizeBytes: sizes.get(digest) ?? 0 })),
        links: removedLinks,
      },
      reclaimBytes: plan.reclaimBytes,
      live: { manifests: plan.liveManifests.size, blobs: plan.liveBlobs.size },
      keptYoung: plan.keptYoung,
      attempts,
      nodes,
    };
  }

  /** Writes registry/gc-last with the next run number (compared, so two runs at once get two numbers). */
  private async recordRun(o: GcOptions, scheduled: boolean, removed: GcRunRecord['removed'], caller: Caller): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      await this.d.cluster.readBarrier();
      const cur = this.state.kvGet(GC_LAST_KEY);
      const rec: GcRunRecord = { run: (readGcRunRecord(cur?.value)?.run ?? 0) + 1, atMs: Date.now(), node: this.d.nodeName(), scheduled, graceMs: o.graceMs, ...(o.keepLast !== undefined ? { keepLast: o.keepLast } : {}), removed };
      try {
        await this.d.cluster.proposeOk({ type: 'kv.txn', compares: [{ key: GC_LAST_KEY, version: cur?.version ?? 0 }], ops: [{ op: 'put', key: GC_LAST_KEY, value: JSON.stringify(rec) }] }, caller);
        return;
      } catch (err) {
        if (!(err instanceof OmniError && err.code === 'CONFLICT') || attempt >= MAX_RECORD_ATTEMPTS) throw err;
      }
    }
  }

  /** Removes the plan's records: tags first, then manifests, then blobs, each delete guarded. */
  private async commit(plan: GcPlan, fenceVersion: number, caller: Caller): Promise<void> {
    const keys = [
      ...plan.removeTags.map((t) => tagKey(t.repo, t.tag)),
      ...plan.removeManifestLinks.map((l) => repoManifestKey(l.repo, l.digest)),
      ...plan.removeManifests.map((d) => manifestKey(d)),
      ...plan.removeBlobLinks.map((l) => repoBlobKey(l.repo, l.digest)),
      ...plan.removeBlobs.map((d) => blobKey(d)),
    ];
    for (let i = 0; i < keys.length; i += OPS_PER_TXN) {
      const compares: KvCompare[] = [{ key: GC_FENCE_KEY, version: fenceVersion }];
      const ops: KvTxnOp[] = [];
      for (const key of keys.slice(i, i + OPS_PER_TXN)) {
        const cur = this.state.kvGet(key);
        if (!cur) continue; // already gone
        compares.push({ key, version: cur.version });
        ops.push({ op: 'delete', key });
      }
      if (ops.length > 0) await this.d.cluster.proposeOk({ type: 'kv.txn', compares, ops }, caller);
    }
  }

  private async sweepAll(o: GcOptions): Promise<SweepReport[]> {
    const local = this.sweepLocal(o).catch((err: Error) => this.failed(this.d.nodeName(), err));
    const peers = this.peers;
    const remote = (peers?.members() ?? []).map((m) =>
      peers!.sweep(m.id, o).then(
        (r) => ({ ...r, node: m.name }),
        (err: Error) => this.failed(m.name, err),
      ),
    );
    const all = await Promise.all([local, ...remote]);
    return all.sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
  }

  private failed(node: string, err: Error): SweepReport {
    return { node, deleted: [], deletedCount: 0, deletedBytes: 0, kept: { live: 0, recorded: 0, young: 0 }, error: err.message.slice(0, 300) };
  }

  /** This node's sweep: deletes its copies of blobs the catalog no longer records (see the top). */
  async sweepLocal(o: GcOptions): Promise<SweepReport> {
    await this.d.cluster.readBarrier();
    const runSeen = this.lastRun()?.run ?? 0;
    const report = await this.sweepNow(o);
    if (!o.dryRun) await this.noteSwept(runSeen);
    return report;
  }

  /** The number of the last run this node swept after (its file, read once). */
  async sweptRun(): Promise<number> {
    if (this.swept === undefined) {
      const text = this.d.sweptFile ? await readFile(this.d.sweptFile, 'utf8').catch(() => '') : '';
      const n = Number((JSON.parse(text || '{}') as { run?: unknown }).run ?? 0);
      this.swept = Number.isSafeInteger(n) && n >= 0 ? n : 0;
    }
    return this.swept;
  }

  private async noteSwept(run: number): Promise<void> {
    if (run <= (await this.sweptRun())) return;
    this.swept = run;
    if (this.d.sweptFile) await writeFileAtomic(this.d.sweptFile, JSON.stringify({ run }) + '\n', 0o600).catch((err: Error) => this.d.log.warn(`registry gc: cannot save the last run swept: ${err.message}`));
  }

  /**
   * A node that missed a run (down, or cut off, while it swept) sweeps its own copies now, with
   * that run's retention and the larger of its grace period and the saved policy's (a run made by
   * hand with --grace 0 is not repeated later, unattended, with no grace); a no-op when it has
   * swept after the last run. Returns the report, or undefined when there was nothing to catch up.
   */
  async catchUp(): Promise<SweepReport | undefined> {
    if (this.running) return undefined;
    await this.d.cluster.readBarrier();
    const last = this.lastRun();
    if (!last || last.run <= (await this.sweptRun())) return undefined;
    const graceMs = Math.max(last.graceMs, effectiveGcOptions({ dryRun: false }, this.policy()).graceMs);
    const report = await this.sweepLocal({ dryRun: false, graceMs, ...(last.keepLast !== undefined ? { keepLast: last.keepLast } : {}) });
    this.d.log.info(`registry gc: caught up with run ${last.run} of ${new Date(last.atMs).toISOString()} (missed here): deleted ${report.deletedCount} blobs (${report.deletedBytes} bytes)`);
    return report;
  }

  private async sweepNow(o: GcOptions): Promise<SweepReport> {
    const nowMs = Date.now();
    const plan = planGc(gcInput(this.state, nowMs, o));
    const doomed = new Set(plan.removeBlobs);
    const report: SweepReport = { node: this.d.nodeName(), deleted: [], deletedCount: 0, deletedBytes: 0, kept: { live: 0, recorded: 0, young: 0 } };
    const cutoffMs = nowMs - o.graceMs;
    for (const digest of this.d.store.held()) {
      const decision = sweepDecision({
        live: plan.liveBlobs.has(digest),
        // read again right before deleting: the replica may have moved on since the mark
        recorded: this.state.kvGet(blobKey(digest)) !== undefined,
        doomed: doomed.has(digest),
        dryRun: o.dryRun,
        storedAtMs: this.d.store.storedAt(digest) ?? nowMs,
        nowMs,
        graceMs: o.graceMs,
      });
      if (decision !== 'delete') {
        report.kept[decision]++;
        continue;
      }
      const sizeBytes = this.d.store.info(digest)?.sizeBytes ?? 0;
      if (!o.dryRun && !(await this.d.store.deleteIfStoredBefore(digest, cutoffMs))) {
        report.kept.young++;
        continue;
      }
      report.deletedCount++;
      report.deletedBytes += sizeBytes;
      if (report.deleted.length < MAX_LISTED) report.deleted.push({ digest, sizeBytes });
    }
    if (!o.dryRun && report.deletedCount > 0) this.d.log.info(`registry gc: deleted ${report.deletedCount} blobs (${report.deletedBytes} bytes) from this node`);
    return report;
  }
}

/** A peer's sweep answer, checked (peers are members, but their answers are still input). */
export function readSweepReport(v: unknown): SweepReport {
  const o = v as Partial<SweepReport> | null;
  const n = (x: unknown) => (typeof x === 'number' && Number.isSafeInteger(x) && x >= 0 ? x : 0);
  if (!o || typeof o !== 'object') throw new OmniError('BAD_RESPONSE', 'malformed sweep report');
  const deleted = Array.isArray(o.deleted) ? o.deleted.slice(0, MAX_LISTED).filter((x) => x && typeof x.digest === 'string').map((x) => ({ digest: String(x.digest).slice(0, 80), sizeBytes: n(x.sizeBytes) })) : [];
  const kept = (o.kept ?? {}) as Partial<SweepReport['kept']>;
  return {
    node: typeof o.node === 'string' ? o.node.slice(0, 64) : '?',
    deleted,
    deletedCount: n(o.deletedCount),
    deletedBytes: n(o.deletedBytes),
    kept: { live: n(kept.live), recorded: n(kept.recorded), young: n(kept.young) },
    ...(typeof o.error === 'string' ? { error: o.error.slice(0, 300) } : {}),
  };
}
