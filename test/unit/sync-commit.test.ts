// The body of a one-request sync commit (protocol/sync/commit.ts): what decodes, and what is
// refused before the node keeps anything.
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { decodeSyncCommit, encodeSyncCommit, SyncCommitError, SYNC_COMMIT_BLOB_BYTES, type SyncCommitHeader } from '../../protocol/sync/commit.js';

const sha = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');
const blob = Buffer.from('pack bytes');
const manifest = Buffer.from('{"schemaVersion":2}');
const header = (o: Partial<SyncCommitHeader> = {}): SyncCommitHeader => ({ expectedVersion: 3, record: '{"index":"x","revision":4}', blobs: [{ digest: sha(blob), size: blob.length }], manifests: [{ digest: sha(manifest), mediaType: 'application/vnd.oci.image.index.v1+json', size: manifest.length }], tag: 'ws-4', ...o });

describe('sync commit body', () => {
  it('round-trips the header and payloads (views into the body)', () => {
    const d = decodeSyncCommit(encodeSyncCommit(header(), [blob], [manifest]));
    expect(d.header).toEqual(header());
    expect(d.blobs.map((b) => b.toString())).toEqual(['pack bytes']);
    expect(d.manifests.map((b) => b.toString())).toEqual(['{"schemaVersion":2}']);
  });

  it('refuses a malformed body', () => {
    const bad = (body: Buffer, why: RegExp) => expect(() => decodeSyncCommit(body)).toThrow(why);
    bad(Buffer.alloc(2), /cut short/);
    bad(Buffer.from([0xff, 0, 0, 0, 1]), /header length/);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(3);
    bad(Buffer.concat([len, Buffer.from('{x}')]), /not JSON/);
    bad(encodeSyncCommit(header({ tag: 'latest' }), [blob], [manifest]), /tag must be ws-<revision>/);
    bad(encodeSyncCommit(header({ untag: 'ws-4' }), [blob], [manifest]), /untag must be ws-<an earlier revision>/);
    bad(encodeSyncCommit(header({ untag: 'latest' }), [blob], [manifest]), /untag/);
    expect(decodeSyncCommit(encodeSyncCommit(header({ untag: 'ws-3' }), [blob], [manifest])).header.untag).toBe('ws-3');
    bad(encodeSyncCommit(header({ expectedVersion: -1 }), [blob], [manifest]), /expectedVersion/);
    bad(encodeSyncCommit(header({ record: '' }), [blob], [manifest]), /record/);
    bad(encodeSyncCommit(header({ manifests: [] }), [blob], []), /manifests must be a list of 1/);
    bad(encodeSyncCommit(header({ blobs: [{ digest: 'md5:x', size: 1 }] }), [Buffer.from('x')], [manifest]), /bad digest/);
    bad(encodeSyncCommit(header(), [blob], [manifest]).subarray(0, -1), /cut short/);
    bad(Buffer.concat([encodeSyncCommit(header(), [blob], [manifest]), Buffer.from('!')]), /1 bytes after the payloads/);
    const big = Buffer.alloc(SYNC_COMMIT_BLOB_BYTES + 1);
    bad(encodeSyncCommit(header({ blobs: [{ digest: sha(big), size: big.length }] }), [big], [manifest]), /size must be from 0 to/);
    expect(() => decodeSyncCommit(Buffer.alloc(2))).toThrow(SyncCommitError);
  });
});
