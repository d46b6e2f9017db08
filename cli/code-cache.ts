// Runs a CommonJS bundle with a V8 code cache made after start-up (dist/omnid.cjs: issue 13).
//
// Node's compile cache (module.enableCompileCache) saves a script's code right after compiling it:
// only the top level and the functions V8 compiles eagerly. Every other function the bundle runs
// at start-up — most module bodies of esbuild's lazy wrappers, libp2p's and the daemon's set-up —
// is compiled again at each start: ~70 ms of omnid's start-up CPU here. A cache made once the
// program has run for a while (`script.createCachedData()` then) holds those functions too:
// `omnid init` reaches its API with ~100 ms less CPU (~650 instead of ~750 ms on a 2-core VM).
//
// The cache file is named by the bundle's contents (sha256), the Node version, the architecture and
// the V8 flags of this process, and carries a sha256 of its own bytes: another bundle (a rebuild,
// even of the same length: V8's own check compares only lengths), another Node or other flags
// never meet a cache that is not theirs, and a torn or damaged file is not used. A start that finds
// none (or one V8 rejects) writes one `writeAfterMs` after it began, to a temporary file renamed
// into place, so processes starting together never read half a file; a directory it cannot write
// to only means no cache. An ASCII bundle (esbuild's output is) is read as latin1: the same string,
// without UTF-8 decoding.
import { isAscii } from 'node:buffer';
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, closeSync, constants, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { Module, createRequire } from 'node:module';
import { basename, dirname, join } from 'node:path';
import vm from 'node:vm';
import { setCodeCacheState, type CodeCacheState } from '../node/code-cache-state.js';

export type { CodeCacheState };

export interface CodeCacheOptions {
  /** Where cache files are kept (made when first written). */
  cacheDir: string;
  /** A start without a usable cache writes one this long after it began (timer unref'd: a process that ends sooner writes none). */
  writeAfterMs: number;
  /** The module that loads the bundle (its `module.parent`). */
  parent?: NodeJS.Module;
}

/** The CommonJS wrapper, its head on a line of its own: the bundle's lines keep their numbers (lineOffset -1), stack traces and source maps their positions. */
const HEAD = '(function (exports, require, module, __filename, __dirname) {\n';
const TAIL = '\n})';
const DIGEST_BYTES = 32;

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest();

/** The cache file's name for a bundle of these bytes, in this wrapper, run by this Node binary with these flags. */
export function codeCacheName(file: string, bytes: Uint8Array): string {
  const h = createHash('sha256').update(bytes);
  h.update(`\0${HEAD}\0${TAIL}\0${process.version}\0${process.arch}\0${process.execPath}\0${process.execArgv.join('\0')}\0${process.env.NODE_OPTIONS ?? ''}`);
  return `${basename(file)}-${h.digest('hex').slice(0, 32)}.v8`;
}

function readCache(path: string): { data?: Buffer; state: 'corrupt' | 'none' } {
  let raw: Buffer;
  try {
    raw = readFileSync(path);
  } catch {
    return { state: 'none' };
  }
  const data = raw.subarray(DIGEST_BYTES);
  if (raw.length <= DIGEST_BYTES || !sha256(data).equals(raw.subarray(0, DIGEST_BYTES))) return { state: 'corrupt' };
  return { data, state: 'none' };
}

/** writeSync until every byte is written (one call may write part of it). */
function writeAll(fd: number, b: Uint8Array): void {
  for (let at = 0; at < b.length; ) at += writeSync(fd, b, at, b.length - at);
}

function writeCache(script: vm.Script, path: string): void {
  const dir = dirname(path);
  const tmp = `${path}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`; // pid alone: processes of two PID namespaces may share the directory
  try {
    mkdirSync(dir, { recursive: true });
    accessSync(dir, constants.W_OK); // before the serialising, which costs tens of ms for omnid
    const data = script.createCachedData();
    const fd = openSync(tmp, 'w', 0o644);
    try {
      writeAll(fd, sha256(data));
      writeAll(fd, data);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch {
    // a read-only install, a full disk: no cache, nothing else changes
    try {
      rmSync(tmp, { force: true });
    } catch {
      // no directory to remove it from
    }
  }
}

/**
 * Runs the CommonJS file `file` as `require(file)` would (its own `module`, `exports`, `require`
 * resolving from its directory, `__filename`, `__dirname`), compiled with the code cache of
 * `opts.cacheDir` when there is one for it; returns what became of that cache.
 */
export function runWithCodeCache(file: string, opts: CodeCacheOptions): CodeCacheState {
  const bytes = readFileSync(file);
  const source = isAscii(bytes) ? bytes.toString('latin1') : bytes.toString('utf8');
  const cachePath = join(opts.cacheDir, codeCacheName(file, bytes));
  const cached = readCache(cachePath);
  const script = new vm.Script(HEAD + source + TAIL, {
    filename: file,
    lineOffset: -1,
    ...(cached.data ? { cachedData: cached.data } : {}),
    importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  const state: CodeCacheState = cached.data ? (script.cachedDataRejected ? 'rejected' : 'accepted') : cached.state;
  if (state !== 'accepted') setTimeout(() => writeCache(script, cachePath), opts.writeAfterMs).unref();
  const wrapper = script.runInThisContext() as (exports: unknown, require: NodeJS.Require, module: NodeJS.Module, filename: string, dirname: string) => void;
  setCodeCacheState(state);
  const mod = new Module(file, opts.parent);
  mod.filename = file;
  wrapper.call(mod.exports, mod.exports, createRequire(file), mod, file, dirname(file));
  mod.loaded = true;
  return state;
}
