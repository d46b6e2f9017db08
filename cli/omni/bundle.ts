// omni bundle: apps and their images in one file, for a cluster that can reach nothing else.
//   export APP... -o FILE   the apps' specs (images pinned to digests) and every manifest, config
//                           and layer of their images, read from the cluster's registry (/v2/)
//   import FILE             pushes the images into this cluster's registry (manifests and tags
//                           recorded), then creates (or updates) the apps
// The file is a tar holding an OCI image layout plus omni-bundle.json (protocol/registry/bundle.ts).
// Images move through the /v2/ registry of the node the CLI talks to (GET /v1/registry gives its
// address): with the default loopback registry, run the command on that node's host.
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import * as tar from 'tar';
import { parse, printJson, formatBytes, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect } from './connection.js';
import { registryFor } from './registry-client.js';
import { Progress } from './progress.js';
import { SourceTree, fetchImage, newFetchContext, newLayoutDir, newPushContext, packLayout, pushLayoutImage } from '../../node/registry/image-files.js';
import { OmniError } from '../../node/errors.js';
import type { ApiClient } from '../../node/api/client.js';
import { parseImageReference } from '../../protocol/registry/reference.js';
import { MAX_BLOB_BYTES } from '../../protocol/registry/records.js';
import {
  BUNDLE_FORMAT,
  BUNDLE_META_FILE,
  BUNDLE_VERSION,
  MAX_BUNDLE_APPS,
  MAX_BUNDLE_ENTRIES,
  MAX_BUNDLE_META_BYTES,
  OCI_INDEX_FILE,
  OCI_LAYOUT_FILE,
  bundleEntryAllowed,
  ociIndex,
  readBundleMeta,
  type BundleImage,
  type BundleMeta,
} from '../../protocol/registry/bundle.js';

const USAGE = `usage: omni bundle export APP... -o FILE [flags]
       omni bundle import FILE [flags]

An air-gap bundle: apps and their images in one file (a tar: an OCI image layout plus the app
specs), to carry to a cluster that can reach no registry.

  export APP... -o FILE   write the apps' specs and every layer of their images (those in the
                          cluster's registry; an app's image is pinned to its digest) to FILE
  import FILE             push the bundle's images into this cluster's registry (their tags
                          too), then create the apps (or roll them out, if they exist)

A progress line (bytes, rate, time left) is shown while images move when stderr is a terminal.

Images go through the /v2/ registry of the node the CLI talks to (omni images registry shows
its address; with the default loopback registry, run the command on that node's host).
  --registry URL  that registry's URL instead (e.g. http://127.0.0.1:5000)
${CONNECTION_HELP}
`;

const FLAGS = { ...CONNECTION_FLAGS, output: { type: 'string' as const, short: 'o' }, registry: { type: 'string' as const } };

export async function bundle(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, FLAGS, USAGE);
  const [sub, ...args] = positionals;
  if (sub === 'export') {
    if (args.length === 0) throw new UsageError(`omni bundle export needs at least one app\n\n${USAGE}`);
    if (args.length > MAX_BUNDLE_APPS) throw new UsageError(`at most ${MAX_BUNDLE_APPS} apps per bundle`);
    if (!values.output) throw new UsageError(`omni bundle export needs -o FILE\n\n${USAGE}`);
    return exportBundle(args, resolve(values.output as string), values);
  }
  if (sub === 'import') {
    if (args.length !== 1) throw new UsageError(`omni bundle import needs one FILE\n\n${USAGE}`);
    if (values.output) throw new UsageError('-o is a flag of omni bundle export');
    return importBundle(resolve(args[0]), values);
  }
  throw new UsageError(sub ? `unknown subcommand ${sub}\n\n${USAGE}` : USAGE);
}

// ---------------------------------------------------------------------------------------- export

