// Reproducible image layers written by Forge: a tar (gzip) whose bytes depend only on the files'
// relative paths, contents, file type and executable bit — entries sorted bytewise, every
// directory listed, mtime fixed (FIXED_MTIME), uid/gid 0 and no user names, modes normalised
// (0755 directories and executables, 0644 other files), hard links stored as files, no build-host
// path. Headers are encoded with node-tar's Header/Pax (PAX records for long names); the gzip
// stream carries no time or name. Returns the compressed digest (the blob) and the uncompressed
// one (the config's diff_id).
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { lstat, open, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip, constants as zc } from 'node:zlib';
import { Header, Pax } from 'tar';
import { isIgnored, type IgnoreRule } from '../../protocol/forge/ignore.js';
import { OmniError } from '../errors.js';

/** The mtime of every entry (2000-01-01, as Bazel does; 1970 upsets some tools). */
export const FIXED_MTIME = new Date(Date.UTC(2000, 0, 1));
export const MAX_LAYER_ENTRIES = 500_000;

export type LayerEntry =
  | { path: string; type: 'dir' }
  | { path: string; type: 'file'; executable: boolean; size: number; source: string }
  | { path: string; type: 'file'; executable: boolean; size: number; data: Buffer }
  | { path: string; type: 'symlink'; target: string };

export interface LayerBlob {
  /** sha256 of the gzip blob. */
  digest: string;
  /** sha256 of the uncompressed tar (diff_id). */
  diffId: string;
  sizeBytes: number;
  entries: number;
}

export interface CollectOptions {
  /** Path inside the layer the tree lands under (e.g. `app`), no leading or trailing slash. */
  prefix: string;
  /** Ignore rules (.gitignore/.dockerignore) applied to paths relative to the tree's root. */
  ignore?: readonly IgnoreRule[];
  /** Relative paths left out with everything below them. */
  exclude?: readonly string[];
  /** Names left out wherever they are, with everything below them (`.git`: a nested repository's, a submodule's). */
  excludeNames?: readonly string[];
  /** Stop once the files' bytes pass this (an error names the limit). */
  maxBytes?: number;
  /** Leave out sockets, devices and FIFOs (a root filesystem's /dev) instead of refusing them. */
  skipSpecial?: boolean;
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
/** Bytewise order of UTF-8 paths (JS string order is UTF-16; the same for BMP text, bytewise for the rest). */
export const comparePaths = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b)) || cmp(a, b);

/**
 * The entries of a directory tree, sorted, under `prefix` (its parent directories included).
 * Special files (sockets, devices, FIFOs) are refused: a build context holds files.
 */
export async function collectTree(root: string, o: CollectOptions): Promise<{ entries: LayerEntry[]; bytes: number }> {
  const entries: LayerEntry[] = [];
  const prefixParts = o.prefix ? o.prefix.split('/') : [];
  for (let i = 1; i <= prefixParts.length; i++) entries.push({ path: prefixParts.slice(0, i).join('/'), type: 'dir' });
  const exclude = new Set(o.exclude ?? []);
  const excludeNames = new Set(o.excludeNames ?? []);
  let bytes = 0;
  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(join(root, rel))).sort(comparePaths);
    for (const name of names) {
      const r = rel ? `${rel}/${name}` : name;
      if (exclude.has(r) || excludeNames.has(name)) continue;
      const abs = join(root, r);
      const st = await lstat(abs);
      const isDir = st.isDirectory();
      if (o.ignore && isIgnored(o.ignore, r, isDir)) continue;
      const path = o.prefix ? `${o.prefix}/${r}` : r;
      if (entries.length >= MAX_LAYER_ENTRIES) throw new OmniError('TOO_LARGE', `more than ${MAX_LAYER_ENTRIES} files under ${root}`);
      if (isDir) {
        entries.push({ path, type: 'dir' });
        await walk(r);
      } else if (st.isFile()) {
        bytes += st.size;
        if (o.maxBytes !== undefined && bytes > o.maxBytes) throw new OmniError('TOO_LARGE', `${root} holds more than ${o.maxBytes} bytes of files (the limit); leave large files out with .dockerignore or .gitignore`);
        entries.push({ path, type: 'file', executable: (st.mode & 0o111) !== 0, size: st.size, source: abs });
      } else if (st.isSymbolicLink()) {
        entries.push({ path, type: 'symlink', target: await readlink(abs) });
      } else if (!o.skipSpecial) {
        throw new OmniError('INVALID', `${r} is not a file, directory or symbolic link (a socket, device or FIFO cannot go into an image)`);
      }
    }
  };
  await walk('');
  entries.sort((a, b) => comparePaths(a.path, b.path));
  return { entries, bytes };
}

