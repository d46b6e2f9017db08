// Image files through a real /v2/ registry in process (cli/omni/image-files.ts with the CLI's
// RegistryClient): a docker save tarball (a layer given twice as a symbolic link, as docker writes
// it) is pushed with its layers compressed and checked against the config's diff_ids; the image
// is fetched back into a layout that docker load and skopeo read, and that layout pushed again
// under another name gives the same digest. Untrusted archives are refused before anything is
// read: paths that leave the directory, absolute paths, hard links, devices, links out of the
// archive; a layer, a manifest or a blob whose bytes differ from its digest is refused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { Registry } from '../../node/registry/registry.js';
import { RegistryClient } from '../../cli/omni/registry-client.js';
import { Progress } from '../../cli/omni/progress.js';
import { extractArchive, fetchImage, finishLayout, newFetchContext, newLayoutDir, newPushContext, openSource, pushSourceImage, SourceTree } from '../../node/registry/image-files.js';
import { selectImage } from '../../cli/omni/images-transfer.js';
import { layoutBlobPath } from '../../protocol/registry/image-archive.js';
import { tagImage } from '../../node/api/images-routes.js';
import { SELF } from '../../node/cluster/caller.js';
import { openTestRegistry, registryCluster } from '../support/registry-harness.js';

const ADMIN = 'OMNIA1.test-admin-token';
const sha = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');
const quiet = () => new Progress('t', { stream: { isTTY: false, write: () => true } });

let dir: string;
let registry: Registry;
let reg: RegistryClient;
let n = 0;
const fresh = () => mkdtemp(join(dir, `w${n++}-`));

