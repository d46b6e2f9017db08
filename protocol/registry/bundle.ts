// The air-gap bundle (`omni bundle export` / `import`): a set of apps and their images in one
// tar file, so a cluster with no network to anywhere else can run them. The tar is an OCI image
// layout (so `skopeo copy oci-archive:FILE:team/api:1.4 …` reads it too) plus Omni's metadata:
//
//   oci-layout          {"imageLayoutVersion": "1.0.0"}
//   index.json          an OCI index: one descriptor per image (the manifest an app runs), with
//                       org.opencontainers.image.ref.name = REPO:TAG (or REPO@DIGEST untagged)
//   omni-bundle.json    {format, version, createdAtMs, apps: [spec…], images: [{repository, digest, tags}]}
//   blobs/sha256/<hex>  every manifest, config and layer, named by its digest
//
// Pure: names, shapes, limits and checks. The files move in cli/omni/bundle.ts.
import { isDigest } from './digest.js';
import { isRepositoryName, isTag } from './reference.js';
import { OCI_INDEX } from './media-types.js';

export const BUNDLE_FORMAT = 'omni.bundle';
export const BUNDLE_VERSION = 1;
export const BUNDLE_META_FILE = 'omni-bundle.json';
export const OCI_LAYOUT_FILE = 'oci-layout';
export const OCI_INDEX_FILE = 'index.json';
export const BLOBS_DIR = 'blobs/sha256';
/** Apps and images one bundle may hold, and the largest metadata file read. */
export const MAX_BUNDLE_APPS = 1000;
export const MAX_BUNDLE_IMAGES = 1000;
export const MAX_BUNDLE_TAGS_PER_IMAGE = 100;
export const MAX_BUNDLE_META_BYTES = 16 * 1024 * 1024;
/** Entries a bundle may have (blobs, directories, the three metadata files). */
export const MAX_BUNDLE_ENTRIES = 100_000;

export interface BundleImage {
  repository: string;
  /** The manifest (or index) the apps run. */
  digest: string;
  /** Tags of the source registry that pointed at it (recorded again on import). */
  tags: string[];
}

export interface BundleMeta {
  format: typeof BUNDLE_FORMAT;
  version: typeof BUNDLE_VERSION;
  createdAtMs: number;
  /** App specs, as `omni inspect` shows them (images pinned to digests). */
  apps: Record<string, unknown>[];
  images: BundleImage[];
}

/** A path inside the tar (a leading `./` dropped) that a bundle may contain. */
export function bundleEntryAllowed(path: string, type: string): boolean {
  const p = path.replace(/^\.\//, '').replace(/\/$/, '');
  if (type === 'Directory') return p === '' || p === 'blobs' || p === BLOBS_DIR;
  if (type !== 'File' && type !== 'OldFile' && type !== 'ContiguousFile') return false;
  return p === OCI_LAYOUT_FILE || p === OCI_INDEX_FILE || p === BUNDLE_META_FILE || new RegExp(`^${BLOBS_DIR}/[a-f0-9]{64}$`).test(p);
}

/** The file of a digest inside the layout. */
export function blobPath(digest: string): string {
  return `${BLOBS_DIR}/${digest.slice('sha256:'.length)}`;
}

/** The OCI index of a bundle: one entry per image, named by its first tag. */
export function ociIndex(images: readonly (BundleImage & { mediaType: string; sizeBytes: number })[]): string {
  return JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: images.map((i) => ({
      mediaType: i.mediaType,
      digest: i.digest,
      size: i.sizeBytes,
      annotations: { 'org.opencontainers.image.ref.name': i.tags.length > 0 ? `${i.repository}:${i.tags[0]}` : `${i.repository}@${i.digest}` },
    })),
  });
}

export type BundleMetaResult = { ok: true; meta: BundleMeta } | { ok: false; message: string };

/** Parses and checks omni-bundle.json (an untrusted file). */
export function readBundleMeta(text: string): BundleMetaResult {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return { ok: false, message: `${BUNDLE_META_FILE} is not JSON` };
  }
  if (!o || typeof o !== 'object' || Array.isArray(o)) return { ok: false, message: `${BUNDLE_META_FILE} must be a JSON object` };
  if (o.format !== BUNDLE_FORMAT) return { ok: false, message: `not an Omni bundle (format ${JSON.stringify(String(o.format).slice(0, 40))}, expected ${BUNDLE_FORMAT})` };
  if (o.version !== BUNDLE_VERSION) return { ok: false, message: `bundle version ${JSON.stringify(String(o.version).slice(0, 20))} is not supported (this omni reads version ${BUNDLE_VERSION})` };
  if (!Array.isArray(o.apps) || o.apps.length > MAX_BUNDLE_APPS) return { ok: false, message: `apps: must be a list of at most ${MAX_BUNDLE_APPS} app specs` };
  for (const [i, a] of o.apps.entries()) {
    if (!a || typeof a !== 'object' || Array.isArray(a) || typeof (a as { name?: unknown }).name !== 'string') return { ok: false, message: `apps[${i}]: must be an app spec with a name` };
  }
  if (!Array.isArray(o.images) || o.images.length > MAX_BUNDLE_IMAGES) return { ok: false, message: `images: must be a list of at most ${MAX_BUNDLE_IMAGES} images` };
  const images: BundleImage[] = [];
  for (const [i, x] of (o.images as unknown[]).entries()) {
    const im = x as Partial<BundleImage> | null;
    if (!im || typeof im !== 'object') return { ok: false, message: `images[${i}]: must be an object` };
    if (!isRepositoryName(im.repository)) return { ok: false, message: `images[${i}].repository: not a valid repository name` };
    if (!isDigest(im.digest)) return { ok: false, message: `images[${i}].digest: not a sha256 digest` };
    const tags = im.tags ?? [];
    if (!Array.isArray(tags) || tags.length > MAX_BUNDLE_TAGS_PER_IMAGE || !tags.every(isTag)) return { ok: false, message: `images[${i}].tags: must be at most ${MAX_BUNDLE_TAGS_PER_IMAGE} valid tags` };
    images.push({ repository: im.repository as string, digest: im.digest as string, tags: tags as string[] });
  }
  const createdAtMs = typeof o.createdAtMs === 'number' && Number.isSafeInteger(o.createdAtMs) && o.createdAtMs >= 0 ? o.createdAtMs : 0;
  return { ok: true, meta: { format: BUNDLE_FORMAT, version: BUNDLE_VERSION, createdAtMs, apps: o.apps as Record<string, unknown>[], images } };
}
