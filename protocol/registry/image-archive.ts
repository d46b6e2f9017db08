// Image files without a Docker engine (`omni images import/export/push/pull`), the pure part:
// the two formats an image travels in as a file, and the checks every (untrusted) input goes
// through before any of it is read.
//
//   docker save (Docker before 25): manifest.json = [{Config: "<hex>.json", RepoTags: ["repo:tag"],
//     Layers: ["<id>/layer.tar", …]}], the config named by its digest, each layer an uncompressed
//     tar (a layer that appears twice is a symbolic link to the first copy).
//   OCI image layout (skopeo's oci:/oci-archive:, Docker 25+'s docker save, omni's own files):
//     oci-layout, index.json (one descriptor per image, named by the annotations
//     io.containerd.image.name or org.opencontainers.image.ref.name), blobs/sha256/<hex>.
//
// What is exported is both at once (an OCI layout plus a manifest.json naming the same blobs), as
// Docker 25+ writes it: `docker load` and skopeo read it alike. Nothing here touches a file.
import { isDigest } from './digest.js';
import { isRepositoryName, isTag, parseImageReference } from './reference.js';
import { DOCKER_MANIFEST, OCI_INDEX } from './media-types.js';
import { MAX_DESCRIPTORS } from './manifest.js';

/** Entries an archive may have, images it may name, and the JSON files read from it. */
export const MAX_ARCHIVE_ENTRIES = 100_000;
export const MAX_ARCHIVE_IMAGES = 1000;
export const MAX_ARCHIVE_JSON_BYTES = 16 * 1024 * 1024;
/** Longest path inside an archive, and deepest. */
export const MAX_ARCHIVE_PATH_CHARS = 1024;
const MAX_PATH_DEPTH = 16;
/** Names (RepoTags, annotations) one image may carry. */
const MAX_NAMES_PER_IMAGE = 100;

export const OCI_LAYOUT = 'oci-layout';
export const OCI_INDEX_JSON = 'index.json';
export const DOCKER_MANIFEST_JSON = 'manifest.json';
/** The annotations that name an image in an OCI layout's index.json. */
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';
export const CONTAINERD_NAME_ANNOTATION = 'io.containerd.image.name';

export const DOCKER_CONFIG_MEDIA_TYPE = 'application/vnd.docker.container.image.v1+json';
export const OCI_CONFIG_MEDIA_TYPE = 'application/vnd.oci.image.config.v1+json';
export const DOCKER_LAYER_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip';

export type Checked<T> = { ok: true; value: T } | { ok: false; message: string };
const bad = (message: string): { ok: false; message: string } => ({ ok: false, message });

/**
 * A path inside an archive or a layout, normalised (`./` and a trailing `/` dropped), or why it is
 * refused: absolute paths, `..` or `.` components, backslashes, control characters, too long or deep.
 */
export function archivePath(p: string): Checked<string> {
  if (typeof p !== 'string' || p.length === 0) return bad('an empty path');
  if (p.length > MAX_ARCHIVE_PATH_CHARS) return bad(`a path of more than ${MAX_ARCHIVE_PATH_CHARS} characters`);
  const show = JSON.stringify(p.slice(0, 120));
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\\]/.test(p)) return bad(`${show}, a path with a backslash or a control character`);
  if (p.startsWith('/')) return bad(`${show}, an absolute path`);
  const parts = p.replace(/^(\.\/)+/, '').replace(/\/+$/, '').split('/');
  if (parts.length === 1 && parts[0] === '') return { ok: true, value: '' };
  if (parts.some((c) => c === '' || c === '.' || c === '..')) return bad(`${show}, a path that leaves its directory or is not plain`);
  if (parts.length > MAX_PATH_DEPTH) return bad(`${show}, a path deeper than ${MAX_PATH_DEPTH}`);
  return { ok: true, value: parts.join('/') };
}

/**
 * Where a symbolic link at `linkPath` (normalised) points, as a normalised path inside the
 * archive; refused when its target is absolute or climbs out of the archive.
 */
export function linkTarget(linkPath: string, target: string): Checked<string> {
  if (typeof target !== 'string' || target.length === 0 || target.length > MAX_ARCHIVE_PATH_CHARS) return bad(`link ${linkPath} has no usable target`);
  if (target.startsWith('/')) return bad(`link ${linkPath} points to the absolute path ${JSON.stringify(target.slice(0, 120))}`);
  const out = linkPath.split('/').slice(0, -1);
  for (const c of target.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') {
      if (out.length === 0) return bad(`link ${linkPath} points outside the archive (${JSON.stringify(target.slice(0, 120))})`);
      out.pop();
    } else out.push(c);
  }
  return archivePath(out.join('/'));
}