/** A raw tar (ustar headers written by hand, so that entries the tar package would never write can be made). */
function rawTar(entries: { name: string; type?: string; data?: Buffer; link?: string }[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const h = Buffer.alloc(512);
    const data = e.data ?? Buffer.alloc(0);
    h.write(e.name, 0, 100, 'utf8');
    h.write('0000644\0', 100);
    h.write('0000000\0', 108);
    h.write('0000000\0', 116);
    h.write(data.length.toString(8).padStart(11, '0') + '\0', 124);
    h.write('00000000000\0', 136);
    h.write('        ', 148);
    h.write(e.type ?? '0', 156);
    if (e.link) h.write(e.link, 157, 100, 'utf8');
    h.write('ustar\0', 257);
    h.write('00', 263);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
    blocks.push(h, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

/** A layer: a tar holding one file. */
const layerTar = (name: string, bytes: Buffer) => rawTar([{ name, data: bytes }]);

/** A docker save tarball (Docker before 25) of one image whose second and third layers are the same (a symbolic link). */
function dockerSave(o: { tag?: string; badDiffId?: boolean } = {}): { tar: Buffer; configDigest: string; layers: Buffer[] } {
  const l1 = layerTar('a.txt', randomBytes(70_000));
  const l2 = layerTar('b.txt', Buffer.from('same\n'));
  const diffIds = [sha(l1), sha(l2), sha(l2)];
  if (o.badDiffId) diffIds[0] = sha(Buffer.from('other'));
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: diffIds }, config: { Cmd: ['sh'] } }));
  const cfgName = `${sha(config).slice(7)}.json`;
  const manifest = JSON.stringify([{ Config: cfgName, RepoTags: [o.tag ?? 'files/app:1'], Layers: ['l1/layer.tar', 'l2/layer.tar', 'l3/layer.tar'] }]);
  const tar = rawTar([
    { name: 'l1/', type: '5' },
    { name: 'l1/layer.tar', data: l1 },
    { name: 'l2/', type: '5' },
    { name: 'l2/layer.tar', data: l2 },
    { name: 'l3/', type: '5' },
    { name: 'l3/layer.tar', type: '2', link: '../l2/layer.tar' },
    { name: cfgName, data: config },
    { name: 'manifest.json', data: Buffer.from(manifest) },
  ]);
  return { tar, configDigest: sha(config), layers: [l1, l2] };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'omni-image-files-'));
  registry = await openTestRegistry({ cluster: registryCluster([{ id: 'a1', secret: ADMIN, role: 'admin' }]), dataDir: join(dir, 'node'), listen: true });
  reg = new RegistryClient(registry.server!.url, ADMIN);
});
afterAll(async () => {
  await registry?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('docker save tarball → registry → layout', () => {
  it('pushes the image with gzip layers checked against the diff_ids; the same tarball gives the same digest; fetched back it is a layout docker load reads', async () => {
    const save = dockerSave();
    const file = join(dir, 'save.tar');
    await writeFile(file, save.tar);
    const push = async () => {
      const work = await fresh();
      const src = await openSource(file, work);
      expect(src.format).toBe('docker-archive');
      expect(src.images.map((i) => i.names)).toEqual([[{ repository: 'files/app', tag: '1' }]]);
      const ctx = newPushContext(reg, quiet(), work);
      const r = await pushSourceImage(ctx, src, src.images[0], 'files/app');
      await reg.putManifest('files/app', '1', r.bytes, r.mediaType);
      return { r, stats: ctx.stats };
    };
    const first = await push();
    // config + 2 distinct layers (the third is the second again, by link: there once it is pushed)
    expect(first.stats).toMatchObject({ uploaded: 3, present: 1, manifests: 1 });
    const again = await push();
    expect(again.r.digest).toBe(first.r.digest);
    expect(again.stats).toMatchObject({ uploaded: 0, present: 4 });
    expect(await reg.resolveTag('files/app', '1')).toBe(first.r.digest);

    // fetched back: the manifest, the config as it was, layers that gunzip to the originals
    const out = await fresh();
    await newLayoutDir(out);
    const ctx = newFetchContext(reg, quiet(), out);
    const top = await fetchImage(ctx, 'files/app', first.r.digest);
    expect(top.image!.config).toBe(save.configDigest);
    // three layers as the config has three diff_ids (the last two the same blob)
    expect(top.image!.layers).toHaveLength(3);
    expect(top.image!.layers[2]).toBe(top.image!.layers[1]);
    const layers = await Promise.all(top.image!.layers.map((d) => readFile(join(out, layoutBlobPath(d)))));
    expect(layers.map((b) => sha(gunzipSync(b)))).toEqual([save.layers[0], save.layers[1], save.layers[1]].map(sha));
    expect(ctx.stats.blobs).toBe(4);
    await finishLayout(out, [{ ...top, name: { repository: 'files/app', tag: '1' } }], { dockerLoad: true });
    const load = JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8'));
    expect(load).toEqual([{ Config: layoutBlobPath(save.configDigest), RepoTags: ['files/app:1'], Layers: top.image!.layers.map(layoutBlobPath) }]);
    for (const p of [load[0].Config, ...load[0].Layers]) expect(existsSync(join(out, p)), p).toBe(true);

    // that layout pushed under another name: nothing uploaded (mounted), the same digest
    const src2 = await openSource(out, await fresh());
    expect(src2.format).toBe('oci-layout');
    expect(selectImage(src2, undefined, out).names).toEqual([{ repository: 'files/app', tag: '1' }]);
    const ctx2 = newPushContext(reg, quiet(), await fresh());
    const r2 = await pushSourceImage(ctx2, src2, src2.images[0], 'other/name');
    expect(r2.digest).toBe(first.r.digest);
    expect(ctx2.stats).toMatchObject({ uploaded: 0, present: 3 });
  });

  it('reads a gzip-compressed docker save tarball the same way', async () => {
    const save = dockerSave({ tag: 'files/gz:1' });
    const file = join(dir, 'save.tar.gz');
    await writeFile(file, gzipSync(save.tar));
    const work = await fresh();
    const src = await openSource(file, work);
    expect(src.format).toBe('docker-archive');
    expect(src.images[0].names).toEqual([{ repository: 'files/gz', tag: '1' }]);
    const r = await pushSourceImage(newPushContext(reg, quiet(), work), src, src.images[0], 'files/gz');
    expect(r.mediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
  });

  it('refuses a layer whose content is not what the config says', async () => {
    const file = join(dir, 'bad-diff.tar');
    await writeFile(file, dockerSave({ badDiffId: true }).tar);
    const work = await fresh();
    const src = await openSource(file, work);
    await expect(pushSourceImage(newPushContext(reg, quiet(), work), src, src.images[0], 'files/bad')).rejects.toThrow(/layer l1\/layer\.tar has digest sha256:[0-9a-f]+, but the image config says/);
  });
});

describe('untrusted archives', () => {
  const refused = async (name: string, entries: Parameters<typeof rawTar>[0], why: RegExp) => {
    const file = join(dir, name);
    await writeFile(file, rawTar(entries));
    const work = await fresh();
    await expect(openSource(file, work), name).rejects.toThrow(why);
    return work;
  };

  it('refuses paths that leave the directory, absolute paths, hard links, devices and links out of the archive — and writes nothing outside', async () => {
    const outside = join(dir, 'escaped');
    const w = await refused('dotdot.tar', [{ name: 'manifest.json', data: Buffer.from('[]') }, { name: '../escaped', data: Buffer.from('x') }], /leaves its directory/);
    expect(existsSync(outside)).toBe(false);
    expect(existsSync(join(w, '..', 'escaped'))).toBe(false);
    await refused('abs.tar', [{ name: '/tmp/omni-abs-test', data: Buffer.from('x') }], /absolute path/);
    expect(existsSync('/tmp/omni-abs-test')).toBe(false);
    await refused('hard.tar', [{ name: 'a', data: Buffer.from('x') }, { name: 'b', type: '1', link: 'a' }], /type Link/);
    await refused('dev.tar', [{ name: 'null', type: '3' }], /type CharacterDevice/);
    await refused('link-out.tar', [{ name: 'x/layer.tar', type: '2', link: '../../../etc/passwd' }], /outside the archive/);
    await refused('link-abs.tar', [{ name: 'layer.tar', type: '2', link: '/etc/passwd' }], /absolute path/);
    await writeFile(join(dir, 'garbage.tar'), 'not a tar at all '.repeat(100));
    await expect(openSource(join(dir, 'garbage.tar'), await fresh())).rejects.toThrow(/not a readable tar|neither a docker save/);
    await refused('empty.tar', [{ name: 'hello.txt', data: Buffer.from('x') }], /neither a docker save tarball .* nor an OCI image layout/);
  });

  it('a layout directory: a symbolic link out of it is refused, one inside is followed', async () => {
    const d = await fresh();
    await mkdir(join(d, 'blobs', 'sha256'), { recursive: true });
    await writeFile(join(d, 'real'), 'hello');
    await symlink('real', join(d, 'inside'));
    await symlink('/etc/hostname', join(d, 'out'));
    await symlink('../../../../etc', join(d, 'blobs', 'up'));
    const tree = new SourceTree(d, d);
    expect((await tree.file('inside'))?.sizeBytes).toBe(5);
    await expect(tree.file('out')).rejects.toThrow(/absolute path/);
    await expect(tree.file('blobs/up/hostname')).rejects.toThrow(/outside the archive/);
    await expect(tree.file('../real')).rejects.toThrow(/leaves its directory/);
    expect(await tree.file('missing')).toBeUndefined();
  });

  it('an extracted archive: links resolve inside it only (never written to disk)', async () => {
    const file = join(dir, 'links.tar');
    await writeFile(file, rawTar([{ name: 'a/f', data: Buffer.from('abc') }, { name: 'b/g', type: '2', link: '../a/f' }, { name: 'c', type: '2', link: 'b' }]));
    const work = await fresh();
    const links = await extractArchive(file, work);
    expect([...links]).toEqual([['b/g', 'a/f'], ['c', 'b']]);
    expect((await readdir(work)).sort()).toEqual(['a']);
    const tree = new SourceTree(file, work, links);
    expect((await tree.file('b/g'))?.path).toBe(join(work, 'a/f'));
    expect((await tree.file('c/g'))?.path).toBe(join(work, 'a/f'));
  });

  it('an OCI layout whose manifest or blob does not match its digest is refused', async () => {
    const lay = await fresh();
    await newLayoutDir(lay);
    const put = (b: Buffer, as = sha(b)) => writeFile(join(lay, layoutBlobPath(as)), b).then(() => as);
    const config = Buffer.from(JSON.stringify({ os: 'linux', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: [] }, n: randomBytes(8).toString('hex') }));
    const layer = randomBytes(5000);
    const claimed = sha(layer);
    const tampered = Buffer.from(layer);
    tampered[0] ^= 0xff;
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: await put(config), size: config.length }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: await put(tampered, claimed), size: layer.length }] }));
    const md = await put(manifest);
    await writeFile(join(lay, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: md, size: manifest.length }] }));
    await writeFile(join(lay, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    const push = async () => {
      const src = await openSource(lay, await fresh());
      return pushSourceImage(newPushContext(reg, quiet(), await fresh()), src, selectImage(src, undefined, lay), 'files/tampered');
    };
    // a layer with other bytes under its digest: the registry refuses it
    await expect(push()).rejects.toThrow(/blob sha256:[0-9a-f]+ does not match its digest/);
    expect(await reg.hasBlob('files/tampered', claimed)).toBe(false);
    // a manifest with other bytes under its digest
    await put(layer);
    await put(Buffer.from(manifest.toString('utf8').replace('"schemaVersion":2', '"schemaVersion": 2')), md);
    await expect(push()).rejects.toThrow(/manifest sha256:[0-9a-f]+ does not match its digest/);
    // put right, it goes in
    await put(manifest);
    expect((await push()).digest).toBe(md);
  });
});

