// Validation of pushed manifests (image manifests and indexes, OCI and Docker schema 2), and
// the digests they reference: the blobs an image manifest needs (config and layers) and the
// manifests an index lists. Pure: bytes in, a verdict out.
import { isDigest } from './digest.js';
import { DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_SCHEMA1, OCI_INDEX, OCI_MANIFEST, baseMediaType, manifestKind, type ManifestKind } from './media-types.js';

/**
 * Largest manifest accepted. Manifests live in the replicated state (they are small: a few KiB
 * for an image with dozens of layers), so this is far below the spec's suggested 4 MiB.
 */
export const MAX_MANIFEST_BYTES = 256 * 1024;
/** Descriptors an image manifest (layers) or an index (manifests) may list. */
export const MAX_DESCRIPTORS = 1000;
const MAX_MEDIA_TYPE_CHARS = 255;

export interface Descriptor {
  mediaType: string;
  digest: string;
  sizeBytes: number;
}

export interface PlatformInfo {
  os?: string;
  architecture?: string;
  variant?: string;
}

export interface ParsedManifest {
  mediaType: string;
  kind: ManifestKind;
  /** Image manifests: the config and the layers (blobs that must exist); indexes: none. */
  blobs: Descriptor[];
  /** Indexes: the manifests they list (with their platform); image manifests: none. */
  manifests: (Descriptor & { platform?: PlatformInfo })[];
  /** The OCI 1.1 `subject` (what this manifest refers to), if any. */
  subject?: Descriptor;
  /** Layers that are not stored here (`urls` of foreign layers): referenced, not required. */
  foreignBlobs: string[];
  artifactType?: string;
}

export type ManifestCheck = { ok: true; manifest: ParsedManifest } | { ok: false; code: 'MANIFEST_INVALID' | 'SIZE_INVALID' | 'UNSUPPORTED'; message: string };

class Invalid extends Error {}

function fail(message: string): never {
  throw new Invalid(message);
}

function obj(v: unknown, where: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(`${where} must be an object`);
  return v as Record<string, unknown>;
}

function mediaTypeField(v: unknown, where: string): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > MAX_MEDIA_TYPE_CHARS || !/^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$/.test(v)) fail(`${where}.mediaType must be a media type`);
  return v;
}

function descriptor(v: unknown, where: string): Descriptor & { urls?: string[]; platform?: PlatformInfo } {
  const o = obj(v, where);
  const mediaType = mediaTypeField(o.mediaType, where);
  if (!isDigest(o.digest)) fail(`${where}.digest must be a sha256 digest`);
  if (typeof o.size !== 'number' || !Number.isSafeInteger(o.size) || o.size < 0) fail(`${where}.size must be a non-negative integer`);
  const d: Descriptor & { urls?: string[]; platform?: PlatformInfo } = { mediaType, digest: o.digest as string, sizeBytes: o.size };
  if (o.urls !== undefined) {
    if (!Array.isArray(o.urls) || o.urls.some((u) => typeof u !== 'string')) fail(`${where}.urls must be an array of strings`);
    d.urls = o.urls as string[];
  }
  if (o.platform !== undefined) {
    const p = obj(o.platform, `${where}.platform`);
    const s = (k: string) => (typeof p[k] === 'string' ? (p[k] as string).slice(0, 64) : undefined);
    if (typeof p.os !== 'string' || typeof p.architecture !== 'string') fail(`${where}.platform needs os and architecture`);
    d.platform = { os: s('os'), architecture: s('architecture'), ...(s('variant') ? { variant: s('variant') } : {}) };
  }
  return d;
}

function descriptorList(v: unknown, where: string): ReturnType<typeof descriptor>[] {
  if (!Array.isArray(v)) fail(`${where} must be an array`);
  if (v.length > MAX_DESCRIPTORS) fail(`${where} lists ${v.length} entries; at most ${MAX_DESCRIPTORS}`);
  return v.map((d, i) => descriptor(d, `${where}[${i}]`));
}

/**
 * Parses and validates a manifest body pushed with `contentType`. The media type comes from
 * the body's `mediaType` when present (it must then agree with the header), else from the
 * header; Docker schema 2 bodies always carry it, OCI ones may leave it out.
 */
