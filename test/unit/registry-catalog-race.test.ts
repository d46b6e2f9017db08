// Two pushes of the same manifest at once (parallel compose builds sharing a cached dependency
// layer): both create its record with a guarded transaction; the one that loses the race must
// not fail (it is recomputed from the winner's state: only the link and the tag are left).
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { ClusterState, encodeCommand, type Command } from '../../protocol/cluster/state.js';
import { KvRegistryCatalog } from '../../node/registry/catalog.js';
import { OmniError } from '../../node/errors.js';
import { LEADER_DUTY } from '../../node/cluster/caller.js';
import { DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST } from '../../protocol/registry/media-types.js';
import { MIN_PIECE_SIZE_BYTES } from '../../protocol/registry/pieces.js';
import { blobKey, repoBlobKey, tagKey } from '../../protocol/registry/records.js';

const sha = (s: string) => 'sha256:' + createHash('sha256').update(s).digest('hex');

describe('registry catalog: concurrent pushes of one manifest', () => {
  it('both succeed; one record, both tags', async () => {
    const state = new ClusterState();
    const apply = (cmd: Command) => {
      const r = state.apply(state.appliedIndex + 1, encodeCommand(cmd));
      if (!r.ok) throw new OmniError(r.error.code, r.error.message);
      return r.value;
    };
    // Proposals take a while to commit: both pushes read the state before either applies.
    const cat = new KvRegistryCatalog({ raft: { state, raft: undefined as never, isLeader: true }, readBarrier: async () => undefined, proposeOk: async (cmd: Command) => (await new Promise((r) => setTimeout(r, 20)), apply(cmd)) } as never);
    const layer = sha('layer');
    await cat.addBlob('forge-cache/deps', { digest: layer, sizeBytes: 5, pieceSizeBytes: MIN_PIECE_SIZE_BYTES, pieces: [createHash('sha256').update('layer').digest('hex')], createdAtMs: 1 }, LEADER_DUTY);
    const content = JSON.stringify({ schemaVersion: 2, mediaType: DOCKER_MANIFEST, config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: layer, size: 5 }, layers: [] });
    const record = { digest: sha(content), mediaType: DOCKER_MANIFEST, sizeBytes: content.length, content, blobs: [layer], manifests: [], createdAtMs: 2 };
    await Promise.all([cat.putManifest('forge-cache/deps', record, 'a', LEADER_DUTY), cat.putManifest('forge-cache/deps', record, 'b', LEADER_DUTY)]);
    expect(await cat.resolveTag('forge-cache/deps', 'a')).toBe(record.digest);
    expect(await cat.resolveTag('forge-cache/deps', 'b')).toBe(record.digest);
  });
});

