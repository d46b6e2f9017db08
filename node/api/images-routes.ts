// The image part of the HTTP API (`omni images`): this node's registry address, the images in
// the cluster's registry, one image in detail (its blobs, their pieces and which nodes hold
// them), removing a tag or a manifest, and garbage collection. The registry itself is /v2/ on its own listener
// (node/registry/registry-server.ts); these routes are for people and the CLI.
import type { ApiServer } from './server.js';
import type { ReadBarrier } from '../cluster/ports.js';
import type { RegistryCatalog } from '../registry/catalog.js';
import { OmniError } from '../errors.js';
import { queryParam, readJson } from './input.js';
import { parseImageReference } from '../../protocol/registry/reference.js';
import type { ManifestRecord } from '../../protocol/registry/records.js';
import type { Caller } from '../cluster/caller.js';
import { readGcOptions, type GcOptions, type GcReport } from '../registry/gc.js';

export interface ImagesRoutesDeps extends ReadBarrier {
  /** The registry of this node, undefined with --registry off. */
  readonly registry:
    | {
        readonly catalog: RegistryCatalog;
        url(): string;
        heldBlobs(): { count: number; bytes: number };
        recentTransfers(): unknown[];
        /** The leader's re-replication figures (null on other nodes). */
        replication(): unknown;
        /** Garbage collection (node/registry/gc.ts). */
        gc(o: GcOptions, caller: Caller): Promise<GcReport>;
      }
    | undefined;
  /** Names of the nodes known to hold a blob (gossip; may lag). */
  holders(digest: string): string[];
}

export function registerImageRoutes(api: ApiServer, d: ImagesRoutesDeps): void {
  const reg = () => {
    if (!d.registry) throw new OmniError('UNAVAILABLE', 'this node runs no registry (omnid --registry off)');
    return d.registry;
  };
  api.route('GET', /^\/v1\/registry$/, async () => {
    const r = reg();
    const url = r.url();
    return [200, { url, address: url.replace(/^https?:\/\//, ''), blobs: r.heldBlobs(), transfers: r.recentTransfers(), replication: r.replication() }];
  });
  api.route('GET', /^\/v1\/images$/, async () => [200, { images: await listImages(reg().catalog) }]);
  api.route('GET', /^\/v1\/images\/inspect$/, async (_req, url) => [200, await inspectImage(reg().catalog, refParam(url), d.holders)]);
  // Garbage collection: {dryRun?, graceMs?, keepLast?} → what was (or would be) removed, per node.
  api.route('POST', /^\/v1\/images\/gc$/, async (req, _url, _p, _res, caller) => [200, await reg().gc(readGcOptions(await readJson(req)), caller)]);
  api.route('DELETE', /^\/v1\/images$/, async (_req, url, _p, _res, caller) => {
    const ref = refParam(url);
    const catalog = reg().catalog;
    if (ref.digest) {
      if (!(await catalog.deleteManifest(ref.repository, ref.digest, caller))) throw new OmniError('NOT_FOUND', `no image ${ref.repository}@${ref.digest}`);
      return [200, { deleted: `${ref.repository}@${ref.digest}` }];
    }
    const tag = ref.tag ?? 'latest';
    if (!(await catalog.deleteTag(ref.repository, tag, caller))) throw new OmniError('NOT_FOUND', `no image ${ref.repository}:${tag}`);
    return [200, { deleted: `${ref.repository}:${tag}` }];
  });
}

function refParam(url: URL): { repository: string; tag?: string; digest?: string } {
  const raw = queryParam(url, 'ref');
  if (raw === undefined) throw new OmniError('BAD_REQUEST', 'ref=REPOSITORY[:TAG|@DIGEST] is required');
  const r = parseImageReference(raw);
  if (!r.ok) throw new OmniError('BAD_REQUEST', r.message);
  return r.ref;
}

/** Total bytes of an image: its manifest and the blobs it references (an index: its manifests' too). */
async function imageSize(catalog: RegistryCatalog, m: ManifestRecord, depth = 0): Promise<number> {
  let n = m.sizeBytes;
  for (const b of m.blobs) n += (await catalog.blob(b))?.sizeBytes ?? 0;
  if (depth === 0) for (const c of m.manifests) {
    const child = await catalog.anyManifest(c);
    if (child) n += await imageSize(catalog, child, 1);
  }
  return n;
}

async function listImages(catalog: RegistryCatalog): Promise<unknown[]> {
  const out = [];
  for (const t of await catalog.allTags()) {
    const m = await catalog.anyManifest(t.digest);
    out.push({ repository: t.repo, tag: t.tag, digest: t.digest, mediaType: m?.mediaType ?? null, sizeBytes: m ? await imageSize(catalog, m) : null, updatedAtMs: t.updatedAtMs });
  }
  return out.sort((a, b) => a.repository.localeCompare(b.repository) || a.tag.localeCompare(b.tag));
}

async function inspectImage(catalog: RegistryCatalog, ref: { repository: string; tag?: string; digest?: string }, holders: (digest: string) => string[]): Promise<unknown> {
  const digest = ref.digest ?? (await catalog.resolveTag(ref.repository, ref.tag ?? 'latest'));
  const m = digest ? await catalog.manifest(ref.repository, digest) : undefined;
  if (!m) throw new OmniError('NOT_FOUND', `no image ${ref.repository}${ref.digest ? `@${ref.digest}` : `:${ref.tag ?? 'latest'}`}`);
  const blobs = [];
  for (const b of m.blobs) {
    const rec = await catalog.blob(b);
    blobs.push({ digest: b, sizeBytes: rec?.sizeBytes ?? null, pieces: rec?.pieces.length ?? null, pieceSizeBytes: rec?.pieceSizeBytes ?? null, nodes: holders(b) });
  }
  const pointing = (await catalog.allTags()).filter((t) => t.repo === ref.repository && t.digest === m.digest).map((t) => t.tag);
  return {
    repository: ref.repository,
    digest: m.digest,
    mediaType: m.mediaType,
    tags: pointing,
    sizeBytes: await imageSize(catalog, m),
    createdAtMs: m.createdAtMs,
    manifest: JSON.parse(m.content) as unknown,
    blobs,
    manifests: m.manifests,
    ...(m.platforms ? { platforms: m.platforms } : {}),
  };
}