export function parseManifest(bytes: Uint8Array, contentType: string | undefined): ManifestCheck {
  if (bytes.byteLength > MAX_MANIFEST_BYTES) return { ok: false, code: 'SIZE_INVALID', message: `manifest of ${bytes.byteLength} bytes exceeds the limit of ${MAX_MANIFEST_BYTES} bytes` };
  let doc: unknown;
  const text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  try {
    doc = JSON.parse(text.decode(bytes));
  } catch {
    return { ok: false, code: 'MANIFEST_INVALID', message: 'manifest is not valid UTF-8 JSON' };
  }
  try {
    return { ok: true, manifest: validate(doc, baseMediaType(contentType)) };
  } catch (err) {
    if (err instanceof Invalid) return { ok: false, code: err.message.startsWith('unsupported') ? 'UNSUPPORTED' : 'MANIFEST_INVALID', message: err.message };
    throw err;
  }
}

function validate(doc: unknown, headerType: string): ParsedManifest {
  const o = obj(doc, 'manifest');
  if (o.schemaVersion === 1 || DOCKER_SCHEMA1.includes(headerType)) fail('unsupported: Docker schema 1 manifests are not accepted (push with a current client)');
  if (o.schemaVersion !== 2) fail('manifest.schemaVersion must be 2');
  let mediaType: string;
  if (o.mediaType !== undefined) {
    mediaType = mediaTypeField(o.mediaType, 'manifest');
    if (headerType !== '' && headerType !== 'application/json' && headerType !== mediaType) fail(`the Content-Type ${headerType.slice(0, 100)} differs from the manifest's mediaType ${mediaType}`);
  } else if (headerType !== '') {
    mediaType = headerType;
  } else if (o.manifests !== undefined) {
    mediaType = OCI_INDEX;
  } else {
    mediaType = OCI_MANIFEST;
  }
  const kind = manifestKind(mediaType);
  if (!kind) fail(`unsupported: manifest media type ${mediaType.slice(0, 100)} (expected an OCI or Docker schema 2 manifest or index)`);
  const artifactType = typeof o.artifactType === 'string' ? mediaTypeField(o.artifactType, 'manifest.artifactType') : undefined;
  const subject = o.subject === undefined ? undefined : stripped(descriptor(o.subject, 'manifest.subject'));
  if (kind === 'image') {
    if (o.manifests !== undefined) fail('an image manifest has no manifests field');
    const config = descriptor(o.config, 'manifest.config');
    const layers = descriptorList(o.layers ?? (mediaType === DOCKER_MANIFEST ? undefined : []), 'manifest.layers');
    const foreign = layers.filter((l) => l.urls && l.urls.length > 0);
    const blobs = [config, ...layers.filter((l) => !(l.urls && l.urls.length > 0))].map(stripped);
    return { mediaType, kind, blobs: dedupe(blobs), manifests: [], ...(subject ? { subject } : {}), foreignBlobs: foreign.map((l) => l.digest), ...(artifactType ? { artifactType } : {}) };
  }
  if (o.layers !== undefined || o.config !== undefined) fail('an index has no layers or config');
  const listed = descriptorList(o.manifests, 'manifest.manifests');
  const manifests = listed.map((m) => ({ ...stripped(m), ...(m.platform ? { platform: m.platform } : {}) }));
  if (mediaType === DOCKER_MANIFEST_LIST && manifests.some((m) => !manifestKind(m.mediaType))) fail('a manifest list may only list manifests');
  return { mediaType, kind, blobs: [], manifests, ...(subject ? { subject } : {}), foreignBlobs: [], ...(artifactType ? { artifactType } : {}) };
}

function stripped(d: Descriptor): Descriptor {
  return { mediaType: d.mediaType, digest: d.digest, sizeBytes: d.sizeBytes };
}

function dedupe(ds: Descriptor[]): Descriptor[] {
  const seen = new Set<string>();
  return ds.filter((d) => (seen.has(d.digest) ? false : (seen.add(d.digest), true)));
}

export { DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST };
