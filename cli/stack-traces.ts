// Stack traces of the prebuilt bundles (dist/omni.bundle.cjs, dist/omnid.bundle.cjs: scripts/build.mjs) name
// the TypeScript sources: a frame in the bundle is mapped through its source map, which is read
// when a stack trace is first formatted, and looked up without decoding it whole
// (cli/source-map-index.ts: node:module's SourceMap held 55-65 MiB of omnid's heap and cost 0.4-0.6 s
// of CPU from the first socket error on, which Node formats a stack trace for). `node --enable-source-maps` reads it at start-up instead,
// which costs every start ~50 ms of CPU (the 2.5 MB map, and a scan of the 4 MB bundle).
// omnid's bundle has its index made at build time (`<bundle>.map.idx`, scripts/build.mjs): the
// first stack trace then costs ~10–25 ms instead of 100–170 ms; without it (another bundle, an index
// that does not fit the map) the map is parsed and indexed here, as before.
// Run from the sources (tsx), from a bundle without its map, or under --enable-source-maps, this
// does nothing.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { indexFromFile, SourceMapIndex } from './source-map-index.js';

/** `moduleUrl`: the caller's import.meta.url (in a bundle, the bundle's own URL). */
export function mapBundleStackTraces(moduleUrl: string): void {
  if (!moduleUrl.startsWith('file:') || !moduleUrl.endsWith('.cjs') || process.sourceMapsEnabled) return;
  const bundle = fileURLToPath(moduleUrl);
  const dir = dirname(bundle);
  let map: SourceMapIndex | null | undefined;
  const loadMap = (): SourceMapIndex | null => {
    try {
      const raw = readFileSync(`${bundle}.map`);
      let prebuilt: SourceMapIndex | undefined;
      try {
        prebuilt = indexFromFile(raw, readFileSync(`${bundle}.map.idx`));
      } catch {
        // no index file: made here
      }
      if (prebuilt) return (map = prebuilt);
      const json = JSON.parse(raw.toString('utf8')) as { mappings?: unknown; sources?: unknown };
      if (typeof json.mappings !== 'string' || !Array.isArray(json.sources)) throw new Error('not a source map');
      map = new SourceMapIndex(json.mappings, json.sources.map(String));
    } catch {
      map = null; // no map: the bundle's own positions
    }
    return map;
  };
  // Node's own formatting, then each bundle position replaced by its source position, from the
  // last frame backwards (the error's message never gets rewritten)
  const format = Error.prepareStackTrace;
  Error.prepareStackTrace = (err: Error, frames: NodeJS.CallSite[]): unknown => {
    const formatted: unknown = format ? format(err, frames) : `${String(err)}${frames.map((f) => `\n    at ${String(f)}`).join('')}`;
    if (typeof formatted !== 'string' || !frames.some((f) => f.getFileName() === bundle)) return formatted;
    const m = map === undefined ? loadMap() : map;
    if (!m) return formatted;
    let text = formatted;
    let end = text.length;
    for (let i = frames.length - 1; i >= 0; i--) {
      const f = frames[i];
      const line = f.getLineNumber();
      const col = f.getColumnNumber();
      if (f.getFileName() !== bundle || line === null || col === null) continue;
      const from = `${bundle}:${line}:${col}`;
      const at = text.lastIndexOf(from, end);
      if (at < 0) continue;
      end = at;
      const e = m.lookup(line - 1, col - 1);
      if (!e) continue;
      text = `${text.slice(0, at)}${resolve(dir, e.source)}:${e.line + 1}:${e.column + 1}${text.slice(at + from.length)}`;
    }
    return text;
  };
}
