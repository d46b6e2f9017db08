// The /v2/ API against the distribution spec, in process: the real server, OCI routes, blob
// store and KV catalog, over a real cluster state machine (proposals applied at once). The real
// clients (docker, skopeo) are exercised in test/cluster/registry-docker.test.ts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from '../../node/registry/registry.js';
import { OmniError } from '../../node/errors.js';
import { DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST } from '../../protocol/registry/media-types.js';
import { openTestRegistry, registryCluster } from '../support/registry-harness.js';

const ADMIN = 'OMNIA1.test-admin-token';
const PULL = 'OMNIP1.test-pull-token';
const PIECE = 64 * 1024;
const sha = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');

let dir: string;
let registry: Registry;
let base: string;
let fetches = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'omni-oci-'));
  registry = await openTestRegistry({ cluster: registryCluster([{ id: 'a1', secret: ADMIN, role: 'admin' }, { id: 'p1', secret: PULL, role: 'pull' }]), dataDir: dir, pieceSizeBytes: PIECE, listen: true });
  registry.setFetcher(async (rec) => {
    fetches++;
    throw new OmniError('UNAVAILABLE', `no peer holds ${rec.digest}`);
  });
  base = registry.server!.url;
});
afterAll(async () => {
  await registry?.stop();
  await rm(dir, { recursive: true, force: true });
});

const basic = (secret: string) => 'Basic ' + Buffer.from(`anyone:${secret}`).toString('base64');
const auth = (secret = ADMIN) => ({ authorization: `Bearer ${secret}` });

async function req(method: string, path: string, opts: { body?: Uint8Array | string; headers?: Record<string, string>; secret?: string | null } = {}) {
  const headers: Record<string, string> = { ...(opts.secret === null ? {} : auth(opts.secret ?? ADMIN)), ...opts.headers };
  const res = await fetch(base + path, { method, headers, body: opts.body as string | undefined, redirect: 'manual' });
  const bytes = Buffer.from(await res.arrayBuffer());
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, bytes, json: json as Record<string, unknown> & { errors?: { code: string }[] } };
}

const errCode = (r: { json: { errors?: { code: string }[] } }) => r.json?.errors?.[0]?.code;

async function pushBlob(repo: string, bytes: Uint8Array): Promise<string> {
  const d = sha(bytes);
  const r = await req('POST', `/v2/${repo}/blobs/uploads/?digest=${d}`, { body: bytes, headers: { 'content-type': 'application/octet-stream' } });
  expect(r.status, JSON.stringify(r.json)).toBe(201);
  return d;
}

function imageManifest(config: string, configSize: number, layers: [string, number][]): string {
  return JSON.stringify({ schemaVersion: 2, mediaType: DOCKER_MANIFEST, config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: config, size: configSize }, layers: layers.map(([digest, size]) => ({ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest, size })) });
}

