// Pure registry logic: digests, names and references, manifest validation, byte ranges, pieces.
import { describe, expect, it } from 'vitest';
import { checkDigest } from '../../protocol/registry/digest.js';
import { isRepositoryName, isTag, parseImageReference, parseManifestReference } from '../../protocol/registry/reference.js';
import { parseManifest, MAX_MANIFEST_BYTES } from '../../protocol/registry/manifest.js';
import { DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST } from '../../protocol/registry/media-types.js';
import { parseRangeHeader, parseUploadContentRange, uploadRangeHeader } from '../../protocol/registry/http-ranges.js';
import { planReplicas } from '../../protocol/registry/durability.js';
import { pieceCount, pieceSpan, piecesCovering, validPieces, pieceSizeFor, encodePieceBitmap, decodePieceBitmap, MAX_PIECE_BITMAP_BYTES } from '../../protocol/registry/pieces.js';
import { PieceSpread } from '../../protocol/registry/piece-spread.js';
import { parseRepoLinkKey, parseTagKey, readBlobRecord, readManifestRecord, repoManifestKey, REPO_MANIFEST_PREFIX, tagKey, TAG_PREFIX } from '../../protocol/registry/records.js';

const D1 = 'sha256:' + 'a'.repeat(64);
const D2 = 'sha256:' + 'b'.repeat(64);
const D3 = 'sha256:' + 'c'.repeat(64);
const enc = (o: unknown) => new TextEncoder().encode(JSON.stringify(o));

describe('digests and references', () => {
  it('accepts sha256 digests only, and says why others fail', () => {
    expect(checkDigest(D1)).toEqual({ ok: true, digest: D1, hex: 'a'.repeat(64) });
    expect(checkDigest('sha512:' + 'a'.repeat(128))).toMatchObject({ ok: false, code: 'UNSUPPORTED' });
    for (const bad of ['sha256:' + 'A'.repeat(64), 'sha256:abc', 'a'.repeat(64), '', 42, 'sha256:' + 'a'.repeat(65)]) expect(checkDigest(bad)).toMatchObject({ ok: false, code: 'DIGEST_INVALID' });
  });

  it('validates repository names and tags as the distribution spec does', () => {
    for (const ok of ['busybox', 'library/busybox', 'a/b/c', 'my-app', 'my__app', 'my.app', 'a-----b', '0'])
      expect(isRepositoryName(ok), ok).toBe(true);
    for (const bad of ['', 'Busybox', '/a', 'a/', 'a//b', 'a:b', 'a@b', '-a', 'a_', 'a___b', 'x'.repeat(201), 'a b'])
      expect(isRepositoryName(bad), bad).toBe(false);
    expect(isTag('latest')).toBe(true);
    expect(isTag('v1.2.3-rc_1')).toBe(true);
    expect(isTag('.hidden')).toBe(false);
    expect(isTag('x'.repeat(129))).toBe(false);
    expect(parseManifestReference('latest')).toEqual({ kind: 'tag', tag: 'latest' });
    expect(parseManifestReference(D1)).toEqual({ kind: 'digest', digest: D1 });
    expect(parseManifestReference('sha256:zz').kind).toBe('invalid');
    expect(parseManifestReference('-bad').kind).toBe('invalid');
  });

  it('parses image references with a host, a tag and a digest', () => {
    expect(parseImageReference('127.0.0.1:5000/team/web:1.0')).toEqual({ ok: true, ref: { host: '127.0.0.1:5000', repository: 'team/web', tag: '1.0' } });
    expect(parseImageReference(`web@${D1}`)).toEqual({ ok: true, ref: { repository: 'web', digest: D1 } });
    expect(parseImageReference('localhost/x')).toEqual({ ok: true, ref: { host: 'localhost', repository: 'x' } });
    expect(parseImageReference('team/web')).toEqual({ ok: true, ref: { repository: 'team/web' } });
    expect(parseImageReference('Web:1').ok).toBe(false);
    expect(parseImageReference('web@sha256:12').ok).toBe(false);
  });
});

describe('manifests', () => {
  const image = { schemaVersion: 2, mediaType: DOCKER_MANIFEST, config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: D1, size: 10 }, layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: D2, size: 20 }, { mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: D2, size: 20 }] };

  it('an image manifest references its config and layers (once each)', () => {
    const r = parseManifest(enc(image), DOCKER_MANIFEST);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.manifest.kind).toBe('image');
    expect(r.manifest.blobs.map((b) => b.digest)).toEqual([D1, D2]);
  });

  it('an OCI manifest without mediaType takes it from the header; an index lists manifests', () => {
    const { mediaType: _m, ...noType } = image;
    const r = parseManifest(enc(noType), OCI_MANIFEST);
    expect(r.ok && r.manifest.mediaType).toBe(OCI_MANIFEST);
    const index = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: D3, size: 300, platform: { os: 'linux', architecture: 'arm64' } }] };
    const i = parseManifest(enc(index), OCI_INDEX);
    expect(i.ok && i.manifest.kind).toBe('index');
    expect(i.ok && i.manifest.manifests[0]).toMatchObject({ digest: D3, platform: { os: 'linux', architecture: 'arm64' } });
  });

  it('refuses malformed manifests with a reason', () => {
    const cases: [unknown, string | undefined, string][] = [
      [{ ...image, schemaVersion: 1 }, DOCKER_MANIFEST, 'UNSUPPORTED'],
      [{ ...image, schemaVersion: 3 }, DOCKER_MANIFEST, 'MANIFEST_INVALID'],
      [{ ...image, config: { ...image.config, digest: 'sha256:xyz' } }, DOCKER_MANIFEST, 'MANIFEST_INVALID'],
      [{ ...image, layers: [{ ...image.layers[0], size: -1 }] }, DOCKER_MANIFEST, 'MANIFEST_INVALID'],
      [image, OCI_MANIFEST, 'MANIFEST_INVALID'], // header and body disagree
      [{ ...image, mediaType: 'text/plain' }, undefined, 'UNSUPPORTED'],
      [[1, 2], DOCKER_MANIFEST, 'MANIFEST_INVALID'],
    ];
    for (const [doc, type, code] of cases) expect(parseManifest(enc(doc), type), JSON.stringify(doc).slice(0, 80)).toMatchObject({ ok: false, code });
    expect(parseManifest(new Uint8Array([0xff, 0xfe]), DOCKER_MANIFEST)).toMatchObject({ ok: false, code: 'MANIFEST_INVALID' });
    expect(parseManifest(new Uint8Array(MAX_MANIFEST_BYTES + 1), DOCKER_MANIFEST)).toMatchObject({ ok: false, code: 'SIZE_INVALID' });
  });
});

describe('byte ranges', () => {
  it('Range headers against a blob size', () => {
    expect(parseRangeHeader(undefined, 100)).toBeUndefined();
    expect(parseRangeHeader('bytes=0-9', 100)).toEqual({ start: 0, end: 9 });
    expect(parseRangeHeader('bytes=90-', 100)).toEqual({ start: 90, end: 99 });
    expect(parseRangeHeader('bytes=90-500', 100)).toEqual({ start: 90, end: 99 });
    expect(parseRangeHeader('bytes=-10', 100)).toEqual({ start: 90, end: 99 });
    expect(parseRangeHeader('bytes=100-', 100)).toBe('unsatisfiable');
    expect(parseRangeHeader('bytes=5-2', 100)).toBe('unsatisfiable');
    expect(parseRangeHeader('bytes=abc', 100)).toBe('unsatisfiable');
    expect(parseRangeHeader('bytes=0-1,5-6', 100)).toBe('ignore');
    expect(parseRangeHeader('items=0-1', 100)).toBe('ignore');
  });

  it('upload Content-Range and the Range answer', () => {
    expect(parseUploadContentRange('0-99')).toEqual({ start: 0, end: 99 });
    expect(parseUploadContentRange('bytes 100-199/*')).toEqual({ start: 100, end: 199 });
    expect(parseUploadContentRange('9-3')).toBeUndefined();
    expect(parseUploadContentRange('x')).toBeUndefined();
    expect(uploadRangeHeader(0)).toBe('0-0');
    expect(uploadRangeHeader(100)).toBe('0-99');
  });
});