// Catalog writes are decided first from the node's own replica, without a read barrier: a replica
// behind the leader must make the transaction fail and be decided again after the barrier, never
// leave a push half done or a tag pointing elsewhere.
describe('registry catalog: a replica behind the leader', () => {
  /** The leader's state (where transactions are checked) and a replica that applies only at a barrier. */
  function cluster() {
    const leader = new ClusterState();
    const replica = new ClusterState();
    const log: Uint8Array[] = [];
    let barriers = 0;
    const applyTo = (s: ClusterState, data: Uint8Array) => s.apply(s.appliedIndex + 1, data);
    const onLeader = (cmd: Command) => {
      const data = encodeCommand(cmd);
      log.push(data);
      const r = applyTo(leader, data);
      if (!r.ok) throw new OmniError(r.error.code, r.error.message);
      return r.value;
    };
    const catchUp = () => {
      while (replica.appliedIndex < leader.appliedIndex) applyTo(replica, log[replica.appliedIndex]);
    };
    const cat = new KvRegistryCatalog({
      raft: { state: replica, raft: undefined as never, isLeader: false },
      readBarrier: async () => (barriers++, catchUp()),
      proposeOk: async (cmd: Command) => onLeader(cmd),
    } as never);
    return { leader, replica, cat, catchUp, onLeader, barriers: () => barriers };
  }
  const blob = (s: string) => ({ digest: sha(s), sizeBytes: s.length, pieceSizeBytes: MIN_PIECE_SIZE_BYTES, pieces: [createHash('sha256').update(s).digest('hex')], createdAtMs: 1 });
  const manifest = (configDigest: string, n: number) => {
    const content = JSON.stringify({ schemaVersion: 2, mediaType: DOCKER_MANIFEST, config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: configDigest, size: 1 }, layers: [], n });
    return { digest: sha(content), mediaType: DOCKER_MANIFEST, sizeBytes: content.length, content, blobs: [configDigest], manifests: [], createdAtMs: 2 };
  };

  it('a replica that is current needs no barrier for a push', async () => {
    const c = cluster();
    const b = blob('a');
    await c.cat.addBlob('r', b, LEADER_DUTY);
    c.catchUp();
    await c.cat.putManifest('r', manifest(b.digest, 1), 'v1', LEADER_DUTY);
    expect(c.barriers()).toBe(0);
    c.catchUp();
    expect(await c.cat.resolveTag('r', 'v1')).toBe(manifest(b.digest, 1).digest);
  });

  it('a blob the replica has not seen yet: the manifest push is decided again after a barrier', async () => {
    const c = cluster();
    const b = blob('b');
    await c.cat.addBlob('r', b, LEADER_DUTY); // applied on the leader only
    await c.cat.putManifest('r', manifest(b.digest, 1), 'v1', LEADER_DUTY);
    expect(c.barriers()).toBeGreaterThan(0);
    c.catchUp();
    expect(await c.cat.resolveTag('r', 'v1')).toBe(manifest(b.digest, 1).digest);
  });

  it('a tag moved on the leader since the replica saw it: pushing the old manifest again tags it again', async () => {
    const c = cluster();
    const b = blob('c');
    await c.cat.addBlob('r', b, LEADER_DUTY);
    c.catchUp();
    const m1 = manifest(b.digest, 1);
    const m2 = manifest(b.digest, 2);
    await c.cat.putManifest('r', m1, 'v1', LEADER_DUTY);
    c.catchUp(); // the replica sees v1 → m1
    // another node moves v1 to m2 through the leader; this replica does not know yet
    c.onLeader({ type: 'kv.txn', compares: [], ops: [{ op: 'put', key: tagKey('r', 'v1'), value: JSON.stringify({ digest: m2.digest, updatedAtMs: 3 }) }] } as Command);
    await c.cat.putManifest('r', m1, 'v1', LEADER_DUTY);
    c.catchUp();
    expect(await c.cat.resolveTag('r', 'v1')).toBe(m1.digest);
  });

  /**
   * A replica that saw v1 → m1 and the blob's link to r removed (so a push of m1 has a link to
   * write), but not what `retag` then does to v1 on the leader; m1 pushed again from it must end
   * with v1 → m1.
   */
  async function pushAgainOverStaleTag(retag: (c: ReturnType<typeof cluster>, m2: ReturnType<typeof manifest>) => void) {
    const c = cluster();
    const b = blob('e');
    await c.cat.addBlob('r', b, LEADER_DUTY);
    c.catchUp();
    const m1 = manifest(b.digest, 1);
    await c.cat.putManifest('r', m1, 'v1', LEADER_DUTY);
    c.onLeader({ type: 'kv.txn', compares: [], ops: [{ op: 'delete', key: repoBlobKey('r', b.digest) }] } as Command);
    c.catchUp();
    retag(c, manifest(b.digest, 2));
    await c.cat.putManifest('r', m1, 'v1', LEADER_DUTY);
    c.catchUp();
    expect(await c.cat.resolveTag('r', 'v1')).toBe(m1.digest);
    expect(await c.cat.blobInRepo('r', b.digest)).toBeDefined();
  }
  const tagTo = (digest: string): Command => ({ type: 'kv.txn', compares: [], ops: [{ op: 'put', key: tagKey('r', 'v1'), value: JSON.stringify({ digest, updatedAtMs: 3 }) }] }) as Command;

  it('the same with other writes to make: a tag seen on a stale replica is written again, not trusted', async () => {
    await pushAgainOverStaleTag((c, m2) => c.onLeader(tagTo(m2.digest)));
  });

  it('a tag deleted and made again on the leader (its version starts over) is still set by a push from a stale replica', async () => {
    await pushAgainOverStaleTag((c, m2) => {
      c.onLeader({ type: 'kv.txn', compares: [], ops: [{ op: 'delete', key: tagKey('r', 'v1') }] } as Command);
      c.onLeader(tagTo(m2.digest));
      expect(c.leader.kvGet(tagKey('r', 'v1'))?.version).toBe(1); // the same version the replica saw
    });
  });

  it('a blob record removed on the leader since the replica saw it: a push records it again', async () => {
    const c = cluster();
    const b = blob('d');
    await c.cat.addBlob('r', b, LEADER_DUTY);
    c.catchUp();
    // garbage collection removes the record through the leader; the replica still has it
    c.onLeader({ type: 'kv.txn', compares: [], ops: [{ op: 'delete', key: blobKey(b.digest) }] } as Command);
    await c.cat.addBlob('r2', b, LEADER_DUTY);
    c.catchUp();
    expect(await c.cat.blob(b.digest)).toMatchObject({ digest: b.digest, sizeBytes: 1 });
    expect(await c.cat.blobInRepo('r2', b.digest)).toBeDefined();
  });
});

