// The air-gap bundle's format (protocol/registry/bundle.ts) and the import's extraction, which
// refuses anything a bundle does not hold (links, other files) before reading it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tar from 'tar';
import { BUNDLE_FORMAT, BUNDLE_VERSION, bundleEntryAllowed, ociIndex, readBundleMeta } from '../../protocol/registry/bundle.js';
import { extractBundle } from '../../cli/omni/bundle.js';
import { OCI_INDEX, OCI_MANIFEST } from '../../protocol/registry/media-types.js';

const D = 'sha256:' + 'a'.repeat(64);
const meta = (over: Record<string, unknown> = {}) => JSON.stringify({ format: BUNDLE_FORMAT, version: BUNDLE_VERSION, createdAtMs: 5, apps: [{ name: 'web', image: `team/web@${D}` }], images: [{ repository: 'team/web', digest: D, tags: ['1'] }], ...over });

describe('bundle format', () => {
  it('reads its metadata and refuses what is not a bundle of this version, with a reason', () => {
    const ok = readBundleMeta(meta());
    expect(ok).toEqual({ ok: true, meta: { format: BUNDLE_FORMAT, version: 1, createdAtMs: 5, apps: [{ name: 'web', image: `team/web@${D}` }], images: [{ repository: 'team/web', digest: D, tags: ['1'] }] } });
    expect(readBundleMeta('nope')).toMatchObject({ ok: false, message: expect.stringContaining('not JSON') });
    expect(readBundleMeta(meta({ format: 'docker' }))).toMatchObject({ ok: false, message: expect.stringContaining('not an Omni bundle') });
    expect(readBundleMeta(meta({ version: 2 }))).toMatchObject({ ok: false, message: expect.stringContaining('version') });
    expect(readBundleMeta(meta({ apps: [{ image: 'x' }] }))).toMatchObject({ ok: false, message: expect.stringContaining('apps[0]') });
    expect(readBundleMeta(meta({ images: [{ repository: 'Bad', digest: D }] }))).toMatchObject({ ok: false, message: expect.stringContaining('repository') });
    expect(readBundleMeta(meta({ images: [{ repository: 'a', digest: 'sha256:12' }] }))).toMatchObject({ ok: false, message: expect.stringContaining('digest') });
    expect(readBundleMeta(meta({ images: [{ repository: 'a', digest: D, tags: ['-x'] }] }))).toMatchObject({ ok: false, message: expect.stringContaining('tags') });
  });

  it('allows only the layout files, the blobs directory and blobs named by a digest', () => {
    for (const [p, t] of [['oci-layout', 'File'], ['./index.json', 'File'], ['omni-bundle.json', 'File'], ['blobs/', 'Directory'], ['blobs/sha256/', 'Directory'], [`blobs/sha256/${'f'.repeat(64)}`, 'File']]) expect(bundleEntryAllowed(p, t), p).toBe(true);
    for (const [p, t] of [['evil.sh', 'File'], [`blobs/sha256/${'f'.repeat(64)}`, 'SymbolicLink'], [`blobs/sha256/${'f'.repeat(64)}`, 'Link'], ['blobs/sha256/x', 'File'], ['../index.json', 'File'], ['etc/', 'Directory']]) expect(bundleEntryAllowed(p, t), `${p} ${t}`).toBe(false);
  });

  it('its OCI index names each image by repository and tag', () => {
    const idx = JSON.parse(ociIndex([{ repository: 'team/web', digest: D, tags: ['1', '2'], mediaType: OCI_MANIFEST, sizeBytes: 10 }, { repository: 'x', digest: D, tags: [], mediaType: OCI_MANIFEST, sizeBytes: 3 }]));
    expect(idx.mediaType).toBe(OCI_INDEX);
    expect(idx.manifests.map((m: { annotations: Record<string, string> }) => m.annotations['org.opencontainers.image.ref.name'])).toEqual(['team/web:1', `x@${D}`]);
    expect(idx.manifests[0]).toMatchObject({ digest: D, size: 10, mediaType: OCI_MANIFEST });
  });
});

describe('bundle extraction', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-bundle-unit-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function makeTar(name: string, build: (src: string) => Promise<string[]>): Promise<string> {
    const src = join(dir, `${name}-src`);
    await mkdir(join(src, 'blobs', 'sha256'), { recursive: true });
    const entries = await build(src);
    const file = join(dir, `${name}.tar`);
    await tar.c({ file, cwd: src, portable: true }, entries);
    return file;
  }

  it('extracts a bundle and reads its metadata', async () => {
    const file = await makeTar('good', async (src) => {
      await writeFile(join(src, 'omni-bundle.json'), meta());
      await writeFile(join(src, 'blobs', 'sha256', 'a'.repeat(64)), 'x');
      return ['omni-bundle.json', 'blobs'];
    });
    const out = await mkdtemp(join(dir, 'x-'));
    expect((await extractBundle(file, out)).images[0].digest).toBe(D);
  });

  it('refuses a bundle holding a symlink, a file that is not part of a bundle, or no metadata', async () => {
    const link = await makeTar('link', async (src) => {
      await writeFile(join(src, 'omni-bundle.json'), meta());
      await symlink('/etc/passwd', join(src, 'blobs', 'sha256', 'b'.repeat(64)));
      return ['omni-bundle.json', 'blobs'];
    });
    await expect(extractBundle(link, await mkdtemp(join(dir, 'x-')))).rejects.toThrow(/SymbolicLink.*not part of a bundle/);
    const extra = await makeTar('extra', async (src) => {
      await writeFile(join(src, 'omni-bundle.json'), meta());
      await writeFile(join(src, 'run.sh'), 'echo hi');
      return ['omni-bundle.json', 'run.sh'];
    });
    await expect(extractBundle(extra, await mkdtemp(join(dir, 'x-')))).rejects.toThrow(/run\.sh/);
    const none = await makeTar('none', async (src) => {
      await writeFile(join(src, 'oci-layout'), '{}');
      return ['oci-layout'];
    });
    await expect(extractBundle(none, await mkdtemp(join(dir, 'x-')))).rejects.toThrow(/no omni-bundle\.json/);
    await writeFile(join(dir, 'garbage.tar'), 'this is not a tar file at all'.repeat(40));
    await expect(extractBundle(join(dir, 'garbage.tar'), await mkdtemp(join(dir, 'x-')))).rejects.toThrow(/BUNDLE_INVALID|not a readable tar|no omni-bundle/);
  });
});