function header(e: LayerEntry): Buffer {
  const isDir = e.type === 'dir';
  const path = isDir ? `${e.path}/` : e.path;
  const data = {
    path,
    mode: e.type === 'dir' ? 0o755 : e.type === 'symlink' ? 0o777 : e.executable ? 0o755 : 0o644,
    uid: 0,
    gid: 0,
    size: e.type === 'file' ? e.size : 0,
    mtime: FIXED_MTIME,
    type: (e.type === 'dir' ? 'Directory' : e.type === 'symlink' ? 'SymbolicLink' : 'File') as 'Directory' | 'SymbolicLink' | 'File',
    linkpath: e.type === 'symlink' ? e.target : '',
    uname: '',
    gname: '',
  };
  const h = new Header(data);
  const block = Buffer.alloc(512);
  h.encode(block);
  if (!h.needPax) return block;
  const pax = new Pax({ path, mtime: FIXED_MTIME, ...(e.type === 'symlink' ? { linkpath: e.target } : {}) }).encode();
  return Buffer.concat([pax, block]);
}

async function* tarStream(entries: readonly LayerEntry[]): AsyncGenerator<Buffer> {
  for (const e of entries) {
    yield header(e);
    if (e.type !== 'file') continue;
    if ('data' in e) {
      if (e.data.length !== e.size) throw new OmniError('INTERNAL', `${e.path}: size mismatch`);
      yield e.data;
    } else {
      let left = e.size;
      const fh = await open(e.source, 'r');
      try {
        for await (const chunk of fh.createReadStream({ start: 0, highWaterMark: 256 * 1024, autoClose: false }) as AsyncIterable<Buffer>) {
          const part = chunk.length > left ? chunk.subarray(0, left) : chunk;
          left -= part.length;
          if (part.length) yield part;
          if (left === 0) break;
        }
      } finally {
        await fh.close();
      }
      if (left !== 0) throw new OmniError('CHANGED', `${e.path} changed while it was being read (it shrank); run the build again`);
    }
    const pad = (512 - (e.size % 512)) % 512;
    if (pad) yield Buffer.alloc(pad);
  }
  yield Buffer.alloc(1024);
}

function hashing(h: ReturnType<typeof createHash>, count?: { n: number }): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      h.update(chunk);
      if (count) count.n += chunk.length;
      cb(null, chunk);
    },
  });
}

/** Writes the entries as a gzip tar layer to `out`. */
export async function writeLayer(entries: readonly LayerEntry[], out: string): Promise<LayerBlob> {
  const raw = createHash('sha256');
  const gz = createHash('sha256');
  const size = { n: 0 };
  // Level and strategy fixed so the bytes are the same on every node of one Node.js/zlib version.
  await pipeline(Readable.from(tarStream(entries)), hashing(raw), createGzip({ level: 6, strategy: zc.Z_DEFAULT_STRATEGY }), hashing(gz, size), createWriteStream(out));
  return { digest: 'sha256:' + gz.digest('hex'), diffId: 'sha256:' + raw.digest('hex'), sizeBytes: size.n, entries: entries.length };
}

/** sha256 of a file. */
export async function fileDigest(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), hashing(h), new Transform({ transform: (_c, _e, cb) => cb() }));
  return 'sha256:' + h.digest('hex');
}