// writeTogether: a small sync workspace change (its blobs, a page manifest, the index and the
// workspace record) in one transaction.
describe('registry catalog: blobs, manifests, a tag and a record written together', () => {
  function cluster() {
    // values over 8 bytes live on disk only (as a node keeps the sync record): read by version, never by value
    const leader = new ClusterState({ spillValuesOverBytes: 8 });
    const replica = new ClusterState({ spillValuesOverBytes: 8 });
    const log: Uint8Array[] = [];
    let proposals = 0;
    const catchUp = () => {
      while (replica.appliedIndex < leader.appliedIndex) replica.apply(replica.appliedIndex + 1, log[replica.appliedIndex]);
    };
    const onLeader = (cmd: Command) => {
      const data = encodeCommand(cmd);
      log.push(data);
      const r = leader.apply(leader.appliedIndex + 1, data);
      if (!r.ok) throw new OmniError(r.error.code, r.error.message);
      return r.value;
    };
    const cat = new KvRegistryCatalog({ raft: { state: replica, raft: undefined as never, isLeader: false }, readBarrier: async () => catchUp(), proposeOk: async (cmd: Command) => (proposals++, onLeader(cmd)) } as never);
    return { leader, cat, catchUp, onLeader, proposals: () => proposals };
  }
  const blob = (s: string) => ({ digest: sha(s), sizeBytes: s.length, pieceSizeBytes: MIN_PIECE_SIZE_BYTES, pieces: [createHash('sha256').update(s).digest('hex')], createdAtMs: 1 });
  const record = (mediaType: string, body: object, blobs: string[], manifests: string[]) => {
    const content = JSON.stringify(body);
    return { digest: sha(content), mediaType, sizeBytes: content.length, content, blobs, manifests, createdAtMs: 2 };
  };
  /** A page manifest whose config is `page` and layers `layers`, and an index listing it. */
  function workspace(page: string, layers: string[]) {
    const m = record(OCI_MANIFEST, { schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'application/vnd.omni.sync.tree.v1+json', digest: page, size: 1 }, layers: layers.map((digest) => ({ mediaType: 'application/octet-stream', digest, size: 1 })) }, [page, ...layers], []);
    const index = record(OCI_INDEX, { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: m.digest, size: m.sizeBytes }] }, [], [m.digest]);
    return { m, index };
  }
  const syncRecord = (value: string, version: number) => ({ compares: [{ key: 'sync/app', version }], ops: [{ op: 'put' as const, key: 'sync/app', value }] });

  it('new blobs, a manifest using them and an older blob, the index tagged and the record: one proposal', async () => {
    const c = cluster();
    const old = blob('old pack');
    await c.cat.addBlob('omni-sync/app', old, LEADER_DUTY);
    c.catchUp();
    const before = c.proposals();
    const page = blob('page');
    const pack = blob('new pack');
    const { m, index } = workspace(page.digest, [old.digest, pack.digest]);
    await c.cat.writeTogether('omni-sync/app', { blobs: [page, pack], manifests: [m, index], tag: 'ws-1' }, syncRecord('{"index":1}', 0), LEADER_DUTY);
    expect(c.proposals() - before).toBe(1);
    c.catchUp();
    expect(await c.cat.resolveTag('omni-sync/app', 'ws-1')).toBe(index.digest);
    expect(await c.cat.manifest('omni-sync/app', m.digest)).toMatchObject({ digest: m.digest });
    for (const b of [page, pack, old]) expect(await c.cat.blobInRepo('omni-sync/app', b.digest)).toBeDefined();
    expect(c.leader.kvMeta('sync/app')).toMatchObject({ version: 1 });
  });

  it('a record moved by another writer: CONFLICT (extraConflict), and nothing of it written', async () => {
    const c = cluster();
    c.onLeader({ type: 'kv.put', key: 'sync/app', value: 'theirs, a value kept on disk' } as Command); // the replica has not seen it
    const page = blob('page 2');
    const { m, index } = workspace(page.digest, []);
    const err = await c.cat.writeTogether('omni-sync/app', { blobs: [page], manifests: [m, index], tag: 'ws-1' }, syncRecord('mine', 0), LEADER_DUTY).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OmniError);
    expect((err as OmniError).code).toBe('CONFLICT');
    expect((err as OmniError).detail).toMatchObject({ extraConflict: true });
    expect(c.leader.kvGet(tagKey('omni-sync/app', 'ws-1'))).toBeUndefined();
    expect(c.leader.kvGet(blobKey(page.digest))).toBeUndefined();
    expect(c.leader.kvMeta('sync/app')?.version).toBe(1);
  });

  it('a blob the replica has not seen yet: decided again after a barrier', async () => {
    const c = cluster();
    const old = blob('old 3');
    await c.cat.addBlob('omni-sync/app', old, LEADER_DUTY); // on the leader only
    const page = blob('page 3');
    const { m, index } = workspace(page.digest, [old.digest]);
    await c.cat.writeTogether('omni-sync/app', { blobs: [page], manifests: [m, index], tag: 'ws-2' }, syncRecord('v', 0), LEADER_DUTY);
    c.catchUp();
    expect(await c.cat.resolveTag('omni-sync/app', 'ws-2')).toBe(index.digest);
  });

  it('over one transaction: decided again without the optimistic compares, else TOO_LARGE with nothing written', async () => {
    const c = cluster();
    const many = Array.from({ length: 1100 }, (_, i) => blob(`layer ${i}`));
    for (let i = 0; i < many.length; i += 300) c.onLeader({ type: 'kv.txn', compares: [], ops: many.slice(i, i + 300).flatMap((b) => [{ op: 'put', key: blobKey(b.digest), value: JSON.stringify(b) }, { op: 'put', key: repoBlobKey('omni-sync/app', b.digest), value: '{"createdAtMs":1}' }]) } as Command);
    c.catchUp();
    // 600 linked layers: 1,200 compares from the replica's view, ~600 after a barrier
    const page = blob('page 5');
    const fits = workspace(page.digest, many.slice(0, 600).map((b) => b.digest));
    const before = c.proposals();
    await c.cat.writeTogether('omni-sync/app', { blobs: [page], manifests: [fits.m, fits.index], tag: 'ws-4' }, syncRecord('v', 0), LEADER_DUTY);
    expect(c.proposals() - before).toBe(1);
    // 1,100: over either way
    const page2 = blob('page 6');
    const over = workspace(page2.digest, many.map((b) => b.digest));
    await expect(c.cat.writeTogether('omni-sync/app', { blobs: [page2], manifests: [over.m, over.index], tag: 'ws-5' }, syncRecord('w', 1), LEADER_DUTY)).rejects.toMatchObject({ code: 'TOO_LARGE' });
    expect(c.leader.kvGet(tagKey('omni-sync/app', 'ws-5'))).toBeUndefined();
    expect(c.proposals() - before).toBe(1);
  });

  it('an index listing a manifest neither written here nor in the repository is refused', async () => {
    const c = cluster();
    const page = blob('page 4');
    const { index } = workspace(page.digest, []);
    await expect(c.cat.writeTogether('omni-sync/app', { blobs: [page], manifests: [index], tag: 'ws-3' }, syncRecord('v', 0), LEADER_DUTY)).rejects.toMatchObject({ code: 'MANIFEST_UNKNOWN' });
  });
});
