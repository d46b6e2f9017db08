// node/ is built in rooms (raft/, p2p/, api/, apps/, cluster/) with daemon.ts only wiring them:
// no module may import daemon.ts, and the imports among node/, protocol/ and sim/ form no cycle
// (type-only imports included: a component gets narrow interfaces, not the daemon object).
import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const ROOMS = ['node', 'protocol', 'sim'];
const IMPORT = /(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+['"](\.[^'"]+)['"]/g;

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return sources(p);
    return p.endsWith('.ts') ? [p] : [];
  });
}

function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const room of ROOMS) {
    for (const file of sources(join(ROOT, room))) {
      const deps: string[] = [];
      for (const m of readFileSync(file, 'utf8').matchAll(IMPORT)) {
        const target = resolve(dirname(file), m[1]).replace(/\.js$/, '.ts');
        deps.push(relative(ROOT, target));
      }
      graph.set(relative(ROOT, file), deps);
    }
  }
  return graph;
}

/** One cycle per strongly connected component with more than one module (or a self-import). */
function cycles(graph: Map<string, string[]>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (n: string): void => {
    state.set(n, 'open');
    stack.push(n);
    for (const m of graph.get(n) ?? []) {
      if (!graph.has(m)) continue;
      if (state.get(m) === 'open') found.push([...stack.slice(stack.indexOf(m)), m]);
      else if (!state.has(m)) visit(m);
    }
    stack.pop();
    state.set(n, 'done');
  };
  for (const n of graph.keys()) if (!state.has(n)) visit(n);
  return found;
}

describe('module layout', () => {
  const graph = importGraph();

  it('finds the modules and their imports (the scan itself works)', () => {
    expect(graph.get('node/daemon.ts')).toContain('node/raft/raft-node.ts');
    expect(cycles(new Map([['a', ['b']], ['b', ['a']]]))).toEqual([['a', 'b', 'a']]);
  });

  it('no module imports node/daemon.ts', () => {
    const importers = [...graph].filter(([, deps]) => deps.includes('node/daemon.ts')).map(([f]) => f);
    expect(importers).toEqual([]);
  });

  it('node/, protocol/ and sim/ have no import cycle', () => {
    expect(cycles(graph).map((c) => c.join(' → '))).toEqual([]);
  });

  it('protocol/ never imports node/ (the pure core does no I/O)', () => {
    const bad = [...graph].filter(([f, deps]) => f.startsWith('protocol/') && deps.some((d) => d.startsWith('node/'))).map(([f]) => f);
    expect(bad).toEqual([]);
  });
});