describe('/v2/ auth', () => {
  it('challenges without credentials, issues a token for a valid Basic login, refuses bad ones', async () => {
    const none = await req('GET', '/v2/', { secret: null });
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toBe(`Bearer realm="${base}/v2/token",service="omni"`);
    expect(none.headers.get('docker-distribution-api-version')).toBe('registry/2.0');
    const tok = await req('GET', '/v2/token?service=omni&scope=repository:a:pull', { secret: null, headers: { authorization: basic(ADMIN) } });
    expect(tok.status).toBe(200);
    expect(tok.json.token).toBe(ADMIN);
    expect((await req('GET', '/v2/', { secret: tok.json.token as string })).status).toBe(200);
    expect((await req('GET', '/v2/', { secret: null, headers: { authorization: basic(ADMIN) } })).status).toBe(200);
    const bad = await req('GET', '/v2/token', { secret: null, headers: { authorization: basic('OMNIA1.wrong') } });
    expect(bad.status).toBe(401);
    expect(errCode(bad)).toBe('UNAUTHORIZED');
    // OAuth2 form (docker with an identity token)
    const form = await req('POST', '/v2/token', { secret: null, body: `grant_type=password&username=x&password=${encodeURIComponent(PULL)}&service=omni`, headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    expect(form.status).toBe(200);
    expect(form.json.refresh_token).toBe(PULL);
    expect((await req('GET', '/v2/', { secret: 'OMNIA1.wrong' })).status).toBe(401);
    const scoped = await req('GET', '/v2/x/manifests/latest', { secret: null });
    expect(scoped.headers.get('www-authenticate')).toContain('scope="repository:x:pull"');
  });

  it('a pull token reads but cannot write', async () => {
    const d = await pushBlob('auth/repo', randomBytes(100));
    expect((await req('HEAD', `/v2/auth/repo/blobs/${d}`, { secret: PULL })).status).toBe(200);
    const post = await req('POST', '/v2/auth/repo/blobs/uploads/', { secret: PULL });
    expect(post.status).toBe(403);
    expect(errCode(post)).toBe('DENIED');
    expect((await req('DELETE', `/v2/auth/repo/blobs/${d}`, { secret: PULL })).status).toBe(403);
  });
});

describe('/v2/ blobs', () => {
  it('chunked upload: POST, PATCH in order (416 out of order), status, PUT with the last chunk', async () => {
    const bytes = randomBytes(PIECE * 2 + 500);
    const start = await req('POST', '/v2/team/web/blobs/uploads/');
    expect(start.status).toBe(202);
    const loc = start.headers.get('location')!;
    expect(loc).toMatch(/^\/v2\/team\/web\/blobs\/uploads\/[0-9a-f-]{36}$/);
    expect(start.headers.get('range')).toBe('0-0');
    const p1 = await req('PATCH', loc, { body: bytes.subarray(0, 1000), headers: { 'content-range': '0-999', 'content-type': 'application/octet-stream' } });
    expect(p1.status).toBe(202);
    expect(p1.headers.get('range')).toBe('0-999');
    const wrong = await req('PATCH', loc, { body: bytes.subarray(2000, 3000), headers: { 'content-range': '2000-2999' } });
    expect(wrong.status).toBe(416);
    // a PATCH without Content-Range appends (docker streams a layer this way)
    const p2 = await req('PATCH', loc, { body: bytes.subarray(1000, PIECE * 2) });
    expect(p2.headers.get('range')).toBe(`0-${PIECE * 2 - 1}`);
    const st = await req('GET', loc);
    expect(st.status).toBe(204);
    expect(st.headers.get('range')).toBe(`0-${PIECE * 2 - 1}`);
    const d = sha(bytes);
    const fin = await req('PUT', `${loc}?digest=${d}`, { body: bytes.subarray(PIECE * 2), headers: { 'content-range': `${PIECE * 2}-${bytes.length - 1}` } });
    expect(fin.status, JSON.stringify(fin.json)).toBe(201);
    expect(fin.headers.get('location')).toBe(`/v2/team/web/blobs/${d}`);
    expect(fin.headers.get('docker-content-digest')).toBe(d);
    expect((await req('GET', loc)).status).toBe(404); // the session is over
    const head = await req('HEAD', `/v2/team/web/blobs/${d}`);
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(bytes.length));
    const got = await req('GET', `/v2/team/web/blobs/${d}`);
    expect(got.bytes.equals(bytes)).toBe(true);
    const part = await req('GET', `/v2/team/web/blobs/${d}`, { headers: { range: `bytes=${PIECE - 10}-${PIECE + 9}` } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes ${PIECE - 10}-${PIECE + 9}/${bytes.length}`);
    expect(part.bytes.equals(bytes.subarray(PIECE - 10, PIECE + 10))).toBe(true);
    const beyond = await req('GET', `/v2/team/web/blobs/${d}`, { headers: { range: `bytes=${bytes.length}-` } });
    expect(beyond.status).toBe(416);
    expect(beyond.headers.get('content-range')).toBe(`bytes */${bytes.length}`);
    // the blob is in team/web only
    expect((await req('HEAD', `/v2/other/repo/blobs/${d}`)).status).toBe(404);
  });

  it('POST then PUT with the whole body; a wrong digest is refused and nothing is stored', async () => {
    const bytes = randomBytes(3000);
    const s = await req('POST', '/v2/two/step/blobs/uploads/');
    const fin = await req('PUT', `${s.headers.get('location')}?digest=${sha(bytes)}`, { body: bytes });
    expect(fin.status).toBe(201);
    const other = randomBytes(10);
    const bad = await req('POST', `/v2/two/step/blobs/uploads/?digest=${sha(other)}`, { body: bytes });
    expect(bad.status).toBe(400);
    expect(errCode(bad)).toBe('DIGEST_INVALID');
    expect(registry.store.has(sha(other))).toBe(false);
    expect(errCode(await req('POST', '/v2/two/step/blobs/uploads/?digest=sha256:nothex', { body: bytes }))).toBe('DIGEST_INVALID');
  });

  it('cross-repository mount: 201 for a known blob, an upload session (202) for an unknown one', async () => {
    const d = await pushBlob('mount/src', randomBytes(700));
    const m = await req('POST', `/v2/mount/dst/blobs/uploads/?mount=${d}&from=mount/src`);
    expect(m.status).toBe(201);
    expect(m.headers.get('location')).toBe(`/v2/mount/dst/blobs/${d}`);
    expect((await req('HEAD', `/v2/mount/dst/blobs/${d}`)).status).toBe(200);
    const unknown = sha(randomBytes(5));
    const u = await req('POST', `/v2/mount/dst/blobs/uploads/?mount=${unknown}&from=mount/src`);
    expect(u.status).toBe(202);
    expect(u.headers.get('location')).toMatch(/uploads\//);
  });

  it('delete unlinks a blob from a repository', async () => {
    const d = await pushBlob('del/blob', randomBytes(50));
    expect((await req('DELETE', `/v2/del/blob/blobs/${d}`)).status).toBe(202);
    expect((await req('HEAD', `/v2/del/blob/blobs/${d}`)).status).toBe(404);
    expect(errCode(await req('DELETE', `/v2/del/blob/blobs/${d}`))).toBe('BLOB_UNKNOWN');
  });

  it('a piece corrupted on disk is caught before it is sent; the blob is dropped and fetched again', async () => {
    const bytes = randomBytes(PIECE * 2);
    const d = await pushBlob('corrupt/me', bytes);
    const fh = await open(join(dir, 'registry', 'blobs', 'sha256', d.slice(7)), 'r+');
    await fh.write(Buffer.from('XXXX'), 0, 4, 10);
    await fh.close();
    const before = fetches;
    const r = await req('GET', `/v2/corrupt/me/blobs/${d}`);
    expect(r.status).toBe(503);
    expect(fetches).toBe(before + 1); // it asked the peers (none here)
    expect(registry.store.has(d)).toBe(false);
  });

  it('refuses invalid names and unknown routes', async () => {
    expect(errCode(await req('GET', '/v2/Bad_Name/tags/list'))).toBe('NAME_INVALID');
    expect((await req('GET', '/v2/a/whatever')).status).toBe(404);
    expect((await req('GET', '/notv2')).status).toBe(404);
  });
});

describe('/v2/ manifests, tags, catalog', () => {
  it('push needs the blobs first; pulls by tag and digest return the exact bytes; tags paginate; delete by tag and digest', async () => {
    const config = randomBytes(200);
    const layer = randomBytes(PIECE + 3);
    const text = imageManifest(sha(config), 200, [[sha(layer), layer.length]]);
    const early = await req('PUT', '/v2/app/one/manifests/v1', { body: text, headers: { 'content-type': DOCKER_MANIFEST } });
    expect(early.status).toBe(404);
    expect(errCode(early)).toBe('MANIFEST_BLOB_UNKNOWN');
    await pushBlob('app/one', config);
    await pushBlob('app/one', layer);
    const put = await req('PUT', '/v2/app/one/manifests/v1', { body: text, headers: { 'content-type': DOCKER_MANIFEST } });
    expect(put.status, JSON.stringify(put.json)).toBe(201);
    const digest = sha(Buffer.from(text));
    expect(put.headers.get('docker-content-digest')).toBe(digest);
    for (const ref of ['v1', digest]) {
      const g = await req('GET', `/v2/app/one/manifests/${ref}`, { headers: { accept: DOCKER_MANIFEST } });
      expect(g.status).toBe(200);
      expect(g.headers.get('content-type')).toBe(DOCKER_MANIFEST);
      expect(g.headers.get('docker-content-digest')).toBe(digest);
      expect(g.bytes.toString()).toBe(text);
      const h = await req('HEAD', `/v2/app/one/manifests/${ref}`);
      expect(h.headers.get('content-length')).toBe(String(Buffer.byteLength(text)));
    }
    // by digest, the body must match
    expect(errCode(await req('PUT', `/v2/app/one/manifests/${sha(randomBytes(3))}`, { body: text, headers: { 'content-type': DOCKER_MANIFEST } }))).toBe('DIGEST_INVALID');
    expect(errCode(await req('PUT', '/v2/app/one/manifests/v9', { body: '{"schemaVersion": 2}', headers: { 'content-type': DOCKER_MANIFEST } }))).toBe('MANIFEST_INVALID');
    for (const t of ['v2', 'v3']) expect((await req('PUT', `/v2/app/one/manifests/${t}`, { body: text, headers: { 'content-type': DOCKER_MANIFEST } })).status).toBe(201);
    const p1 = await req('GET', '/v2/app/one/tags/list?n=2');
    expect(p1.json).toEqual({ name: 'app/one', tags: ['v1', 'v2'] });
    expect(p1.headers.get('link')).toBe('</v2/app/one/tags/list?n=2&last=v2>; rel="next"');
    const p2 = await req('GET', '/v2/app/one/tags/list?n=2&last=v2');
    expect(p2.json).toEqual({ name: 'app/one', tags: ['v3'] });
    expect(p2.headers.get('link')).toBeNull();
    expect(errCode(await req('GET', '/v2/no/such/tags/list'))).toBe('NAME_UNKNOWN');
    expect(((await req('GET', '/v2/_catalog')).json.repositories as string[])).toContain('app/one');
    // an image index listing it (and one listing a manifest not in the repository)
    const index = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: DOCKER_MANIFEST, digest, size: Buffer.byteLength(text), platform: { os: 'linux', architecture: 'amd64' } }] });
    expect((await req('PUT', '/v2/app/one/manifests/multi', { body: index, headers: { 'content-type': OCI_INDEX } })).status).toBe(201);
    const missing = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: sha(randomBytes(4)), size: 10 }] });
    expect(errCode(await req('PUT', '/v2/app/one/manifests/bad', { body: missing, headers: { 'content-type': OCI_INDEX } }))).toBe('MANIFEST_UNKNOWN');
    // delete a tag, then the manifest (its remaining tags go with it)
    expect((await req('DELETE', '/v2/app/one/manifests/v3')).status).toBe(202);
    expect(errCode(await req('GET', '/v2/app/one/manifests/v3'))).toBe('MANIFEST_UNKNOWN');
    expect((await req('DELETE', `/v2/app/one/manifests/${digest}`)).status).toBe(202);
    expect(errCode(await req('GET', `/v2/app/one/manifests/${digest}`))).toBe('MANIFEST_UNKNOWN');
    expect((await req('GET', '/v2/app/one/tags/list')).json).toEqual({ name: 'app/one', tags: ['multi'] });
  });

  it('referrers list the manifests whose subject is a digest', async () => {
    const config = randomBytes(20);
    await pushBlob('ref/repo', config);
    const target = imageManifest(sha(config), 20, []);
    await req('PUT', '/v2/ref/repo/manifests/t', { body: target, headers: { 'content-type': DOCKER_MANIFEST } });
    const subject = sha(Buffer.from(target));
    const sig = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: 'application/x-signature', config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha(config), size: 20 }, layers: [], subject: { mediaType: DOCKER_MANIFEST, digest: subject, size: Buffer.byteLength(target) } });
    const put = await req('PUT', `/v2/ref/repo/manifests/${sha(Buffer.from(sig))}`, { body: sig, headers: { 'content-type': OCI_MANIFEST } });
    expect(put.status).toBe(201);
    expect(put.headers.get('oci-subject')).toBe(subject);
    const r = await req('GET', `/v2/ref/repo/referrers/${subject}`);
    expect(r.json.manifests).toEqual([{ mediaType: OCI_MANIFEST, digest: sha(Buffer.from(sig)), size: Buffer.byteLength(sig), artifactType: 'application/x-signature' }]);
  });
});
