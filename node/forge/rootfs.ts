// A runtime base image from a root filesystem (a directory, or a tar of one), with no registry
// and no Docker: `omni images import-rootfs DIR|TAR REPO:TAG`. A directory becomes one
// reproducible layer (node/forge/layer.ts: sorted, fixed mtime, uid/gid 0, normalised modes —
// set-uid bits and owners are not kept; sockets and device files are left out), so the same tree
// gives the same digest; a tar is stored as it is (gzipped), owners and modes included.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { createGzip, createGunzip } from 'node:zlib';
import { OCI_CONFIG, OCI_LAYER_GZIP, FIXED_CREATED } from '../../protocol/forge/image.js';
import { OCI_MANIFEST } from '../../protocol/registry/media-types.js';
import { OmniError } from '../errors.js';
import { collectTree, writeLayer, type LayerBlob } from './layer.js';
import type { BuildRegistry } from './builder.js';

export interface RootfsImport {
  repository: string;
  tag: string;
  digest: string;
  layer: { digest: string; diffId: string; sizeBytes: number };
  uploaded: boolean;
}

export interface RootfsOptions {
  architecture: string;
  env?: string[];
  cmd?: string[];
  maxBytes?: number;
}

const tap = (h: ReturnType<typeof createHash>, count?: { n: number }) =>
  new Transform({
    transform(c: Buffer, _e, cb) {
      h.update(c);
      if (count) count.n += c.length;
      cb(null, c);
    },
  });

/** A tar file (gzip or not) as a gzip layer, unchanged inside. */
async function tarLayer(path: string, out: string): Promise<LayerBlob> {
  const magic = Buffer.alloc(2);
  const fh = await open(path, 'r');
  try {
    await fh.read(magic, 0, 2, 0);
  } finally {
    await fh.close();
  }
  const gzipped = magic[0] === 0x1f && magic[1] === 0x8b;
  const raw = createHash('sha256');
  const gz = createHash('sha256');
  const size = { n: 0 };
  if (gzipped) await pipeline(createReadStream(path), createGunzip(), tap(raw), createGzip({ level: 6 }), tap(gz, size), createWriteStream(out));
  else await pipeline(createReadStream(path), tap(raw), createGzip({ level: 6 }), tap(gz, size), createWriteStream(out));
  return { digest: 'sha256:' + gz.digest('hex'), diffId: 'sha256:' + raw.digest('hex'), sizeBytes: size.n, entries: 0 };
}

/** Imports DIR|TAR as REPO:TAG (one layer) through the registry. */
export async function importRootfs(reg: BuildRegistry, source: string, repo: string, tag: string, o: RootfsOptions): Promise<RootfsImport> {
  const st = await stat(source).catch(() => undefined);
  if (!st) throw new OmniError('NOT_FOUND', `${source} does not exist`);
  const work = await mkdtemp(join(tmpdir(), 'omni-rootfs-'));
  try {
    const layerPath = join(work, 'layer.tar.gz');
    let blob: LayerBlob;
    if (st.isDirectory()) {
      const tree = await collectTree(source, { prefix: '', skipSpecial: true, maxBytes: o.maxBytes ?? 4 * 1024 * 1024 * 1024 });
      blob = await writeLayer(tree.entries, layerPath);
    } else if (st.isFile()) blob = await tarLayer(source, layerPath);
    else throw new OmniError('INVALID_ARGUMENT', `${source} is neither a directory nor a tar file`);
    const config = Buffer.from(
      JSON.stringify({
        created: FIXED_CREATED,
        architecture: o.architecture,
        os: 'linux',
        config: { Env: o.env ?? ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], ...(o.cmd ? { Cmd: o.cmd } : {}) },
        rootfs: { type: 'layers', diff_ids: [blob.diffId] },
        history: [{ created: FIXED_CREATED, created_by: 'omni images import-rootfs' }],
      }),
    );
    const cfgDigest = 'sha256:' + createHash('sha256').update(config).digest('hex');
    await writeFile(join(work, 'config.json'), config);
    let uploaded = false;
    if (!(await reg.hasBlob(repo, blob.digest)) && !(await reg.mountBlob(repo, blob.digest))) {
      await reg.uploadBlob(repo, blob.digest, layerPath);
      uploaded = true;
    }
    if (!(await reg.hasBlob(repo, cfgDigest))) await reg.uploadBlob(repo, cfgDigest, join(work, 'config.json'));
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: OCI_CONFIG, digest: cfgDigest, size: config.length }, layers: [{ mediaType: OCI_LAYER_GZIP, digest: blob.digest, size: blob.sizeBytes }] }));
    const digest = 'sha256:' + createHash('sha256').update(manifest).digest('hex');
    await reg.putManifest(repo, digest, manifest, OCI_MANIFEST);
    await reg.putManifest(repo, tag, manifest, OCI_MANIFEST);
    return { repository: repo, tag, digest, layer: { digest: blob.digest, diffId: blob.diffId, sizeBytes: blob.sizeBytes }, uploaded };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
