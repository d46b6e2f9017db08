// Diagnostic (not part of npm test): the CPU phases of a one-file `omni sync` on the client, each
// timed once in a fresh process (as the CLI runs them: cold), over a directory already synced.
// Usage: node --import tsx test/bench/sync-phases-diag.ts DIR APP
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { statTree, scanTree, withPacks } from '../../node/sync/engine.js';
import { decodeSyncState, encodeSyncState } from '../../protocol/sync/state-file.js';
import { planSync } from '../../protocol/sync/plan.js';
import { encodeManifest, pageTree } from '../../protocol/sync/tree.js';
import { createHash } from 'node:crypto';

const [dir, app] = process.argv.slice(2);
const t: Record<string, number> = {};
let last = performance.now();
const lap = (k: string) => {
  const now = performance.now();
  t[k] = Math.round((now - last) * 10) / 10;
  last = now;
};
const stated = await statTree(dir, true);
lap('stat');
const text = readFileSync(join(dir, '.omni/sync-state.json'), 'utf8');
lap('read');
const state = decodeSyncState(text, app);
lap('decode');
const { tree: local } = await scanTree(dir, new Map(state.local.files.map((f) => [f.path, f])), true, stated);
lap('scan');
const plan = planSync({ local, remote: state.base, base: state.base, direction: 'both' });
lap('plan');
const packs = new Map(state.base.files.filter((f) => f.pack).map((f) => [f.sha256, f.pack!]));
const tree = withPacks(plan.remote, packs);
lap('withPacks');
const pages = pageTree(tree);
lap('pageTree');
for (const p of pages) createHash('sha256').update(encodeManifest(p)).digest('hex');
lap('encodePages');
const out = encodeSyncState({ app, base: state.base, local: state.local, ...(state.remoteIndex ? { remoteIndex: state.remoteIndex } : {}) });
lap('encodeState');
writeFileSync('/tmp/ph/state.json', out);
lap('writeState');
console.log(JSON.stringify(t));
