// `npm run build`: bundles the CLI entry points into dist/ with esbuild so that bin/omni and
// bin/omnid start from prebuilt JavaScript instead of compiling TypeScript at every start (issue 13).
//
//   node scripts/build.mjs             build now
//   node scripts/build.mjs --if-stale  build only if dist/ is out of date (npm test, bin/omni, bin/omnid)
//   node scripts/build.mjs --check     exit 1 and say why if dist/ is out of date, 0 if current
//
// Outputs: dist/omnid.bundle.cjs, dist/omni.bundle.cjs (the CLI's main: help, version) and
// dist/omni-<module>.bundle.cjs (the main with one command module: COMMANDS below) — each one
// self-contained file: our code and the npm packages, except those with native addons, which stay
// in node_modules —, their source
// maps (cli/stack-traces.ts maps stack traces to the .ts files), dist/omni.cjs and dist/omnid.cjs
// (what bin/omni and bin/omnid run: Node's compile cache on, then the bundle), dist/omnid.bundle.cjs.map.idx
// (the checkpoints of omnid's map: its first stack trace need not index the map), a copy of the process
// driver's wrapper script (node/apps/drivers/process.ts reads it next to the running module) and
// dist/.stamp. "Out of date" is defined once, in scripts/dist-inputs.sh. Builds are serialized by
// a lock file; outputs are written beside their final names and renamed into place, so a process
// starting meanwhile loads either the old or the new complete bundle.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
const DIST = join(ROOT, 'dist');
const STAMP = join(DIST, '.stamp');
const LOCK = join(DIST, '.build.lock');
/**
 * The stamp is dated this much before the build started, as the file system dates a file created
 * then: a source saved in the same clock tick as that file (same mtime) must count as newer.
 */
const STAMP_MARGIN_MS = 1;
/** A lock older than this is left over from a build that died (a build takes seconds). */
const LOCK_STALE_MS = 5 * 60_000;
const LOCK_WAIT_MS = 10 * 60_000;
const LOCK_POLL_MS = 100;
/** npm packages with native addons: loaded from node_modules at run time (they find their .node files from their own directory). */
const EXTERNAL = ['classic-level', 'ssh2', 'cpu-features', 'sodium-native'];
/**
 * The CLI's commands (command → [module under cli/omni/, export]): each module is bundled on its
 * own with the CLI's main (dist/omni-<module>.bundle.cjs), and dist/omni.cjs starts the one its
 * command needs — `omni status` reads and compiles ~20 KB instead of the whole CLI's ~1 MB.
 * dist/omni.bundle.cjs, the main alone, answers --help, version and unknown commands.
 */
const COMMANDS = JSON.parse(readFileSync(join(ROOT, 'cli', 'omni-commands.json'), 'utf8'));
const COMMAND_MODULES = [...new Set(Object.values(COMMANDS).map(([module]) => module))];
for (const m of COMMAND_MODULES) if (!/^[a-z][a-z0-9-]*$/.test(m)) throw new Error(`cli/omni-commands.json: bad module name ${m}`);
/** dist/<name>.cjs starts dist/<name>.bundle.cjs with Node's compile cache on (launcherSource). */
const ENTRIES = {
  'omni.bundle': 'omni-entry:',
  ...Object.fromEntries(COMMAND_MODULES.map((m) => [`omni-${m}.bundle`, `omni-entry:${m}`])),
  'omnid.bundle': 'cli/omnid.ts',
  // dist/omnid.cjs runs omnid's bundle through it: a V8 code cache made after start-up
  'code-cache': 'cli/code-cache.ts',
};
/** The bundle dist/omni.cjs starts for each command. */
const OMNI_ROUTES = Object.fromEntries(Object.entries(COMMANDS).map(([cmd, [module]]) => [cmd, `omni-${module}.bundle.cjs`]));