async function exportBundle(apps: string[], out: string, values: Record<string, unknown>): Promise<number> {
  const client = connect(values);
  const work = await mkdtemp(join(dirname(out), '.omni-bundle-'));
  const progress = new Progress('exporting');
  try {
    const specs: Record<string, unknown>[] = [];
    const images = new Map<string, BundleImage>();
    const warnings: string[] = [];
    for (const name of [...new Set(apps)]) {
      const app = await client.get<{ spec?: Record<string, unknown> }>(`/v1/apps/${encodeURIComponent(name)}`);
      if (!app.spec) throw new OmniError('NOT_FOUND', `app ${name} has no spec`);
      specs.push(app.spec);
      const files = Array.isArray(app.spec.files) ? (app.spec.files as { kind?: unknown; sealed?: unknown }[]) : [];
      if (files.some((f) => f.kind === 'secret' && typeof f.sealed === 'string')) {
        warnings.push(`app ${name}: its secrets are sealed with this cluster's key, which another cluster does not have: an import there is refused (SECRET_SEALED_ELSEWHERE) — deploy the app there with the secrets' content (omni compose up, omni deploy)`);
      }
      const image = app.spec.image;
      if (typeof image !== 'string') continue;
      const found = await registryImage(client, image);
      if (!found) {
        warnings.push(`app ${name}: image ${image} is not in the cluster's registry; the bundle holds its spec only`);
        continue;
      }
      images.set(`${found.repository}@${found.digest}`, { ...found, tags: [] });
    }
    const allTags = (await client.get<{ images: { repository: string; tag: string; digest: string }[] }>('/v1/images')).images;
    for (const im of images.values()) im.tags = allTags.filter((t) => t.repository === im.repository && t.digest === im.digest).map((t) => t.tag).sort();

    const reg = await registryFor(client, values);
    await newLayoutDir(work);
    const ctx = newFetchContext(reg, progress, work);
    const indexed = [];
    for (const im of images.values()) {
      progress.setLabel(`exporting ${im.repository}`);
      const top = await fetchImage(ctx, im.repository, im.digest);
      indexed.push({ ...im, mediaType: top.mediaType, sizeBytes: top.sizeBytes });
    }
    progress.end();
    const meta: BundleMeta = { format: BUNDLE_FORMAT, version: BUNDLE_VERSION, createdAtMs: Date.now(), apps: specs, images: [...images.values()] };
    await writeFile(join(work, OCI_LAYOUT_FILE), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    await writeFile(join(work, OCI_INDEX_FILE), ociIndex(indexed));
    await writeFile(join(work, BUNDLE_META_FILE), JSON.stringify(meta, null, 2));
    const size = await packLayout(work, [OCI_LAYOUT_FILE, OCI_INDEX_FILE, BUNDLE_META_FILE, 'blobs'], out);
    for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
    const summary = { file: out, sizeBytes: size, apps: specs.map((s) => s.name), images: meta.images.map((i) => ({ repository: i.repository, digest: i.digest, tags: i.tags })), blobs: ctx.stats.blobs, bytes: ctx.stats.bytes, warnings };
    if (values.json) return printJson(summary), 0;
    process.stdout.write(`exported ${specs.length} app(s) and ${images.size} image(s) (${ctx.stats.blobs} blobs) to ${out} (${formatBytes(size)})\n`);
    return 0;
  } finally {
    progress.end();
    client.close();
    await rm(work, { recursive: true, force: true });
  }
}

/** The registry image an app spec names: repo@digest as pinned, or a tag the registry has. */
async function registryImage(client: ApiClient, image: string): Promise<{ repository: string; digest: string } | undefined> {
  const r = parseImageReference(image);
  if (!r.ok) return undefined;
  const { host, repository, digest, tag } = r.ref;
  if (host && !/^(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?$/.test(host)) return undefined;
  const ref = digest ? `${repository}@${digest}` : `${repository}:${tag ?? 'latest'}`;
  const res = await client.raw('GET', `/v1/images/inspect?ref=${encodeURIComponent(ref)}`);
  if (res.status === 404) return undefined;
  if (res.status !== 200) throw new OmniError('UNAVAILABLE', `looking up image ${ref}: HTTP ${res.status}`);
  return { repository, digest: (res.body as { digest: string }).digest };
}

// ---------------------------------------------------------------------------------------- import

async function importBundle(file: string, values: Record<string, unknown>): Promise<number> {
  await stat(file).catch(() => {
    throw new UsageError(`cannot read ${file}`);
  });
  const work = await mkdtemp(join(tmpdir(), 'omni-bundle-'));
  const client = connect(values);
  const progress = new Progress('importing');
  try {
    const meta = await extractBundle(file, work);
    const reg = await registryFor(client, values);
    const ctx = newPushContext(reg, progress, work);
    const tree = new SourceTree(file, work);
    const index = JSON.parse(await readFile(join(work, OCI_INDEX_FILE), 'utf8').catch(() => '{}')) as { manifests?: { digest?: string; mediaType?: string }[] };
    const declaredType = (d: string) => index.manifests?.find((m) => m?.digest === d)?.mediaType;
    const images = [];
    for (const im of meta.images) {
      progress.setLabel(`importing ${im.repository}`);
      const top = await pushLayoutImage(ctx, tree, im.repository, im.digest, declaredType(im.digest));
      for (const tag of im.tags) await reg.putManifest(im.repository, tag, top.bytes, top.mediaType);
      images.push({ repository: im.repository, digest: im.digest, tags: im.tags });
    }
    progress.end();
    const apps = [];
    for (const spec of meta.apps) {
      const r = await client.raw('POST', '/v1/apps', spec);
      if (r.status !== 200 && r.status !== 201) {
        const e = (r.body as { error?: { code?: string; message?: string } })?.error;
        throw new OmniError(e?.code ?? `HTTP_${r.status}`, `creating app ${String(spec.name)}: ${e?.message ?? `HTTP ${r.status}`}`);
      }
      apps.push(r.body as { name: string; version: number; action: string });
    }
    const s = ctx.stats;
    const summary = { file, images, blobsUploaded: s.uploaded, blobsPresent: s.present, bytesUploaded: s.bytesUploaded, manifests: s.manifests, apps };
    if (values.json) return printJson(summary), 0;
    process.stdout.write(`imported ${images.length} image(s): ${s.uploaded} blobs uploaded (${formatBytes(s.bytesUploaded)}), ${s.present} already there\n`);
    for (const a of apps) process.stdout.write(`app ${a.name}: ${a.action} (version ${a.version})\n`);
    return 0;
  } finally {
    progress.end();
    client.close();
    await rm(work, { recursive: true, force: true });
  }
}

/** Extracts a bundle into `dir`, refusing anything a bundle does not hold; returns its metadata. */
export async function extractBundle(file: string, dir: string): Promise<BundleMeta> {
  let entries = 0;
  let refused: string | undefined;
  try {
    await tar.x({
      file,
      cwd: dir,
      strict: true,
      preservePaths: false,
      filter: (path, entry) => {
        const type = 'type' in entry ? String(entry.type) : 'File';
        const size = 'size' in entry ? Number(entry.size) : 0;
        if (++entries > MAX_BUNDLE_ENTRIES) refused ??= `more than ${MAX_BUNDLE_ENTRIES} entries`;
        else if (!bundleEntryAllowed(path, type)) refused ??= `${JSON.stringify(path.slice(0, 120))} (${type}), which is not part of a bundle`;
        else if (size > MAX_BLOB_BYTES) refused ??= `${path} of ${size} bytes (at most ${MAX_BLOB_BYTES})`;
        return refused === undefined;
      },
    });
  } catch (err) {
    throw new OmniError('BUNDLE_INVALID', `${file} is not a readable tar: ${(err as Error).message}`);
  }
  if (refused) throw new OmniError('BUNDLE_INVALID', `${file} is not an Omni bundle: it holds ${refused}`);
  const metaPath = join(dir, BUNDLE_META_FILE);
  const metaStat = await stat(metaPath).catch(() => undefined);
  if (!metaStat) throw new OmniError('BUNDLE_INVALID', `${file} is not an Omni bundle: no ${BUNDLE_META_FILE}`);
  if (metaStat.size > MAX_BUNDLE_META_BYTES) throw new OmniError('BUNDLE_INVALID', `${BUNDLE_META_FILE} is over ${MAX_BUNDLE_META_BYTES} bytes`);
  const r = readBundleMeta(await readFile(metaPath, 'utf8'));
  if (!r.ok) throw new OmniError('BUNDLE_INVALID', r.message);
  return r.meta;
}
