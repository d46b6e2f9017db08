// Two pushes of the same manifest at once (parallel compose builds sharing a cached dependency
// layer): both create its record with a guarded transaction; the one that loses the race must
// not fail (it is recomputed from the winner's state: only the link and the tag are left).
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { ClusterState, encodeCommand, type Command } from '../../protocol/cluster/state.js';
import { KvRegistryCatalog } from '../../node/registry/catalog.js';
import { OmniError } from '../../node/errors.js';
import { LEADER_DUTY } from '../../node/cluster/caller.js';
import { DOCKER_MANIFEST } from '../../protocol/registry/media-types.js';
import { MIN_PIECE_SIZE_BYTES } from '../../protocol/registry/pieces.js';

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