/** Entry `omni-entry:MODULE`: the CLI's main (cli/omni-main.ts) with that one command module; `omni-entry:` with none. */
const omniEntries = {
  name: 'omni-entries',
  setup(b) {
    b.onResolve({ filter: /^omni-entry:/ }, (a) => ({ path: a.path, namespace: 'omni-entry' }));
    b.onLoad({ filter: /.*/, namespace: 'omni-entry' }, (a) => {
      const module = a.path.slice('omni-entry:'.length);
      const none = "Promise.reject(new Error(`omni: this bundle has no module ${m}`))";
      const load = module ? `(m) => m === ${JSON.stringify(module)} ? import(${JSON.stringify(`./cli/omni/${module}.ts`)}) : ${none}` : `(m) => ${none}`;
      return { contents: `import { runOmni } from './cli/omni-main.ts';\nrunOmni(${load});\n`, resolveDir: ROOT, loader: 'ts' };
    });
  },
};
const COMPILE_CACHE_DIR = '.compile-cache';
/** cli/code-cache.ts's cache files (dist/omnid.cjs); emptied by each build (they fit only the bundles they were made from). */
const CODE_CACHE_DIR = '.code-cache';
/** How long after its start an omnid without a usable code cache writes one (its start-up's functions compiled by then). */
const CODE_CACHE_WRITE_AFTER_MS = 3000;
/** The omnid commands that start a daemon: the ones run through the code cache. */
const DAEMON_COMMANDS = ['init', 'join', 'start'];
const COPIES = [
  ['node/apps/drivers/process-wrapper.sh', 'process-wrapper.sh'],
  ['node/apps/drivers/lease-watchdog.sh', 'lease-watchdog.sh'],
];

/** esbuild's options for bundles of `entryPoints` ({ outName: 'path/to/entry.ts' }) into `outdir` (test/unit/build.test.ts uses them too). */
export function esbuildOptions(entryPoints, outdir) {
  return {
    absWorkingDir: ROOT,
    entryPoints,
    outdir,
    outExtension: { '.js': '.cjs' },
    bundle: true,
    platform: 'node',
    // CommonJS, not ESM: a bundled module's require() of a node builtin runs when that module is
    // first used (esbuild hoists an ESM import of a builtin to the top of the bundle, and Node's
    // ESM facade of node:http alone loads its bundled undici: ~40 ms for `omni --help`)
    format: 'cjs',
    target: 'node24',
    external: EXTERNAL,
    define: { 'import.meta.url': '__omniImportMetaUrl' },
    banner: { js: 'const __omniImportMetaUrl = require("node:url").pathToFileURL(__filename).href;' },
    // linked maps, read only when a stack trace is formatted (cli/stack-traces.ts)
    sourcemap: 'linked',
    sourcesContent: false,
    // names kept (stack traces, constructor.name); whitespace and syntax minified: a 2.5 MB bundle
    // instead of 3.9 MB is ~25 ms less CPU at each omnid start (reading, hashing for the compile cache)
    keepNames: true,
    minifyWhitespace: true,
    minifySyntax: true,
    metafile: true,
    logLevel: 'warning',
    plugins: [omniEntries],
  };
}

/**
 * dist/omni.cjs, dist/omnid.cjs: turn on Node's compile cache (V8 code cache in dist/.compile-cache,
 * checked against the file's contents), then run the bundle. A bundle cannot do it for itself (it
 * is compiled before any of its code runs); NODE_COMPILE_CACHE in the launchers would pass on to
 * every process omnid starts. Saves ~70 ms of CPU at each omnid start (parsing the 4 MB bundle).
 * omnid's bundle itself goes through cli/code-cache.ts (dist/code-cache.cjs): a cache made after
 * start-up, with the functions start-up compiled (~100 ms less CPU again); Node's compile cache
 * then serves the npm packages left in node_modules. Only a daemon's start (init, join, start) goes
 * that way; OMNI_CODE_CACHE=off: a plain require.
 */
function launcherSource(bundle, routes) {
  // omni: the bundle of the command's module (argv[2]), else the main alone (help, version, unknown)
  const target = routes
    ? `const routes = ${JSON.stringify(routes)};
// omni help CMD: CMD's bundle (runOmni reads it as omni CMD --help)
const cmd = process.argv[2] === 'help' && process.argv[3] !== undefined ? process.argv[3] : process.argv[2];
require('./' + (cmd !== undefined && Object.hasOwn(routes, cmd) ? routes[cmd] : '${bundle}'));`
    : `const path = require('node:path');
// a daemon's start only: the cache (~3.8 MB of code) costs more to read than it saves for --help or version
const daemon = ${JSON.stringify(DAEMON_COMMANDS)}.includes(process.argv[2]) && !process.argv.includes('--help') && !process.argv.includes('-h');
if (!daemon || process.env.OMNI_CODE_CACHE === 'off') require('./${bundle}');
else require('./code-cache.cjs').runWithCodeCache(path.join(__dirname, '${bundle}'), { cacheDir: path.join(__dirname, '${CODE_CACHE_DIR}'), writeAfterMs: ${CODE_CACHE_WRITE_AFTER_MS}, parent: module });`;
  return `'use strict';
// Generated by scripts/build.mjs: Node's compile cache on, then the bundle (see launcherSource there).
const m = require('node:module');
if (typeof m.enableCompileCache === 'function') m.enableCompileCache(require('node:path').join(__dirname, '${COMPILE_CACHE_DIR}'));
${target}
// written now (not only at exit): omnid usually ends by a signal
if (typeof m.flushCompileCache === 'function') m.flushCompileCache();
`;
}

