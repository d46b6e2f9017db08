// The runtime image Forge assembles (pure): a base image's layers, then Forge's own layers
// (dependencies, app), an OCI config and manifest whose bytes depend only on their inputs —
// fixed `created`, keys in a fixed order, no host names or times — so the same source on any
// node gives the same digest.
import { OCI_MANIFEST } from '../registry/media-types.js';

export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const OCI_LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar';
const DOCKER_LAYER_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip';
const DOCKER_LAYER_TAR = 'application/vnd.docker.image.rootfs.diff.tar';
/** The `created` of every image and history entry Forge writes (FIXED_MTIME of the layers). */
export const FIXED_CREATED = '2000-01-01T00:00:00Z';
export const SOURCE_LABEL = 'dev.omni.forge.source';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

export interface ForgeLayer {
  digest: string;
  diffId: string;
  sizeBytes: number;
  /** What made it (a history entry), e.g. "dependencies: npm ci --omit=dev". */
  createdBy: string;
}

/** The parts of a base image's config Forge reads and keeps. */
export interface BaseConfig {
  architecture?: string;
  os?: string;
  variant?: string;
  config?: { Env?: string[]; User?: string; Labels?: Record<string, string> };
  rootfs?: { type?: string; diff_ids?: string[] };
  history?: unknown[];
}

export interface ImageInputs {
  base: { config: BaseConfig; layers: Descriptor[] };
  layers: ForgeLayer[];
  workdir: string;
  env: Record<string, string>;
  pathPrepend: string[];
  cmd: string[];
  ports: number[];
  sourceDigest: string;
}

export type Built = { ok: true; config: string; manifest: (configDigest: string, configSize: number) => string; layers: Descriptor[] } | { ok: false; message: string };

/** Docker's layer media types in an OCI manifest are written as their OCI equivalents (same bytes). */
export function ociLayerType(mediaType: string): string | undefined {
  if (mediaType === OCI_LAYER_GZIP || mediaType === DOCKER_LAYER_GZIP) return OCI_LAYER_GZIP;
  if (mediaType === OCI_LAYER_TAR || mediaType === DOCKER_LAYER_TAR) return OCI_LAYER_TAR;
  return undefined;
}

/** `NAME=value` list: the base's, then Forge's (overriding), PATH with Forge's directories first. */
export function mergeEnv(base: readonly string[] | undefined, env: Record<string, string>, pathPrepend: readonly string[]): string[] {
  const m = new Map<string, string>();
  for (const kv of base ?? []) {
    const i = kv.indexOf('=');
    if (i > 0) m.set(kv.slice(0, i), kv.slice(i + 1));
  }
  for (const k of Object.keys(env).sort()) m.set(k, env[k]);
  if (pathPrepend.length) {
    const path = m.get('PATH') ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
    m.set('PATH', [...pathPrepend, path].join(':'));
  }
  return [...m].map(([k, v]) => `${k}=${v}`);
}

/** The config (JSON text) and a function of its digest giving the manifest (JSON text). */
export function buildImage(i: ImageInputs): Built {
  const b = i.base.config;
  const baseDiffIds = b.rootfs?.diff_ids ?? [];
  if (baseDiffIds.length !== i.base.layers.length) return { ok: false, message: `the base image's config names ${baseDiffIds.length} layers, its manifest ${i.base.layers.length}` };
  const layers: Descriptor[] = [];
  for (const l of i.base.layers) {
    const mt = ociLayerType(l.mediaType);
    if (!mt) return { ok: false, message: `the base image has a layer of type ${l.mediaType}; Forge builds on tar or tar+gzip layers` };
    layers.push({ mediaType: mt, digest: l.digest, size: l.size });
  }
  for (const l of i.layers) layers.push({ mediaType: OCI_LAYER_GZIP, digest: l.digest, size: l.sizeBytes });
  const exposed: Record<string, Record<string, never>> = {};
  for (const p of [...i.ports].sort((a, c) => a - c)) exposed[`${p}/tcp`] = {};
  const labels: Record<string, string> = { ...(b.config?.Labels ?? {}), [SOURCE_LABEL]: i.sourceDigest };
  const config = {
    created: FIXED_CREATED,
    architecture: b.architecture ?? 'amd64',
    os: b.os ?? 'linux',
    ...(b.variant ? { variant: b.variant } : {}),
    config: {
      ...(b.config?.User ? { User: b.config.User } : {}),
      Env: mergeEnv(b.config?.Env, i.env, i.pathPrepend),
      Cmd: i.cmd,
      WorkingDir: i.workdir,
      ...(i.ports.length ? { ExposedPorts: exposed } : {}),
      Labels: Object.fromEntries(Object.keys(labels).sort().map((k) => [k, labels[k]])),
    },
    rootfs: { type: 'layers', diff_ids: [...baseDiffIds, ...i.layers.map((l) => l.diffId)] },
    history: [
      ...(Array.isArray(b.history) ? b.history : []),
      ...i.layers.map((l) => ({ created: FIXED_CREATED, created_by: `omni forge: ${l.createdBy}` })),
    ],
  };
  const manifest = (configDigest: string, configSize: number) =>
    JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: OCI_CONFIG, digest: configDigest, size: configSize }, layers });
  return { ok: true, config: JSON.stringify(config), manifest, layers };
}

/** The tag of a build: `sha-` and the source digest's hex. */
export function sourceTag(sourceDigest: string): string {
  return `sha-${sourceDigest.replace(/^sha256:/, '')}`;
}