/** Which entry types an archive may hold: regular files and directories (symbolic links are resolved, never written). */
export function archiveEntryKind(type: string): 'file' | 'dir' | 'link' | undefined {
  if (type === 'File' || type === 'OldFile' || type === 'ContiguousFile') return 'file';
  if (type === 'Directory') return 'dir';
  if (type === 'SymbolicLink') return 'link';
  return undefined;
}

/** The layout path of a blob. */
export function layoutBlobPath(digest: string): string {
  return `blobs/sha256/${digest.slice('sha256:'.length)}`;
}

function parseJson(text: string, what: string): Checked<unknown> {
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch {
    return bad(`${what} is not JSON`);
  }
}

// ------------------------------------------------------------------------------ names

/** An image name in this cluster's registry. */
export interface RegistryName {
  repository: string;
  tag?: string;
  digest?: string;
}

/**
 * A name as an archive or a user writes it (`busybox:latest`, `docker.io/library/busybox:1`,
 * `127.0.0.1:5000/team/api:1.4`) → a name in this registry: the registry host is dropped (and
 * Docker Hub's `library/`), the repository must be an OCI name.
 */
export function registryName(s: string): Checked<RegistryName> {
  const r = parseImageReference(s);
  if (!r.ok) return bad(`${JSON.stringify(s.slice(0, 200))}: ${r.message}`);
  let repository = r.ref.repository;
  if (r.ref.host && /^(docker\.io|index\.docker\.io|registry-1\.docker\.io)$/.test(r.ref.host) && repository.startsWith('library/')) repository = repository.slice('library/'.length);
  return { ok: true, value: { repository, ...(r.ref.tag ? { tag: r.ref.tag } : {}), ...(r.ref.digest ? { digest: r.ref.digest } : {}) } };
}

/**
 * A reference the user gives a command about this cluster's registry: `REPO[:TAG|@DIGEST]`, a
 * loopback registry host (`127.0.0.1:5000/…`, as docker spells it) allowed and dropped; another
 * host is refused (the command talks to this cluster only).
 */
export function clusterRef(s: string): Checked<RegistryName> {
  const r = parseImageReference(s);
  if (!r.ok) return bad(r.message);
  const host = r.ref.host;
  if (host && !/^(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?$/.test(host)) return bad(`${JSON.stringify(s.slice(0, 200))} names the registry ${host}; give an image of this cluster's registry as REPOSITORY[:TAG|@DIGEST]`);
  return { ok: true, value: { repository: r.ref.repository, ...(r.ref.tag ? { tag: r.ref.tag } : {}), ...(r.ref.digest ? { digest: r.ref.digest } : {}) } };
}

/** `repo:tag` or `repo@digest`. */
export function showName(n: RegistryName): string {
  return n.digest ? `${n.repository}@${n.digest}` : `${n.repository}:${n.tag ?? 'latest'}`;
}

// ------------------------------------------------------------------------------ docker save

export interface DockerArchiveImage {
  /** Path of the config file inside the archive (normalised). */
  config: string;
  /** RepoTags as written (may be empty). */
  repoTags: string[];
  /** Paths of the layer tars, base first (normalised). */
  layers: string[];
}

/** docker save's manifest.json (untrusted): its images, every path checked. */
export function readDockerArchiveManifest(text: string): Checked<DockerArchiveImage[]> {
  const j = parseJson(text, DOCKER_MANIFEST_JSON);
  if (!j.ok) return j;
  if (!Array.isArray(j.value)) return bad(`${DOCKER_MANIFEST_JSON} must be a list of images`);
  if (j.value.length === 0) return bad(`${DOCKER_MANIFEST_JSON} lists no image`);
  if (j.value.length > MAX_ARCHIVE_IMAGES) return bad(`${DOCKER_MANIFEST_JSON} lists ${j.value.length} images; at most ${MAX_ARCHIVE_IMAGES}`);
  const out: DockerArchiveImage[] = [];
  for (const [i, x] of j.value.entries()) {
    const o = x as { Config?: unknown; RepoTags?: unknown; Layers?: unknown } | null;
    const where = `${DOCKER_MANIFEST_JSON}[${i}]`;
    if (!o || typeof o !== 'object' || Array.isArray(o)) return bad(`${where} must be an object`);
    if (typeof o.Config !== 'string') return bad(`${where}.Config must be a path`);
    const config = archivePath(o.Config);
    if (!config.ok) return bad(`${where}.Config: ${config.message}`);
    const tags = o.RepoTags ?? [];
    if (!Array.isArray(tags) || tags.length > MAX_NAMES_PER_IMAGE || tags.some((t) => typeof t !== 'string' || t.length > 512)) return bad(`${where}.RepoTags must be a list of at most ${MAX_NAMES_PER_IMAGE} names`);
    if (!Array.isArray(o.Layers) || o.Layers.length > MAX_DESCRIPTORS) return bad(`${where}.Layers must be a list of at most ${MAX_DESCRIPTORS} paths`);
    const layers: string[] = [];
    for (const [k, l] of o.Layers.entries()) {
      const p = typeof l === 'string' ? archivePath(l) : bad('not a string');
      if (!p.ok) return bad(`${where}.Layers[${k}]: ${p.message}`);
      layers.push(p.value);
    }
    out.push({ config: config.value, repoTags: tags as string[], layers });
  }
  return { ok: true, value: out };
}

/** What an image config says about its layers and platform (untrusted). */
export interface ImageConfigInfo {
  diffIds: string[];
  os?: string;
  architecture?: string;
  variant?: string;
}

export function readImageConfig(bytes: Uint8Array): Checked<ImageConfigInfo> {
  if (bytes.byteLength > MAX_ARCHIVE_JSON_BYTES) return bad(`the image config is over ${MAX_ARCHIVE_JSON_BYTES} bytes`);
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    return bad('the image config is not UTF-8 JSON');
  }
  const o = doc as { rootfs?: { type?: unknown; diff_ids?: unknown }; os?: unknown; architecture?: unknown; variant?: unknown } | null;
  if (!o || typeof o !== 'object' || Array.isArray(o)) return bad('the image config must be a JSON object');
  const ids = o.rootfs?.diff_ids;
  if (o.rootfs?.type !== 'layers' || !Array.isArray(ids) || ids.length > MAX_DESCRIPTORS || !ids.every(isDigest)) return bad('the image config has no rootfs of type layers with sha256 diff_ids');
  const s = (v: unknown) => (typeof v === 'string' && v.length > 0 && v.length <= 64 ? v : undefined);
  return { ok: true, value: { diffIds: ids as string[], ...(s(o.os) ? { os: s(o.os) } : {}), ...(s(o.architecture) ? { architecture: s(o.architecture) } : {}), ...(s(o.variant) ? { variant: s(o.variant) } : {}) } };
}