/** The maps whose index file the build writes (cli/source-map-index.ts): the daemon's (the CLI's bundles format a stack trace rarely, and index it then). */
const INDEXED_MAPS = ['omnid.bundle.cjs.map'];

/**
 * Writes `mapPath`.idx, the index file of a source map (cli/source-map-index.ts, compiled here:
 * this script runs on plain Node); returns its file name. The mappings are found in the map's
 * bytes as cli/stack-traces.ts finds them, and checked against the map's JSON.
 */
export async function writeSourceMapIndex(mapPath) {
  const compiled = await build({ entryPoints: [join(ROOT, 'cli', 'source-map-index.ts')], bundle: true, write: false, format: 'esm', platform: 'node', target: 'node20', logLevel: 'warning' });
  const { SourceMapIndex, encodeIndexFile, findMappings } = await import(`data:text/javascript;base64,${Buffer.from(compiled.outputFiles[0].contents).toString('base64')}`);
  const raw = readFileSync(mapPath);
  const json = JSON.parse(raw.toString('utf8'));
  const where = findMappings(raw);
  if (!where || raw.toString('latin1', where.offset, where.offset + where.length) !== json.mappings) throw new Error(`${mapPath}: its mappings were not found where the index would say`);
  const sources = json.sources.map(String);
  const checkpoints = new SourceMapIndex(json.mappings, sources).checkpointTable();
  writeFileSync(`${mapPath}.idx`, encodeIndexFile({ mapBytes: raw.length, mappingsOffset: where.offset, mappingsLength: where.length, sources, checkpoints }));
  return `${mapPath.slice(mapPath.lastIndexOf('/') + 1)}.idx`;
}

/** Why dist/ must be rebuilt, or '' when it is current (scripts/dist-inputs.sh). */
function distStale() {
  return execFileSync('sh', ['-c', '. "$1/scripts/dist-inputs.sh" && omni_dist_stale "$1"', 'sh', ROOT], { encoding: 'utf8' }).trim();
}

function sleep(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
}

/** Takes dist/.build.lock (O_EXCL); waits while a live build holds it. */
function lock() {
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      writeFileSync(LOCK, `${process.pid}\n`, { flag: 'wx' });
      return;
    } catch (e) {
      if (e.code !== 'EEXIST') throw e;
    }
    let holder = NaN;
    let ageMs = 0;
    try {
      holder = Number(readFileSync(LOCK, 'utf8').trim());
      ageMs = Date.now() - statSync(LOCK).mtimeMs;
    } catch {
      continue; // released meanwhile
    }
    if (!(holder > 0) || !pidAlive(holder) || ageMs > LOCK_STALE_MS) {
      // left over: remove it unless another waiter already replaced it
      try {
        if (readFileSync(LOCK, 'utf8').trim() === String(holder)) unlinkSync(LOCK);
      } catch {
        // gone already
      }
      continue;
    }
    if (Date.now() > deadline) throw new Error(`another build (pid ${holder}) holds ${LOCK} for more than ${LOCK_WAIT_MS / 1000} s`);
    sleep(LOCK_POLL_MS);
  }
}

function unlock() {
  try {
    if (readFileSync(LOCK, 'utf8').trim() === String(process.pid)) unlinkSync(LOCK);
  } catch {
    // gone already
  }
}

/** Levels below cli/, node/ and protocol/ that bin/omni's staleness check looks at (scripts/dist-inputs.sh). */
const MAX_SOURCE_DEPTH = 4;

