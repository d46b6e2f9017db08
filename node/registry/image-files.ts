// Images as files, moved through a registry (the CLI's RegistryClient over a node's /v2/ for omni
// images import/export/push/pull and the bundle's images; a node's own registry in process for a
// Dockerfile build's `docker save`): reading a `docker save` tarball or an OCI
// layout (a directory or a tar) and pushing its images; fetching an image into a layout and
// writing it as a directory or a tar that `docker load` and skopeo read. The formats and the
// checks are in protocol/registry/image-archive.ts.
//
// Every input is untrusted: a tar is extracted into a fresh temporary directory with only regular
// files and directories (no path may leave it; symbolic links are recorded and resolved inside the
// archive, never written; at most 100,000 entries, 16 GiB a file, and no more than the free
// space), JSON files are size-limited before they are read, manifests are checked against their
// digests, a docker-save layer against its config's diff_id, and every blob by the registry (which
// refuses one whose bytes differ from its digest).
import { createReadStream, createWriteStream } from 'node:fs';
import { lstat, mkdir, readFile, readlink, rename, rm, stat, statfs, writeFile, readdir, rmdir } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { createGzip } from 'node:zlib';
import { dirname, join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar';
import { OmniError } from '../errors.js';
import { parseManifest, MAX_MANIFEST_BYTES, type ParsedManifest } from '../../protocol/registry/manifest.js';
import { MAX_BLOB_BYTES } from '../../protocol/registry/records.js';
import {
  DOCKER_MANIFEST_JSON,
  MAX_ARCHIVE_ENTRIES,
  MAX_ARCHIVE_JSON_BYTES,
  OCI_INDEX_JSON,
  OCI_LAYOUT,
  archiveEntryKind,
  archivePath,
  checkLayoutVersion,
  choosePlatform,
  dockerImageManifest,
  dockerLoadManifest,
  layoutBlobPath,
  layoutIndex,
  linkTarget,
  readDockerArchiveManifest,
  readImageConfig,
  readLayoutIndex,
  registryName,
  platformForArch,
  type DockerArchiveImage,
  type LayoutEntry,
  type Platform,
  type RegistryName,
} from '../../protocol/registry/image-archive.js';

/** The registry calls images as files need (cli/omni/registry-client.ts over HTTP; a node's registry in process). */
export interface ImageRegistry {
  hasBlob(repo: string, digest: string): Promise<boolean>;
  mountBlob(repo: string, digest: string): Promise<boolean>;
  uploadBlob(repo: string, digest: string, path: string, onBytes?: (n: number) => void): Promise<void>;
  downloadBlob(repo: string, digest: string, dest: string, onBytes?: (n: number) => void): Promise<number>;
  manifest(repo: string, digest: string): Promise<{ bytes: Buffer; mediaType: string }>;
  putManifest(repo: string, ref: string, bytes: Buffer, mediaType: string): Promise<void>;
}

/** Where a transfer reports its bytes (cli/omni/progress.ts on a terminal; NO_PROGRESS elsewhere). */
export interface TransferProgress {
  advance(n: number): void;
  addTotal(n: number): void;
  setLabel(label: string): void;
}

export const NO_PROGRESS: TransferProgress = { advance: () => undefined, addTotal: () => undefined, setLabel: () => undefined };

/** Nested indexes followed (an index of indexes of manifests is depth 2). */
const MAX_INDEX_DEPTH = 4;
/** Symbolic links followed to reach one file. */
const MAX_LINK_HOPS = 8;
/** Free space kept on the disk of the temporary directory. */
const FREE_SPACE_RESERVE_BYTES = 256 * 1024 * 1024;

const sha256 = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');
const invalid = (what: string, why: string) => new OmniError('IMAGE_FILE_INVALID', `${what}: ${why}`);

// ---------------------------------------------------------------------------------- sources

/** Files of a source (a directory, or a tar extracted into one), reached only by checked paths. */
export class SourceTree {
  constructor(
    /** What the user named (for messages). */
    readonly label: string,
    private readonly root: string,
    /** Symbolic links of an extracted tar (not written to disk): path → target path. */
    private readonly links: ReadonlyMap<string, string> = new Map(),
  ) {}

  /**
   * The real file of a path inside the source: every component is checked (lstat), a symbolic
   * link is followed only to a path inside the source, and the end must be a regular file.
   */
  async file(rel: string): Promise<{ path: string; sizeBytes: number } | undefined> {
    let p = archivePath(rel);
    if (!p.ok) throw invalid(this.label, `it refers to ${p.message}`);
    for (let hops = 0; hops <= MAX_LINK_HOPS; hops++) {
      const parts = p.value.split('/');
      let redirected = false;
      for (let i = 1; i <= parts.length; i++) {
        const prefix = parts.slice(0, i).join('/');
        const rest = parts.slice(i).join('/');
        const linked = this.links.get(prefix);
        let target: string | undefined = linked;
        if (target === undefined) {
          const st = await lstat(join(this.root, prefix)).catch(() => undefined);
          // A directory that exists only through the links of an extracted tar (a/b → …): go on.
          if (!st) {
            if (i === parts.length) return undefined;
            continue;
          }
          if (st.isSymbolicLink()) target = await readlink(join(this.root, prefix));
          else if (i < parts.length && !st.isDirectory()) return undefined;
          else if (i === parts.length) {
            if (!st.isFile()) throw invalid(this.label, `${prefix} is not a regular file`);
            return { path: join(this.root, prefix), sizeBytes: st.size };
          }
        }
        if (target !== undefined) {
          const t = linked !== undefined ? archivePath(linked) : linkTarget(prefix, target);
          if (!t.ok) throw invalid(this.label, t.message);
          p = archivePath(rest ? `${t.value}/${rest}` : t.value);
          if (!p.ok) throw invalid(this.label, p.message);
          redirected = true;
          break;
        }
      }
      if (!redirected) return undefined;
    }
    throw invalid(this.label, `${rel} goes through more than ${MAX_LINK_HOPS} links`);
  }

  async has(rel: string): Promise<boolean> {
    return (await this.file(rel)) !== undefined;
  }

  /** A small file (JSON, a manifest) read whole, refused above `maxBytes`. */
  async read(rel: string, maxBytes: number): Promise<Buffer> {
    const f = await this.file(rel);
    if (!f) throw invalid(this.label, `it has no ${rel}`);
    if (f.sizeBytes > maxBytes) throw invalid(this.label, `${rel} is ${f.sizeBytes} bytes; at most ${maxBytes} are read`);
    return readFile(f.path);
  }
}

/** One image a source holds. */
export interface SourceImage {
  /** How the image is described in messages: its first name, or its position. */
  label: string;
  /** Names the file gives it (an OCI layout may give only a tag). */
  names: { repository?: string; tag?: string }[];
  /** Names that could not be read. */
  nameProblems: string[];
  entry: { kind: 'oci'; layout: LayoutEntry } | { kind: 'docker'; image: DockerArchiveImage };
}

export interface ImageSource {
  format: 'docker-archive' | 'oci-layout';
  tree: SourceTree;
  images: SourceImage[];
}

/**
 * Extracts a tar (plain or gzip) into `dir`: regular files and directories only, every path
 * checked; symbolic links are returned (resolved later, inside the archive), anything else refuses
 * the whole archive. Entries, file sizes and the total are bounded; the free space is checked.
 */
export async function extractArchive(file: string, dir: string, label = file): Promise<Map<string, string>> {
  const links = new Map<string, string>();
  let entries = 0;
  let total = 0;
  let refused: string | undefined;
  const free = await statfs(dir).then((s) => Number(s.bavail) * Number(s.bsize), () => Number.MAX_SAFE_INTEGER);
  const room = Math.max(0, free - FREE_SPACE_RESERVE_BYTES);
  const { size } = await stat(file);
  if (size > room) throw new OmniError('NO_SPACE', `extracting ${label} needs about ${size} bytes in ${dir}; ${room} are free (set TMPDIR to a larger disk)`);
  try {
    await tar.x({
      file,
      cwd: dir,
      strict: true,
      preservePaths: false,
      preserveOwner: false,
      filter: (path, entry) => {
        if (refused) return false;
        const type = 'type' in entry ? String(entry.type) : 'File';
        const bytes = 'size' in entry ? Number(entry.size) : 0;
        const p = archivePath(path);
        const kind = archiveEntryKind(type);
        if (++entries > MAX_ARCHIVE_ENTRIES) refused = `more than ${MAX_ARCHIVE_ENTRIES} entries`;
        else if (!p.ok) refused = p.message;
        else if (!kind) refused = `${JSON.stringify(path.slice(0, 120))}, an entry of type ${type} (only files, directories and symbolic links are read)`;
        else if (bytes > MAX_BLOB_BYTES) refused = `${p.value} of ${bytes} bytes (at most ${MAX_BLOB_BYTES})`;
        else if ((total += bytes) > room) refused = `more than the ${room} bytes free in ${dir} (set TMPDIR to a larger disk)`;
        else if (kind === 'link') {
          const target = 'linkpath' in entry ? String(entry.linkpath ?? '') : '';
          const t = linkTarget(p.value, target);
          if (!t.ok) refused = t.message;
          else links.set(p.value, t.value);
          return false;
        }
        return refused === undefined && p.ok && p.value !== '';
      },
    });
  } catch (err) {
    throw invalid(label, `not a readable tar (${(err as Error).message.slice(0, 300)})`);
  }
  if (refused) throw invalid(label, `refused: it holds ${refused}`);
  return links;
}

/** Opens a docker-save tarball, an OCI layout directory or an OCI layout tar (extracted into `work`). */
export async function openSource(path: string, work: string): Promise<ImageSource> {
  const st = await stat(path).catch(() => undefined);
  if (!st) throw new OmniError('NOT_FOUND', `cannot read ${path}`);
  let tree: SourceTree;
  if (st.isDirectory()) tree = new SourceTree(path, path);
  else if (st.isFile()) tree = new SourceTree(path, work, await extractArchive(path, work, path));
  else throw invalid(path, 'not a file or a directory');
  if (await tree.has(OCI_INDEX_JSON)) {
    if (await tree.has(OCI_LAYOUT)) {
      const v = checkLayoutVersion((await tree.read(OCI_LAYOUT, 4096)).toString('utf8'));
      if (!v.ok) throw invalid(path, v.message);
    }
    const idx = readLayoutIndex((await tree.read(OCI_INDEX_JSON, MAX_ARCHIVE_JSON_BYTES)).toString('utf8'));
    if (!idx.ok) throw invalid(path, idx.message);
    const images = idx.value.map((e, i): SourceImage => ({
      label: e.names[0] ? `${e.names[0].repository ?? ''}${e.names[0].repository ? ':' : 'tag '}${e.names[0].tag ?? 'latest'}` : `image ${i + 1} (${e.digest.slice(0, 19)})`,
      names: e.names,
      nameProblems: e.nameProblems,
      entry: { kind: 'oci', layout: e },
    }));
    return { format: 'oci-layout', tree, images };
  }
  if (await tree.has(DOCKER_MANIFEST_JSON)) {
    const m = readDockerArchiveManifest((await tree.read(DOCKER_MANIFEST_JSON, MAX_ARCHIVE_JSON_BYTES)).toString('utf8'));
    if (!m.ok) throw invalid(path, m.message);
    const images = m.value.map((img, i): SourceImage => {
      const names: SourceImage['names'] = [];
      const problems: string[] = [];
      for (const t of img.repoTags) {
        const n = registryName(t);
        if (n.ok && !n.value.digest) names.push({ repository: n.value.repository, tag: n.value.tag ?? 'latest' });
        else problems.push(n.ok ? `${t}: a digest is no tag` : n.message);
      }
      return { label: img.repoTags[0] ?? `image ${i + 1}`, names, nameProblems: problems, entry: { kind: 'docker', image: img } };
    });
    return { format: 'docker-archive', tree, images };
  }
  throw invalid(path, `neither a docker save tarball (${DOCKER_MANIFEST_JSON}) nor an OCI image layout (${OCI_INDEX_JSON})`);
}

// ---------------------------------------------------------------------------------- push

export interface PushStats {
  uploaded: number;
  present: number;
  bytesUploaded: number;
  manifests: number;
}

export interface PushContext {
  reg: ImageRegistry;
  progress: TransferProgress;
  stats: PushStats;
  /** repo@digest of manifests already pushed in this run. */
  pushed: Set<string>;
  /** Work directory for compressed layers. */
  work: string;
  /** docker-save layers already compressed in this run: path → blob. */
  compressed: Map<string, { digest: string; sizeBytes: number; path: string }>;
}

export function newPushContext(reg: ImageRegistry, progress: TransferProgress, work: string): PushContext {
  return { reg, progress, work, stats: { uploaded: 0, present: 0, bytesUploaded: 0, manifests: 0 }, pushed: new Set(), compressed: new Map() };
}

/** A manifest of the source, read whole, checked against its digest and parsed. */
async function readLayoutManifest(tree: SourceTree, digest: string, mediaType: string | undefined): Promise<{ bytes: Buffer; manifest: ParsedManifest }> {
  const rel = layoutBlobPath(digest);
  const f = await tree.file(rel);
  if (!f) throw invalid(tree.label, `it lacks manifest ${digest}`);
  if (f.sizeBytes > MAX_MANIFEST_BYTES) throw invalid(tree.label, `manifest ${digest} is ${f.sizeBytes} bytes; the registry takes at most ${MAX_MANIFEST_BYTES}`);
  const bytes = await readFile(f.path);
  if (sha256(bytes) !== digest) throw invalid(tree.label, `manifest ${digest} does not match its digest`);
  let declared = mediaType;
  if (declared === undefined) {
    try {
      declared = (JSON.parse(bytes.toString('utf8')) as { mediaType?: string }).mediaType;
    } catch {
      // parseManifest says why
    }
  }
  const parsed = parseManifest(bytes, declared);
  if (!parsed.ok) throw invalid(tree.label, `manifest ${digest}: ${parsed.message}`);
  return { bytes, manifest: parsed.manifest };
}

/** Uploads one blob unless the registry has it; the file's size must be the descriptor's. */
async function pushBlob(ctx: PushContext, repo: string, digest: string, sizeBytes: number, file: () => Promise<{ path: string; sizeBytes: number } | undefined>, what: string): Promise<void> {
  if ((await ctx.reg.hasBlob(repo, digest)) || (await ctx.reg.mountBlob(repo, digest))) {
    ctx.stats.present++;
    ctx.progress.advance(sizeBytes);
    return;
  }
  const f = await file();
  if (!f) throw invalid(what, `it lacks blob ${digest}`);
  if (f.sizeBytes !== sizeBytes) throw invalid(what, `blob ${digest} is ${f.sizeBytes} bytes; its manifest says ${sizeBytes}`);
  try {
    await ctx.reg.uploadBlob(repo, digest, f.path, (n) => ctx.progress.advance(n));
  } catch (err) {
    if (err instanceof OmniError && err.message.includes('DIGEST_INVALID')) throw invalid(what, `blob ${digest} does not match its digest (the registry refused it)`);
    throw err;
  }
  ctx.stats.uploaded++;
  ctx.stats.bytesUploaded += sizeBytes;
}

/**
 * Pushes an image of an OCI layout (a manifest or an index, by digest) into `repo`: its blobs (those
 * the registry lacks), an index's manifests, then the manifest itself. Returns its bytes and type.
 */
export async function pushLayoutImage(ctx: PushContext, tree: SourceTree, repo: string, digest: string, mediaType: string | undefined, depth = 0): Promise<{ bytes: Buffer; mediaType: string; digest: string }> {
  if (depth > MAX_INDEX_DEPTH) throw invalid(tree.label, `indexes nested deeper than ${MAX_INDEX_DEPTH}`);
  const { bytes, manifest } = await readLayoutManifest(tree, digest, mediaType);
  if (ctx.pushed.has(`${repo}@${digest}`)) return { bytes, mediaType: manifest.mediaType, digest };
  for (const b of manifest.blobs) ctx.progress.addTotal(b.sizeBytes);
  for (const b of manifest.blobs) await pushBlob(ctx, repo, b.digest, b.sizeBytes, () => tree.file(layoutBlobPath(b.digest)), tree.label);
  for (const c of manifest.manifests) await pushLayoutImage(ctx, tree, repo, c.digest, c.mediaType, depth + 1);
  await ctx.reg.putManifest(repo, digest, bytes, manifest.mediaType);
  ctx.pushed.add(`${repo}@${digest}`);
  ctx.stats.manifests++;
  return { bytes, mediaType: manifest.mediaType, digest };
}

/** Gzips a docker-save layer into the work directory, checking its uncompressed digest against the config's diff_id. */
async function compressLayer(ctx: PushContext, tree: SourceTree, rel: string, diffId: string): Promise<{ digest: string; sizeBytes: number; path: string }> {
  const f = await tree.file(rel);
  if (!f) throw invalid(tree.label, `it lacks layer ${rel}`);
  const cached = ctx.compressed.get(f.path);
  if (cached) return cached;
  if (f.sizeBytes > MAX_BLOB_BYTES) throw invalid(tree.label, `layer ${rel} is over ${MAX_BLOB_BYTES} bytes`);
  const raw = createHash('sha256');
  const gz = createHash('sha256');
  let gzBytes = 0;
  const out = join(ctx.work, `layer-${ctx.compressed.size}.tar.gz`);
  await pipeline(
    createReadStream(f.path),
    new Transform({
      transform(chunk: Buffer, _e, cb) {
        raw.update(chunk);
        ctx.progress.advance(chunk.length);
        cb(null, chunk);
      },
    }),
    createGzip(),
    new Transform({
      transform(chunk: Buffer, _e, cb) {
        gz.update(chunk);
        gzBytes += chunk.length;
        cb(null, chunk);
      },
    }),
    createWriteStream(out, { mode: 0o600 }),
  );
  const got = 'sha256:' + raw.digest('hex');
  if (got !== diffId) throw invalid(tree.label, `layer ${rel} has digest ${got}, but the image config says ${diffId}`);
  const blob = { digest: 'sha256:' + gz.digest('hex'), sizeBytes: gzBytes, path: out };
  ctx.compressed.set(f.path, blob);
  return blob;
}

/**
 * Pushes an image of a docker save tarball into `repo`: its config as is, its layers gzip-compressed
 * (each checked against the config's diff_ids first), and a Docker schema 2 manifest naming them
 * (the same tarball always gives the same digest).
 */
export async function pushDockerArchiveImage(ctx: PushContext, tree: SourceTree, repo: string, img: DockerArchiveImage): Promise<{ bytes: Buffer; mediaType: string; digest: string }> {
  const configBytes = await tree.read(img.config, MAX_ARCHIVE_JSON_BYTES);
  const configDigest = sha256(configBytes);
  const named = /(?:^|\/)([a-f0-9]{64})(?:\.json)?$/.exec(img.config);
  if (named && `sha256:${named[1]}` !== configDigest) throw invalid(tree.label, `the config ${img.config} does not match the digest in its name`);
  const config = readImageConfig(configBytes);
  if (!config.ok) throw invalid(tree.label, `${img.config}: ${config.message}`);
  if (config.value.diffIds.length !== img.layers.length) throw invalid(tree.label, `${DOCKER_MANIFEST_JSON} lists ${img.layers.length} layers but the config lists ${config.value.diffIds.length}`);
  const label = ctx.progress;
  const toCompress = new Map<string, number>();
  for (const rel of img.layers) {
    const f = await tree.file(rel);
    if (f && !ctx.compressed.has(f.path)) toCompress.set(f.path, f.sizeBytes);
  }
  label.addTotal([...toCompress.values()].reduce((a, b) => a + b, 0));
  const layers = [];
  for (const [i, rel] of img.layers.entries()) {
    label.setLabel(`compressing layer ${i + 1}/${img.layers.length}`);
    layers.push(await compressLayer(ctx, tree, rel, config.value.diffIds[i]));
  }
  label.setLabel(`pushing to ${repo}`);
  label.addTotal(configBytes.length + layers.reduce((a, l) => a + l.sizeBytes, 0));
  const configFile = join(ctx.work, `config-${configDigest.slice(7, 19)}.json`);
  await writeFile(configFile, configBytes, { mode: 0o600 });
  await pushBlob(ctx, repo, configDigest, configBytes.length, async () => ({ path: configFile, sizeBytes: configBytes.length }), tree.label);
  for (const l of layers) await pushBlob(ctx, repo, l.digest, l.sizeBytes, async () => ({ path: l.path, sizeBytes: l.sizeBytes }), tree.label);
  const bytes = Buffer.from(dockerImageManifest({ digest: configDigest, sizeBytes: configBytes.length }, layers));
  const digest = sha256(bytes);
  if (!ctx.pushed.has(`${repo}@${digest}`)) {
    await ctx.reg.putManifest(repo, digest, bytes, JSON.parse(bytes.toString('utf8')).mediaType);
    ctx.pushed.add(`${repo}@${digest}`);
    ctx.stats.manifests++;
  }
  return { bytes, mediaType: (JSON.parse(bytes.toString('utf8')) as { mediaType: string }).mediaType, digest };
}

/** Pushes one image of a source into `repo` (by digest; the caller adds the tags). */
export function pushSourceImage(ctx: PushContext, src: ImageSource, img: SourceImage, repo: string): Promise<{ bytes: Buffer; mediaType: string; digest: string }> {
  return img.entry.kind === 'oci' ? pushLayoutImage(ctx, src.tree, repo, img.entry.layout.digest, img.entry.layout.mediaType) : pushDockerArchiveImage(ctx, src.tree, repo, img.entry.image);
}

// ---------------------------------------------------------------------------------- fetch

export interface FetchContext {
  reg: ImageRegistry;
  progress: TransferProgress;
  /** The layout directory being written. */
  dir: string;
  /** Digests written to it already. */
  seen: Set<string>;
  stats: { blobs: number; bytes: number };
}

export function newFetchContext(reg: ImageRegistry, progress: TransferProgress, dir: string): FetchContext {
  return { reg, progress, dir, seen: new Set(), stats: { blobs: 0, bytes: 0 } };
}

export interface FetchedImage {
  mediaType: string;
  digest: string;
  sizeBytes: number;
  /** For an image manifest: its config and layers (what docker load needs). */
  image?: { config: string; configMediaType: string; layers: string[] };
}

/** Counted into the progress total once, when the manifest naming it is read (before any download). */
async function fetchBlob(ctx: FetchContext, repo: string, digest: string, sizeBytes: number): Promise<void> {
  if (ctx.seen.has(digest)) return;
  ctx.seen.add(digest);
  const n = await ctx.reg.downloadBlob(repo, digest, join(ctx.dir, layoutBlobPath(digest)), (k) => ctx.progress.advance(k));
  if (n !== sizeBytes) throw new OmniError('DIGEST_INVALID', `blob ${digest} is ${n} bytes; its manifest says ${sizeBytes}`);
  ctx.stats.blobs++;
  ctx.stats.bytes += n;
}

/**
 * Fetches an image (a manifest or an index, by digest) from `repo` into the layout directory:
 * every manifest, config and layer, each checked against its digest. An index with `platform`:
 * only that platform's image, which is what is returned; without: every image it lists.
 */
export async function fetchImage(ctx: FetchContext, repo: string, digest: string, platform?: Platform, depth = 0): Promise<FetchedImage> {
  if (depth > MAX_INDEX_DEPTH) throw new OmniError('MANIFEST_INVALID', `indexes nested deeper than ${MAX_INDEX_DEPTH}`);
  const m = await ctx.reg.manifest(repo, digest);
  const parsed = parseManifest(m.bytes, m.mediaType);
  if (!parsed.ok) throw new OmniError('MANIFEST_INVALID', `manifest ${digest}: ${parsed.message}`);
  const man = parsed.manifest;
  if (man.kind === 'index' && platform) {
    const pick = choosePlatform(man.manifests, platform);
    if (!pick.ok) throw new OmniError('NOT_FOUND', `${repo}@${digest}: ${pick.message}`);
    return fetchImage(ctx, repo, pick.value.digest, platform, depth + 1);
  }
  if (!ctx.seen.has(digest)) {
    ctx.seen.add(digest);
    await writeFile(join(ctx.dir, layoutBlobPath(digest)), m.bytes, { mode: 0o600 });
    ctx.stats.blobs++;
    ctx.stats.bytes += m.bytes.length;
  }
  for (const b of man.blobs) if (!ctx.seen.has(b.digest)) ctx.progress.addTotal(b.sizeBytes);
  for (const b of man.blobs) await fetchBlob(ctx, repo, b.digest, b.sizeBytes);
  for (const c of man.manifests) await fetchImage(ctx, repo, c.digest, undefined, depth + 1);
  const out: FetchedImage = { mediaType: man.mediaType, digest, sizeBytes: m.bytes.length };
  if (man.kind === 'image') {
    // Layers in order, a repeated one as often as it appears (docker load pairs them with the config's diff_ids).
    const doc = JSON.parse(m.bytes.toString('utf8')) as { config: { digest: string; mediaType: string }; layers?: { digest: string; urls?: unknown }[] };
    const layers = (doc.layers ?? []).filter((l) => !(Array.isArray(l.urls) && l.urls.length > 0)).map((l) => l.digest);
    out.image = { config: doc.config.digest, configMediaType: doc.config.mediaType, layers };
  }
  return out;
}

/** A fresh layout directory (its blobs/sha256 made). */
export async function newLayoutDir(dir: string): Promise<void> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true, mode: 0o700 });
}