describe('pieces and records', () => {
  it('cuts blobs into pieces', () => {
    expect(pieceCount(0, 10)).toBe(0);
    expect(pieceCount(10, 10)).toBe(1);
    expect(pieceCount(11, 10)).toBe(2);
    expect(pieceSpan(1, 15, 10)).toEqual({ start: 10, end: 15 });
    expect(piecesCovering(9, 10, 10)).toEqual({ first: 0, last: 1 });
    expect(validPieces(70_000, 65_536, ['a'.repeat(64), 'b'.repeat(64)])).toBe(true);
    expect(validPieces(70_000, 65_536, ['a'.repeat(64)])).toBe(false);
    expect(validPieces(70_000, 1, ['a'.repeat(64)])).toBe(false);
  });

  it('1 MiB pieces, larger for blobs so big that they would have more than 1024', () => {
    const MiB = 1024 * 1024;
    expect(pieceSizeFor(0)).toBe(MiB);
    expect(pieceSizeFor(50_000_000)).toBe(MiB);
    expect(pieceSizeFor(1024 * MiB)).toBe(MiB);
    expect(pieceSizeFor(1024 * MiB + 1)).toBe(2 * MiB);
    expect(pieceSizeFor(16 * 1024 * MiB)).toBe(16 * MiB);
    for (const size of [1, 5 * MiB + 3, 3000 * MiB, 16 * 1024 * MiB]) {
      expect(pieceCount(size, pieceSizeFor(size))).toBeLessThanOrEqual(1024);
      expect(validPieces(size, pieceSizeFor(size), new Array(pieceCount(size, pieceSizeFor(size))).fill('a'.repeat(64)))).toBe(true);
    }
  });

  it('piece bitmaps round-trip and refuse what is not one', () => {
    for (const pieces of [[], [0], [7, 8], [0, 3, 9, 1023], [MAX_PIECE_BITMAP_BYTES * 8 - 1]]) expect(decodePieceBitmap(encodePieceBitmap(pieces))).toEqual(pieces);
    expect(encodePieceBitmap([0, 9])).toBe(Buffer.from([0x80, 0x40]).toString('base64'));
    expect(decodePieceBitmap(encodePieceBitmap([5, -1, 2.5, MAX_PIECE_BITMAP_BYTES * 8]))).toEqual([5]);
    expect(decodePieceBitmap(42)).toBeUndefined();
    expect(decodePieceBitmap('not base64!')).toBeUndefined();
    expect(decodePieceBitmap('A'.repeat(Math.ceil(MAX_PIECE_BITMAP_BYTES / 3) * 4 + 4))).toBeUndefined();
  });

  it('keys parse back, records that do not fit their shape read as absent', () => {
    expect(parseTagKey(tagKey('team/web', 'v1').slice(TAG_PREFIX.length))).toEqual({ repo: 'team/web', tag: 'v1' });
    expect(parseRepoLinkKey(repoManifestKey('a/b', D1).slice(REPO_MANIFEST_PREFIX.length))).toEqual({ repo: 'a/b', digest: D1 });
    const blob = { digest: D1, sizeBytes: 70_000, pieceSizeBytes: 65_536, pieces: ['a'.repeat(64), 'b'.repeat(64)], createdAtMs: 1 };
    expect(readBlobRecord(JSON.stringify(blob), D1)).toEqual(blob);
    expect(readBlobRecord(JSON.stringify(blob), D2)).toBeUndefined(); // stored under another digest
    expect(readBlobRecord(JSON.stringify({ ...blob, pieces: [] }), D1)).toBeUndefined();
    expect(readBlobRecord('not json', D1)).toBeUndefined();
    const m = { digest: D3, mediaType: OCI_MANIFEST, sizeBytes: 2, content: '{}', blobs: [D1], manifests: [], createdAtMs: 5 };
    expect(readManifestRecord(JSON.stringify(m), D3)).toEqual(m);
    expect(readManifestRecord(JSON.stringify({ ...m, blobs: ['x'] }), D3)).toBeUndefined();
  });
});