/** A source deeper than MAX_SOURCE_DEPTH would not make dist/ stale when it changes: refused. */
function requireShallowSources() {
  const walk = (dir, depth) => {
    for (const d of readdirSync(dir, { withFileTypes: true })) {
      if (d.name.startsWith('.')) continue;
      const path = join(dir, d.name);
      if (depth > MAX_SOURCE_DEPTH) throw new Error(`${path.slice(ROOT.length + 1)} is more than ${MAX_SOURCE_DEPTH} levels deep: bin/omni would not notice it change (scripts/dist-inputs.sh); move it up or add a level there`);
      if (d.isDirectory()) walk(path, depth + 1);
    }
  };
  for (const top of ['cli', 'node', 'protocol']) walk(join(ROOT, top), 1);
}

async function bundle() {
  const startedMs = Date.now();
  // the build's start as the file system dates files (its clock and granularity), before any input is read
  const stampNew = join(DIST, `.stamp-${process.pid}`);
  writeFileSync(stampNew, `built from the sources as of ${new Date(startedMs).toISOString()}\n`);
  const startedFsMs = statSync(stampNew).mtimeMs;
  const tmp = join(DIST, `.tmp-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    requireShallowSources();
    const result = await build(esbuildOptions(ENTRIES, tmp));
    for (const [from, to] of COPIES) copyFileSync(join(ROOT, from), join(tmp, to));
    const indexes = [];
    for (const name of INDEXED_MAPS) indexes.push(await writeSourceMapIndex(join(tmp, name)));
    const launchers = ['omni', 'omnid'].map((name) => {
      writeFileSync(join(tmp, `${name}.cjs`), launcherSource(`${name}.bundle.cjs`, name === 'omni' ? OMNI_ROUTES : undefined));
      return `${name}.cjs`;
    });
    // maps and copies first, then the bundles, the launchers last: a new bundle appears only once all it needs is there
    const outputs = Object.keys(result.metafile.outputs).map((p) => p.slice(p.lastIndexOf('/') + 1));
    const order = [...outputs.filter((f) => !f.endsWith('.cjs')), ...indexes, ...COPIES.map(([, to]) => to), ...outputs.filter((f) => f.endsWith('.cjs')), ...launchers];
    for (const f of order) renameSync(join(tmp, f), join(DIST, f));
    // caches of the bundles just replaced: never used again (named by their contents), so removing
    // them is best effort (a directory an omnid run as root made, a daemon writing its cache now)
    try {
      rmSync(join(DIST, CODE_CACHE_DIR), { recursive: true, force: true });
    } catch {
      // left for the next build
    }
    const stampDate = (startedFsMs - STAMP_MARGIN_MS) / 1000;
    utimesSync(stampNew, stampDate, stampDate);
    renameSync(stampNew, STAMP);
    return { ms: Date.now() - startedMs, sizes: Object.fromEntries(Object.entries(result.metafile.outputs).map(([p, o]) => [p.slice(p.lastIndexOf('/') + 1), o.bytes])) };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
    rmSync(stampNew, { force: true });
  }
}

async function main(args) {
  let values;
  try {
    ({ values } = parseArgs({ args, options: { 'if-stale': { type: 'boolean' }, check: { type: 'boolean' }, quiet: { type: 'boolean' } } }));
  } catch (e) {
    process.stderr.write(`${e.message}\nusage: node scripts/build.mjs [--if-stale] [--quiet] | --check\n`);
    return 2;
  }
  if (values.check) {
    const why = distStale();
    if (why) process.stdout.write(`dist/ is out of date: ${why}\n`);
    return why ? 1 : 0;
  }
  mkdirSync(DIST, { recursive: true });
  lock();
  try {
    if (values['if-stale'] && !distStale()) return 0;
    // what a build that died left (we hold the lock: no other build runs)
    for (const f of readdirSync(DIST)) if (f.startsWith('.tmp-') || f.startsWith('.stamp-')) rmSync(join(DIST, f), { recursive: true, force: true });
    const { ms, sizes } = await bundle();
    if (!values.quiet) {
      const list = Object.entries(sizes).filter(([f]) => f.endsWith('.cjs')).map(([f, b]) => `${f} ${(b / 1024 / 1024).toFixed(1)} MiB`);
      process.stdout.write(`built dist/ in ${ms} ms: ${list.join(', ')}\n`);
    }
    return 0;
  } finally {
    unlock();
  }
}

if (process.argv[1] && pathToFileURL(process.argv[1]).href === import.meta.url) process.exitCode = await main(process.argv.slice(2));