describe('omni images tag', () => {
  it('into another repository: an index and the manifests it lists are linked there, nothing copied; a missing source is NOT_FOUND', async () => {
    const save = dockerSave({ tag: 'tags/src:1' });
    const file = join(dir, 'tag-src.tar');
    await writeFile(file, save.tar);
    const work = await fresh();
    const src = await openSource(file, work);
    const img = await pushSourceImage(newPushContext(reg, quiet(), work), src, src.images[0], 'tags/src');
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [{ mediaType: img.mediaType, digest: img.digest, size: img.bytes.length, platform: { os: 'linux', architecture: 'amd64' } }] }));
    await reg.putManifest('tags/src', 'multi', index, 'application/vnd.oci.image.index.v1+json');
    const held = registry.store.held().length;
    const r = await tagImage(registry.catalog, { repository: 'tags/src', tag: 'multi' }, { repository: 'tags/dst', tag: 'v2' }, SELF);
    expect(r).toEqual({ source: 'tags/src:multi', target: 'tags/dst:v2', digest: sha(index) });
    expect(await reg.resolveTag('tags/dst', 'v2')).toBe(sha(index));
    expect((await reg.manifest('tags/dst', img.digest)).bytes.equals(img.bytes)).toBe(true); // the child is in tags/dst too
    expect(await reg.hasBlob('tags/dst', save.configDigest)).toBe(true);
    expect(registry.store.held().length).toBe(held);
    // in the same repository, by digest
    expect((await tagImage(registry.catalog, { repository: 'tags/src', digest: img.digest }, { repository: 'tags/src' }, SELF)).target).toBe('tags/src:latest');
    await expect(tagImage(registry.catalog, { repository: 'tags/none', tag: '1' }, { repository: 'tags/x' }, SELF)).rejects.toThrow(/no image tags\/none:1/);
    await expect(tagImage(registry.catalog, { repository: 'tags/src', tag: 'multi' }, { repository: 'tags/x', digest: img.digest }, SELF)).rejects.toThrow(/not a digest/);
  });
});
