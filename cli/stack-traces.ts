// Stack traces of the prebuilt bundles (dist/omni.bundle.cjs, dist/omnid.bundle.cjs: scripts/build.mjs) name
// the TypeScript sources: a frame in the bundle is mapped through its source map, which is read
// when a stack trace is first formatted. `node --enable-source-maps` reads it at start-up instead,
// which costs every start ~50 ms of CPU (the 2.5 MB map, and a scan of the 4 MB bundle).
// Run from the sources (tsx), from a bundle without its map, or under --enable-source-maps, this
// does nothing.
import { readFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** `moduleUrl`: the caller's import.meta.url (in a bundle, the bundle's own URL). */
export function mapBundleStackTraces(moduleUrl: string): void {
  if (!moduleUrl.startsWith('file:') || !moduleUrl.endsWith('.cjs') || process.sourceMapsEnabled) return;
  const bundle = fileURLToPath(moduleUrl);
  const dir = dirname(bundle);
  let map: SourceMap | null | undefined;
  const loadMap = (): SourceMap | null => {
    try {
      map = new SourceMap(JSON.parse(readFileSync(`${bundle}.map`, 'utf8')));
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
      const e = m.findEntry(line - 1, col - 1);
      if (!('originalSource' in e)) continue;
      text = `${text.slice(0, at)}${resolve(dir, e.originalSource)}:${e.originalLine + 1}:${e.originalColumn + 1}${text.slice(at + from.length)}`;
    }
    return text;
  };
}