/** The Docker schema 2 manifest of a docker-save image once its layers are compressed (stable bytes: same input, same digest). */
export function dockerImageManifest(config: { digest: string; sizeBytes: number }, layers: readonly { digest: string; sizeBytes: number }[]): string {
  return JSON.stringify({
    schemaVersion: 2,
    mediaType: DOCKER_MANIFEST,
    config: { mediaType: DOCKER_CONFIG_MEDIA_TYPE, size: config.sizeBytes, digest: config.digest },
    layers: layers.map((l) => ({ mediaType: DOCKER_LAYER_GZIP, size: l.sizeBytes, digest: l.digest })),
  });
}

// ------------------------------------------------------------------------------ OCI layout

export interface LayoutEntry {
  mediaType: string;
  digest: string;
  sizeBytes: number;
  /** The names the annotations give (a full name, or only a tag: `repository` then absent). */
  names: { repository?: string; tag?: string }[];
  /** Set when a name could not be read (reported, not fatal: another name or the user's REF may do). */
  nameProblems: string[];
}

/** oci-layout (untrusted): must say version 1.x. */
export function checkLayoutVersion(text: string): Checked<true> {
  const j = parseJson(text, OCI_LAYOUT);
  if (!j.ok) return j;
  const v = (j.value as { imageLayoutVersion?: unknown } | null)?.imageLayoutVersion;
  if (typeof v !== 'string' || !/^1\.\d+\.\d+$/.test(v)) return bad(`${OCI_LAYOUT} says imageLayoutVersion ${JSON.stringify(String(v).slice(0, 20))}; this omni reads 1.x`);
  return { ok: true, value: true };
}

/** An image's names from its index.json annotations: containerd's full name first, then ref.name. */
function layoutNames(annotations: unknown): { names: LayoutEntry['names']; problems: string[] } {
  const a = (annotations && typeof annotations === 'object' && !Array.isArray(annotations) ? annotations : {}) as Record<string, unknown>;
  const names: LayoutEntry['names'] = [];
  const problems: string[] = [];
  const full = a[CONTAINERD_NAME_ANNOTATION];
  if (typeof full === 'string') {
    const n = registryName(full);
    if (n.ok) names.push({ repository: n.value.repository, tag: n.value.tag ?? 'latest' });
    else problems.push(n.message);
  }
  const ref = a[REF_NAME_ANNOTATION];
  if (typeof ref === 'string' && names.length === 0) {
    if (isTag(ref) && !ref.includes('/')) names.push({ tag: ref });
    else {
      const n = registryName(ref);
      if (n.ok && !n.value.digest) names.push({ repository: n.value.repository, tag: n.value.tag ?? 'latest' });
      else if (n.ok) names.push({ repository: n.value.repository });
      else problems.push(n.message);
    }
  }
  return { names, problems };
}

