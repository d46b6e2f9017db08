// omni images import / export / push / pull: images in and out of the cluster's registry as files,
// for hosts without Docker. They go through the /v2/ registry of the node the CLI talks to (or
// --registry URL) with the CLI's RegistryClient, the same way as omni bundle; the file formats and
// their checks are in image-files.ts and protocol/registry/image-archive.ts.
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { printJson, formatBytes, UsageError } from '../common.js';
import { connect } from './connection.js';
import { registryFor } from './registry-client.js';
import { Progress } from './progress.js';
import { OmniError } from '../../node/errors.js';
import { clusterRef, parsePlatform, showName, showPlatform, DOCKER_CONFIG_MEDIA_TYPE, OCI_CONFIG_MEDIA_TYPE, type Platform, type RegistryName } from '../../protocol/registry/image-archive.js';
import { importRootfs } from '../../node/forge/rootfs.js';
import { finishLayout, fetchImage, hostPlatform, newFetchContext, newLayoutDir, newPushContext, openSource, packLayout, placeLayoutDir, pushSourceImage, type ImageSource, type SourceImage } from '../../node/registry/image-files.js';

type Values = Record<string, unknown>;

/** Stops the transfer on Ctrl-C, so temporary files are removed before the CLI exits. */
async function withAbort<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  const onSigint = () => ac.abort();
  process.once('SIGINT', onSigint);
  try {
    return await fn(ac.signal);
  } catch (err) {
    if (ac.signal.aborted) throw new OmniError('INTERRUPTED', 'interrupted; nothing was left behind (images already pushed stay in the registry)');
    throw err;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

function refArg(s: string, what: string): RegistryName {
  const r = clusterRef(s);
  if (!r.ok) throw new UsageError(`${what}: ${r.message}`);
  return r.value;
}

function platformFlag(values: Values): Platform | undefined {
  const s = values.platform as string | undefined;
  if (s === undefined) return undefined;
  const p = parsePlatform(s);
  if (!p.ok) throw new UsageError(`--platform: ${p.message}`);
  return p.value;
}

/** The digest of a reference: given, or what its tag points to now. */
async function digestOf(reg: { resolveTag(repo: string, tag: string): Promise<string | undefined> }, ref: RegistryName): Promise<string> {
  if (ref.digest) return ref.digest;
  const d = await reg.resolveTag(ref.repository, ref.tag ?? 'latest');
  if (!d) throw new OmniError('NOT_FOUND', `no image ${showName(ref)} in the cluster's registry (omni images ls lists them)`);
  return d;
}

// ---------------------------------------------------------------------------------- import / push

interface PushSummary {
  source: string;
  format: ImageSource['format'];
  images: { repository: string; digest: string; tags: string[] }[];
  blobsUploaded: number;
  blobsPresent: number;
  bytesUploaded: number;
  manifests: number;
  /** Times the transfer moved to another node's registry because one stopped answering. */
  failovers: number;
}

async function pushing(path: string, values: Values, run: (src: ImageSource, push: (img: SourceImage, repo: string, tags: string[]) => Promise<{ digest: string }>) => Promise<void>): Promise<PushSummary> {
  return withAbort(async (signal) => {
    const file = resolve(path);
    const work = await mkdtemp(join(tmpdir(), 'omni-images-'));
    const client = connect(values);
    const progress = new Progress(`reading ${basename(file)}`);
    try {
      const src = await openSource(file, work);
      const reg = await registryFor(client, values, signal);
      const ctx = newPushContext(reg, progress, work);
      const images: PushSummary['images'] = [];
      await run(src, async (img, repo, tags) => {
        progress.setLabel(`pushing ${img.label} to ${repo}`);
        const pushed = await pushSourceImage(ctx, src, img, repo);
        for (const tag of tags) await reg.putManifest(repo, tag, pushed.bytes, pushed.mediaType);
        images.push({ repository: repo, digest: pushed.digest, tags });
        return pushed;
      });
      const s = ctx.stats;
      return { source: file, format: src.format, images, blobsUploaded: s.uploaded, blobsPresent: s.present, bytesUploaded: s.bytesUploaded, manifests: s.manifests, failovers: reg.failovers };
    } finally {
      progress.end();
      client.close();
      await rm(work, { recursive: true, force: true });
    }
  });
}

function printPushed(r: PushSummary, values: Values): number {
  if (values.json) return printJson(r), 0;
  for (const i of r.images) process.stdout.write(`${i.tags.length ? i.tags.map((t) => `${i.repository}:${t}`).join(', ') : i.repository} ${i.digest}\n`);
  process.stdout.write(`${r.images.length} image(s) from ${r.format === 'oci-layout' ? 'an OCI layout' : 'a docker save tarball'}: ${r.blobsUploaded} blobs uploaded (${formatBytes(r.bytesUploaded)}), ${r.blobsPresent} already in the registry\n`);
  return 0;
}

/** omni images import FILE|DIR: every image of the file, under the names the file gives. */
export async function importImages(path: string, values: Values): Promise<number> {
  const r = await pushing(path, values, async (src, push) => {
    const unnamed = src.images.filter((i) => !i.names.some((n) => n.repository));
    if (unnamed.length > 0) {
      const why = unnamed.map((i) => `${i.label}${i.nameProblems.length ? ` (${i.nameProblems.join('; ').slice(0, 200)})` : ''}`).join(', ');
      throw new UsageError(`${path}: no repository name for ${why}; push it under a name with omni images push REPOSITORY[:TAG] ${path}${src.images.length > 1 ? ' --select NAME' : ''}`);
    }
    for (const img of src.images) {
      const byRepo = new Map<string, string[]>();
      for (const n of img.names) if (n.repository) byRepo.set(n.repository, [...(byRepo.get(n.repository) ?? []), n.tag ?? 'latest']);
      for (const [repo, tags] of byRepo) await push(img, repo, [...new Set(tags)]);
    }
  });
  return printPushed(r, values);
}

/** The image of a source that `--select NAME` names (a name, a tag or a digest), or its only image. */
export function selectImage(src: ImageSource, select: string | undefined, path: string): SourceImage {
  const list = () => src.images.map((i) => i.label).join(', ');
  if (select === undefined) {
    if (src.images.length === 1) return src.images[0];
    throw new UsageError(`${path} holds ${src.images.length} images (${list().slice(0, 400)}); choose one with --select NAME (or use omni images import)`);
  }
  const hits = src.images.filter(
    (i) =>
      i.label === select ||
      i.names.some((n) => select === n.tag || select === `${n.repository}:${n.tag ?? 'latest'}` || (n.tag === 'latest' && select === n.repository)) ||
      (i.entry.kind === 'oci' && i.entry.layout.digest === select) ||
      (i.entry.kind === 'docker' && i.entry.image.repoTags.includes(select)),
  );
  if (hits.length === 1) return hits[0];
  throw new UsageError(hits.length === 0 ? `--select ${select}: no such image in ${path} (it holds ${list().slice(0, 400)})` : `--select ${select} matches ${hits.length} images in ${path}`);
}

/** omni images push REF FILE|DIR: the file's image (its only one, or --select) under REF. */
export async function pushImage(refText: string, path: string, values: Values): Promise<number> {
  const ref = refArg(refText, 'omni images push');
  const r = await pushing(path, values, async (src, push) => {
    const img = selectImage(src, values.select as string | undefined, path);
    const pushed = await push(img, ref.repository, ref.digest ? [] : [ref.tag ?? 'latest']);
    if (ref.digest && pushed.digest !== ref.digest) throw new OmniError('DIGEST_INVALID', `${path}'s image is ${pushed.digest}, not ${ref.digest} (it was pushed by digest, untagged)`);
  });
  return printPushed(r, values);
}

// ---------------------------------------------------------------------------------- export / pull

interface FetchSummary {
  output: string;
  format: 'oci-archive' | 'oci-layout-dir';
  repository: string;
  tag?: string;
  digest: string;
  mediaType: string;
  platform?: string;
  blobs: number;
  bytes: number;
  sizeBytes: number;
  dockerLoad: boolean;
  /** Times the transfer moved to another node's registry because one stopped answering. */
  failovers: number;
}

async function fetching(refText: string, values: Values, o: { export: boolean }): Promise<FetchSummary> {
  const ref = refArg(refText, o.export ? 'omni images export' : 'omni images pull');
  const outArg = values.output as string | undefined;
  if (!outArg) throw new UsageError(`omni images ${o.export ? 'export' : 'pull'} needs -o ${o.export ? 'FILE' : 'PATH'}`);
  const out = resolve(outArg);
  const existing = await stat(out).catch(() => undefined);
  const asDir = !o.export && (outArg.endsWith('/') || existing?.isDirectory() === true);
  if (o.export && existing?.isDirectory()) throw new UsageError(`-o ${outArg} is a directory; omni images export writes a file (omni images pull -o DIR writes a layout directory)`);
  const platform = platformFlag(values) ?? (o.export ? hostPlatform() : undefined);
  return withAbort(async (signal) => {
    const client = connect(values);
    await stat(dirname(out)).catch(() => {
      throw new UsageError(`cannot write ${out}: ${dirname(out)} does not exist`);
    });
    const work = await mkdtemp(join(dirname(out), '.omni-images-'));
    const progress = new Progress(`${o.export ? 'exporting' : 'pulling'} ${showName(ref)}`);
    try {
      const reg = await registryFor(client, values, signal);
      const digest = await digestOf(reg, ref);
      const layout = join(work, 'layout');
      await newLayoutDir(layout);
      const ctx = newFetchContext(reg, progress, layout);
      const top = await fetchImage(ctx, ref.repository, digest, platform);
      if (o.export && (!top.image || ![DOCKER_CONFIG_MEDIA_TYPE, OCI_CONFIG_MEDIA_TYPE].includes(top.image.configMediaType))) {
        throw new OmniError('UNSUPPORTED', `${showName(ref)} is not a container image (its config is ${top.image?.configMediaType ?? 'absent'}); omni images pull -o PATH writes it as an OCI layout`);
      }
      const name: RegistryName = ref.digest ? { repository: ref.repository, digest } : { repository: ref.repository, tag: ref.tag ?? 'latest' };
      const files = await finishLayout(layout, [{ ...top, name }], { dockerLoad: top.image !== undefined });
      progress.end();
      let sizeBytes = ctx.stats.bytes;
      if (asDir) await placeLayoutDir(layout, out);
      else sizeBytes = await packLayout(layout, files, out);
      return {
        output: out,
        format: asDir ? 'oci-layout-dir' : 'oci-archive',
        repository: ref.repository,
        ...(ref.digest ? {} : { tag: ref.tag ?? 'latest' }),
        digest: top.digest,
        mediaType: top.mediaType,
        ...(top.digest !== digest && platform ? { platform: showPlatform(platform) } : {}),
        blobs: ctx.stats.blobs,
        bytes: ctx.stats.bytes,
        sizeBytes,
        dockerLoad: top.image !== undefined,
        failovers: reg.failovers,
      };
    } finally {
      progress.end();
      client.close();
      await rm(work, { recursive: true, force: true });
    }
  });
}

/** omni images export REF -o FILE: a tarball docker load reads (one platform of a multi-platform image). */
export async function exportImage(refText: string, values: Values): Promise<number> {
  const r = await fetching(refText, values, { export: true });
  if (values.json) return printJson(r), 0;
  process.stdout.write(`exported ${showName({ repository: r.repository, tag: r.tag, digest: r.tag ? undefined : r.digest })}${r.platform ? ` (${r.platform})` : ''} ${r.digest} to ${r.output} (${formatBytes(r.sizeBytes)}); load it with docker load -i ${r.output}\n`);
  return 0;
}

/** omni images pull REF -o PATH: an OCI layout (a tar, or a directory), every platform unless --platform. */
export async function pullImage(refText: string, values: Values): Promise<number> {
  const r = await fetching(refText, values, { export: false });
  if (values.json) return printJson(r), 0;
  process.stdout.write(`pulled ${showName({ repository: r.repository, tag: r.tag, digest: r.tag ? undefined : r.digest })}${r.platform ? ` (${r.platform})` : ''} ${r.digest}: ${r.blobs} blobs (${formatBytes(r.bytes)}) into the OCI layout ${r.format === 'oci-layout-dir' ? 'directory' : 'tar'} ${r.output}\n`);
  return 0;
}

/** omni images import-rootfs DIR|TAR REPO:TAG: a root filesystem as a one-layer image (Forge's runtime bases). */
export async function importRootfsCommand(path: string, refText: string, values: Values): Promise<number> {
  const ref = refArg(refText, 'omni images import-rootfs');
  if (ref.digest) throw new UsageError('omni images import-rootfs: give REPOSITORY:TAG, not a digest (the digest is what the import computes)');
  const cmd = values.cmd as string | undefined;
  return withAbort(async (signal) => {
    const client = connect(values);
    try {
      const reg = await registryFor(client, values, signal);
      const r = await importRootfs(reg, resolve(path), ref.repository, ref.tag ?? 'latest', { architecture: hostPlatform().architecture, ...(cmd ? { cmd: ['/bin/sh', '-c', cmd] } : {}) });
      if (values.json) return printJson(r), 0;
      process.stdout.write(`${r.repository}:${r.tag} ${r.digest} (one layer, ${formatBytes(r.layer.sizeBytes)}${r.uploaded ? '' : ', already in the registry'})\n`);
      return 0;
    } finally {
      client.close();
    }
  });
}
