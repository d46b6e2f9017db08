// A random image as an OCI layout directory, for the registry benchmark: gzip'ed tar layers of
// random bytes (incompressible; gzip'ed so that skopeo pushes them as they are rather than
// compressing them itself), a config and a manifest tagged `1`, so skopeo can push it
// (`oci:DIR:1`) with every digest unchanged.
import { mkdir, mkdtemp, rm, writeFile, open, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import * as tar from 'tar';


export interface Blob {
  digest: string;
  sizeBytes: number;
}

export interface Image {
  dir: string;
  manifestDigest: string;
  blobs: Blob[];
  /** Bytes of the manifest and every blob. */
  totalBytes: number;
}

const sha256 = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** An OCI layout in `dir` with one image of about `totalMb` MB: three layers (half, 30 % and 20 %) of random bytes. */
export async function makeImage(dir: string, totalMb: number, seedName: string): Promise<Image> {
  const blobsDir = join(dir, 'blobs', 'sha256');
  await mkdir(blobsDir, { recursive: true });
  const put = async (bytes: Buffer): Promise<Blob> => {
    const digest = sha256(bytes);
    await writeFile(join(blobsDir, digest.slice(7)), bytes);
    return { digest, sizeBytes: bytes.length };
  };
  const layers: Blob[] = [];
  const diffIds: string[] = [];
  const shares = [0.5, 0.3, 0.2];
  for (const [i, share] of shares.entries()) {
    const work = await mkdtemp(join(tmpdir(), 'omni-bench-layer-'));
    try {
      const size = Math.round(totalMb * 1e6 * share);
      const fh = await open(join(work, `data-${seedName}-${i}`), 'w');
      for (let off = 0; off < size; off += 1 << 20) await fh.write(randomBytes(Math.min(1 << 20, size - off)));
      await fh.close();
      const tarPath = join(work, 'layer.tar');
      await tar.c({ cwd: work, file: tarPath, portable: true, noMtime: true }, [`data-${seedName}-${i}`]);
      const plain = await readFile(tarPath);
      diffIds.push(sha256(plain));
      layers.push(await put(gzipSync(plain, { level: 1 })));
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: ['/bin/true'] },
      rootfs: { type: 'layers', diff_ids: diffIds },
    }),
  );
  const cfg = await put(config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cfg.digest, size: cfg.sizeBytes },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: l.digest, size: l.sizeBytes })),
    }),
  );
  const m = await put(manifest);
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: m.digest, size: m.sizeBytes, annotations: { 'org.opencontainers.image.ref.name': '1' } }] }),
  );
  const blobs = [...layers, cfg];
  return { dir, manifestDigest: m.digest, blobs, totalBytes: manifest.length + blobs.reduce((n, b) => n + b.sizeBytes, 0) };
}