/**
 * Writes the layout's oci-layout and index.json (and, for `docker load`, manifest.json) in `dir`;
 * `extra` files are written beside them (the bundle's metadata).
 */
export async function finishLayout(dir: string, images: readonly (FetchedImage & { name?: RegistryName })[], o: { dockerLoad?: boolean; extra?: Record<string, string> } = {}): Promise<string[]> {
  await writeFile(join(dir, OCI_LAYOUT), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(join(dir, OCI_INDEX_JSON), layoutIndex(images));
  const files = [OCI_LAYOUT, OCI_INDEX_JSON];
  if (o.dockerLoad) {
    const loadable = images.filter((i) => i.image);
    await writeFile(join(dir, DOCKER_MANIFEST_JSON), dockerLoadManifest(loadable.map((i) => ({ config: i.image!.config, layers: i.image!.layers, repoTags: i.name && !i.name.digest ? [`${i.name.repository}:${i.name.tag ?? 'latest'}`] : [] }))));
    files.push(DOCKER_MANIFEST_JSON);
  }
  for (const [name, text] of Object.entries(o.extra ?? {})) {
    await writeFile(join(dir, name), text);
    files.push(name);
  }
  return [...files, 'blobs'];
}

/** Packs a finished layout directory into `out` (a tar, written beside it and renamed into place). */
export async function packLayout(dir: string, files: string[], out: string): Promise<number> {
  const partial = `${out}.partial`;
  try {
    await tar.c({ file: partial, cwd: dir, portable: true }, files);
    await rename(partial, out);
  } catch (err) {
    await rm(partial, { force: true });
    throw err;
  }
  return (await stat(out)).size;
}

/** Moves a finished layout directory to `out` (which must not exist, or be an empty directory). */
export async function placeLayoutDir(dir: string, out: string): Promise<void> {
  const st = await stat(out).catch(() => undefined);
  if (st) {
    if (!st.isDirectory() || (await readdir(out)).length > 0) throw new OmniError('CONFLICT', `${out} exists and is not an empty directory`);
    await rmdir(out);
  }
  await mkdir(dirname(out), { recursive: true });
  await rename(dir, out);
}

/** The platform of this machine, as images name it (linux/amd64, linux/arm64, …). */
export function hostPlatform(): Platform {
  return platformForArch(process.arch);
}