/** index.json of a layout (untrusted): the images it lists. */
export function readLayoutIndex(text: string): Checked<LayoutEntry[]> {
  const j = parseJson(text, OCI_INDEX_JSON);
  if (!j.ok) return j;
  const o = j.value as { schemaVersion?: unknown; manifests?: unknown } | null;
  if (!o || typeof o !== 'object' || o.schemaVersion !== 2 || !Array.isArray(o.manifests)) return bad(`${OCI_INDEX_JSON} must be an OCI index (schemaVersion 2, manifests)`);
  if (o.manifests.length === 0) return bad(`${OCI_INDEX_JSON} lists no image`);
  if (o.manifests.length > MAX_ARCHIVE_IMAGES) return bad(`${OCI_INDEX_JSON} lists ${o.manifests.length} images; at most ${MAX_ARCHIVE_IMAGES}`);
  const out: LayoutEntry[] = [];
  for (const [i, x] of o.manifests.entries()) {
    const d = x as { mediaType?: unknown; digest?: unknown; size?: unknown; annotations?: unknown } | null;
    const where = `${OCI_INDEX_JSON} manifests[${i}]`;
    if (!d || typeof d !== 'object') return bad(`${where} must be a descriptor`);
    if (!isDigest(d.digest)) return bad(`${where}.digest must be a sha256 digest`);
    if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) return bad(`${where}.size must be a non-negative integer`);
    if (typeof d.mediaType !== 'string' || d.mediaType.length > 255) return bad(`${where}.mediaType must be a media type`);
    const { names, problems } = layoutNames(d.annotations);
    out.push({ mediaType: d.mediaType, digest: d.digest as string, sizeBytes: d.size, names, nameProblems: problems });
  }
  return { ok: true, value: out };
}

/** The index.json of a written layout: one descriptor per image, named by its full name and tag. */
export function layoutIndex(images: readonly { mediaType: string; digest: string; sizeBytes: number; name?: RegistryName }[]): string {
  return JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: images.map((i) => ({
      mediaType: i.mediaType,
      digest: i.digest,
      size: i.sizeBytes,
      ...(i.name && !i.name.digest ? { annotations: { [CONTAINERD_NAME_ANNOTATION]: `${i.name.repository}:${i.name.tag ?? 'latest'}`, [REF_NAME_ANNOTATION]: i.name.tag ?? 'latest' } } : {}),
    })),
  });
}

/** manifest.json for `docker load`: the config and layers of one image by their layout paths. */
export function dockerLoadManifest(images: readonly { config: string; layers: readonly string[]; repoTags: readonly string[] }[]): string {
  return JSON.stringify(images.map((i) => ({ Config: layoutBlobPath(i.config), RepoTags: [...i.repoTags], Layers: i.layers.map(layoutBlobPath) })));
}

// ------------------------------------------------------------------------------ platforms

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** `os/arch[/variant]`. */
export function parsePlatform(s: string): Checked<Platform> {
  const m = /^([a-z0-9_-]{1,32})\/([a-z0-9_-]{1,32})(?:\/([a-z0-9_-]{1,32}))?$/.exec(s);
  if (!m) return bad(`${JSON.stringify(s.slice(0, 80))} is not a platform (os/architecture[/variant], e.g. linux/amd64)`);
  return { ok: true, value: { os: m[1], architecture: m[2], ...(m[3] ? { variant: m[3] } : {}) } };
}

export const showPlatform = (p: { os?: string; architecture?: string; variant?: string }) => `${p.os ?? '?'}/${p.architecture ?? '?'}${p.variant ? `/${p.variant}` : ''}`;

/** The entry of an index for a platform: os and architecture must match, and the variant when one is asked for. */
export function choosePlatform<T extends { platform?: { os?: string; architecture?: string; variant?: string } }>(entries: readonly T[], want: Platform): Checked<T> {
  const match = entries.filter((e) => e.platform?.os === want.os && e.platform?.architecture === want.architecture && (want.variant === undefined || e.platform?.variant === want.variant));
  if (match.length > 0) return { ok: true, value: match[0] };
  const have = entries.filter((e) => e.platform).map((e) => showPlatform(e.platform!));
  return bad(`the image has no ${showPlatform(want)} variant (it has ${have.join(', ') || 'none with a platform'}); pick one with --platform`);
}

/** The platform images name for a Node.js `process.arch` on Linux (linux/amd64 for x64, …). */
export function platformForArch(nodeArch: string): Platform {
  const arch: Record<string, string> = { x64: 'amd64', ia32: '386', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64', mips64el: 'mips64le', loong64: 'loong64' };
  return { os: 'linux', architecture: arch[nodeArch] ?? nodeArch };
}

/** Whether a name is a valid repository (re-exported for the CLI's checks). */
export { isRepositoryName };
