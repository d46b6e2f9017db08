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
import { readGcRequest, type GcRequest, type GcReport } from '../registry/gc.js';
import type { GcPolicy, GcRunRecord } from '../../protocol/registry/records.js';
import type { GcScheduleStatus } from '../registry/gc-schedule.js';
import type { RepoReplicaSetting } from '../registry/repo-replicas.js';
import { X509Certificate } from 'node:crypto';

export interface ImagesRoutesDeps extends ReadBarrier {
  /** The registry of this node, undefined with --registry off. */
  readonly registry:
    | {
        readonly catalog: RegistryCatalog;
        url(): string;
        heldBlobs(): { count: number; bytes: number };
        recentTransfers(): unknown[];
        /** The last image prefetches before an engine pull (node/registry/registry.ts). */
        recentPrefetches(): readonly unknown[];
        /** The leader's re-replication figures (null on other nodes). */
        replication(): unknown;
        /** Garbage collection (node/registry/gc.ts): a run, the saved policy and the last run recorded. */
        gc(req: GcRequest, caller: Caller): Promise<GcReport>;
        gcPolicy(): GcPolicy | undefined;
        gcLastRun(): GcRunRecord | undefined;
        /** The leader's schedule (undefined on other nodes). */
        gcSchedule(): GcScheduleStatus | undefined;
        /** Per-repository durability targets (node/registry/repo-replicas.ts). */
        replicas: {
          readonly defaultReplicas: number;
          list(): RepoReplicaSetting[];
          set(repo: string, replicas: number | null, caller: Caller): Promise<RepoReplicaSetting | null>;
        };
      }
    | undefined;
  /** The cluster CA certificate (PEM) this node holds (undefined: none yet). */
  caPem(): Promise<string | undefined>;
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
    return [
      200,
      {
        url,
        address: url.replace(/^https?:\/\//, ''),
        blobs: r.heldBlobs(),
        transfers: r.recentTransfers(),
        prefetches: r.recentPrefetches(),
        replication: r.replication(),
        replicas: { default: r.replicas.defaultReplicas, repositories: r.replicas.list() },
        gc: { policy: r.gcPolicy() ?? null, lastRun: r.gcLastRun() ?? null, schedule: r.gcSchedule() ?? null },
      },
    ];
  });
  // The cluster CA, for docker and skopeo to trust a registry served over HTTPS (omni registry ca).
  api.route('GET', /^\/v1\/registry\/ca$/, async () => {
    const pem = await d.caPem();
    if (!pem) throw new OmniError('UNAVAILABLE', 'this node has no cluster CA yet (a join in progress); ask another node');
    const cert = new X509Certificate(pem);
    const url = d.registry?.url();
    const address = url?.replace(/^https?:\/\//, '');
    return [
      200,
      {
        pem,
        subject: cert.subject,
        fingerprintSha256: cert.fingerprint256,
        notAfter: new Date(cert.validTo).toISOString(),
        registry: url ? { url, address, tls: url.startsWith('https:') } : null,
        ...(address ? { dockerPath: `/etc/docker/certs.d/${address}/ca.crt`, containersPath: `/etc/containers/certs.d/${address}/ca.crt` } : {}),
      },
    ];
  });
  // Per-repository durability targets: GET lists them; PUT {repository, replicas: N | null}.
  api.route('GET', /^\/v1\/images\/replicas$/, async () => {
    await d.readBarrier();
    const r = reg().replicas;
    return [200, { default: r.defaultReplicas, repositories: r.list() }];
  });
  api.route('PUT', /^\/v1\/images\/replicas$/, async (req, _url, _p, _res, caller) => {
    const body = (await readJson(req)) as { repository?: unknown; replicas?: unknown } | null;
    if (!body || typeof body !== 'object' || typeof body.repository !== 'string') throw new OmniError('BAD_REQUEST', 'expected {repository, replicas: N or null}');
    if (body.replicas !== null && typeof body.replicas !== 'number') throw new OmniError('BAD_REQUEST', 'replicas: must be a number, or null for the node-wide default');
    const r = reg().replicas;
    const set = await r.set(body.repository, body.replicas as number | null, caller);
    return [200, { repository: body.repository, replicas: set?.replicas ?? null, default: r.defaultReplicas }];
  });
  // Tag: {source: REPO:TAG | REPO@DIGEST, target: REPO[:TAG]} — the target points at the source's manifest.
  api.route('POST', /^\/v1\/images\/tag$/, async (req, _url, _p, _res, caller) => {
    const body = (await readJson(req)) as { source?: unknown; target?: unknown } | null;
    if (!body || typeof body !== 'object' || typeof body.source !== 'string' || typeof body.target !== 'string') throw new OmniError('BAD_REQUEST', 'expected {source, target}');
    return [200, await tagImage(reg().catalog, parseRef(body.source), parseRef(body.target), caller)];
  });
  api.route('GET', /^\/v1\/images$/, async () => [200, { images: await listImages(reg().catalog) }]);
  api.route('GET', /^\/v1\/images\/inspect$/, async (_req, url) => [200, await inspectImage(reg().catalog, refParam(url), d.holders)]);
  // Garbage collection: {dryRun?, graceMs?, keepLast?} → what was (or would be) removed, per node.
  // {dryRun?, graceMs?, keepLast? (null: every tag), save?}: what the request leaves out comes from the saved policy.
  api.route('POST', /^\/v1\/images\/gc$/, async (req, _url, _p, _res, caller) => [200, await reg().gc(readGcRequest(await readJson(req)), caller)]);
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
  return parseRef(raw);
}

function parseRef(raw: string): { repository: string; tag?: string; digest?: string } {
  const r = parseImageReference(raw);
  if (!r.ok) throw new OmniError('BAD_REQUEST', r.message);
  return r.ref;
}

/** Indexes nested this deep are not copied into another repository. */
const MAX_TAG_DEPTH = 4;

/**
 * Points `target` at the image `source` names. Into another repository, the manifest (and an
 * index's manifests, first) is linked there too: nothing is copied, the blobs are the cluster's.
 */
export async function tagImage(catalog: RegistryCatalog, source: { repository: string; tag?: string; digest?: string }, target: { repository: string; tag?: string; digest?: string }, caller: Caller): Promise<{ source: string; target: string; digest: string }> {
  if (target.digest) throw new OmniError('BAD_REQUEST', 'the target is REPOSITORY[:TAG], not a digest');
  const digest = source.digest ?? (await catalog.resolveTag(source.repository, source.tag ?? 'latest'));
  const name = `${source.repository}${source.digest ? `@${source.digest}` : `:${source.tag ?? 'latest'}`}`;
  const m = digest ? await catalog.manifest(source.repository, digest) : undefined;
  if (!m || !digest) throw new OmniError('NOT_FOUND', `no image ${name}`);
  const tag = target.tag ?? 'latest';
  const link = async (rec: ManifestRecord, depth: number, asTag: string | undefined): Promise<void> => {
    if (depth > MAX_TAG_DEPTH) throw new OmniError('UNSUPPORTED', `${name}: indexes nested deeper than ${MAX_TAG_DEPTH}`);
    if (target.repository !== source.repository) {
      for (const c of rec.manifests) {
        const child = await catalog.anyManifest(c);
        if (!child) throw new OmniError('MANIFEST_UNKNOWN', `manifest ${c} of ${name} is not in the registry`);
        await link(child, depth + 1, undefined);
      }
    }
    await catalog.putManifest(target.repository, { ...rec, createdAtMs: Date.now() }, asTag, caller);
  };
  await link(m, 0, tag);
  return { source: name, target: `${target.repository}:${tag}`, digest };
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
