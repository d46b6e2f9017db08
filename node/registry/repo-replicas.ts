// Per-repository durability targets (`omni images replicas REPO N`): a record per repository in the
// replicated state (registry/replicas/<repo>). A push into the repository completes once each blob
// is on that many nodes, and the leader's re-replication restores that many copies; a blob in
// several repositories gets the largest of their targets (a repository without one counts as the
// node-wide --registry-replicas).
import type { Caller } from '../cluster/caller.js';
import { OmniError } from '../errors.js';
import type { CatalogAccess } from './catalog.js';
import { isRepositoryName } from '../../protocol/registry/reference.js';
import { blobReplicaTargets, MAX_REPLICAS } from '../../protocol/registry/durability.js';
import { parseRepoLinkKey, readRepoReplicas, repoReplicasKey, REPO_BLOB_PREFIX, REPO_REPLICAS_PREFIX } from '../../protocol/registry/records.js';

/** Most entries one listing scans (the replicated state holds at most 100,000 keys). */
const MAX_SCAN = 100_000;

export interface RepoReplicaSetting {
  repository: string;
  replicas: number;
  updatedAtMs: number;
}

export class RepoReplicaTargets {
  constructor(
    private readonly cluster: CatalogAccess,
    /** The node-wide target (--registry-replicas). */
    readonly defaultReplicas: number,
  ) {}

  private get state() {
    return this.cluster.raft.state;
  }

  /** Every repository's own target (local replica). */
  list(): RepoReplicaSetting[] {
    return this.state.kvList(REPO_REPLICAS_PREFIX, MAX_SCAN).flatMap((r) => {
      const repository = r.key.slice(REPO_REPLICAS_PREFIX.length);
      const rec = readRepoReplicas(r.value);
      return rec && isRepositoryName(repository) ? [{ repository, replicas: rec.replicas, updatedAtMs: rec.updatedAtMs }] : [];
    });
  }

  /** The target of a push into `repo` (local replica): its own, else the node-wide one. */
  forRepo(repo: string): number {
    return readRepoReplicas(this.state.kvGet(repoReplicasKey(repo))?.value)?.replicas ?? this.defaultReplicas;
  }

  /** Each blob's target where repositories have their own (see blobReplicaTargets); empty when none has. */
  byBlob(): Map<string, number> {
    const settings = new Map(this.list().map((s) => [s.repository, s.replicas]));
    if (settings.size === 0) return new Map();
    const links = this.state.kvList(REPO_BLOB_PREFIX, MAX_SCAN).flatMap((r) => {
      const k = parseRepoLinkKey(r.key.slice(REPO_BLOB_PREFIX.length));
      return k ? [k] : [];
    });
    return blobReplicaTargets(settings, links, this.defaultReplicas);
  }

  /** Sets a repository's target (null: back to the node-wide one). */
  async set(repo: string, replicas: number | null, caller: Caller): Promise<RepoReplicaSetting | null> {
    if (!isRepositoryName(repo)) throw new OmniError('BAD_REQUEST', `${JSON.stringify(String(repo).slice(0, 200))} is not a valid repository name`);
    if (replicas !== null && (!Number.isSafeInteger(replicas) || replicas < 1 || replicas > MAX_REPLICAS)) throw new OmniError('BAD_REQUEST', `replicas: must be an integer from 1 to ${MAX_REPLICAS} (or null for the node-wide default)`);
    if (replicas === null) {
      await this.cluster.proposeOk({ type: 'kv.delete', key: repoReplicasKey(repo) }, caller);
      return null;
    }
    const rec = { replicas, updatedAtMs: Date.now() };
    await this.cluster.proposeOk({ type: 'kv.put', key: repoReplicasKey(repo), value: JSON.stringify(rec) }, caller);
    return { repository: repo, ...rec };
  }
}