describe('replica plan', () => {
  it('asks the least loaded members that lack the blob, up to the target (bounded by the members up)', () => {
    const load: Record<string, number> = { b: 5, c: 1, d: 3 };
    expect(planReplicas(2, 'a', ['b', 'c', 'd'], new Set(['a']), (id) => load[id])).toEqual({ target: 2, have: 1, candidates: ['c', 'd', 'b'] });
    expect(planReplicas(3, 'a', ['b', 'c'], new Set(['a', 'c']))).toEqual({ target: 3, have: 2, candidates: ['b'] });
    // a one-node cluster: the copy here is all there can be
    expect(planReplicas(2, 'a', [], new Set(['a']))).toEqual({ target: 1, have: 1, candidates: [] });
    // holders that are not up do not count
    expect(planReplicas(2, 'a', ['b'], new Set(['a', 'zombie']))).toMatchObject({ target: 2, have: 1, candidates: ['b'] });
  });
});

describe('piece spread (a whole holder declines a piece it just sent to another fetcher)', () => {
  const D = 'sha256:' + 'd'.repeat(64);
  it('declines a piece being sent or just sent to another peer while some piece is cold', () => {
    const s = new PieceSpread({ windowMs: 1000, maxBlobs: 4 });
    expect(s.begin(D, 3, 0, 'a', 0)).toBe('serve');
    expect(s.begin(D, 3, 0, 'b', 10)).toBe('decline'); // being sent to a
    expect(s.begin(D, 3, 0, 'a', 10)).toBe('serve'); // the same peer again is not declined
    s.sent(D, 0, 'a', 100);
    s.sent(D, 0, 'a', 200);
    expect(s.begin(D, 3, 0, 'b', 900)).toBe('decline'); // sent 700 ms ago
    expect(s.begin(D, 3, 1, 'b', 900)).toBe('serve'); // a cold piece
    s.sent(D, 1, 'b', 950);
    expect(s.begin(D, 3, 0, 'c', 1250)).toBe('serve'); // the window has passed
  });

  it('serves anything once every piece is hot, and a lone fetcher always', () => {
    const s = new PieceSpread({ windowMs: 1000, maxBlobs: 4 });
    expect(s.begin(D, 2, 0, 'a', 0)).toBe('serve');
    expect(s.begin(D, 2, 1, 'b', 0)).toBe('serve');
    expect(s.begin(D, 2, 0, 'b', 0)).toBe('serve'); // no cold piece left: no upload to save
    const lone = new PieceSpread({ windowMs: 1000, maxBlobs: 4 });
    for (let i = 0; i < 5; i++) expect(lone.begin(D, 5, i % 2, 'a', i)).toBe('serve');
  });

  it('tracks a bounded number of blobs, dropping the least recently served', () => {
    const s = new PieceSpread({ windowMs: 10_000, maxBlobs: 2 });
    const d = (n: number) => 'sha256:' + String(n).repeat(64);
    s.begin(d(1), 3, 0, 'a', 0);
    s.begin(d(2), 3, 0, 'a', 0);
    s.begin(d(3), 3, 0, 'a', 0); // d(1) forgotten
    expect(s.begin(d(1), 3, 0, 'b', 1)).toBe('serve');
    expect(s.begin(d(3), 3, 0, 'b', 1)).toBe('decline');
  });
});
