// The flags given to omnid init/join are saved in the data dir and reused by omnid start, so a
// restart serves the same API address, TLS mode, labels and timing as before; a flag given to
// start overrides the saved one and is saved in its place; an API port 0 is saved as the port it
// got. (Listen addresses are kept by the daemon itself: a restart listens where it listened before.)
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../../node/files.js';
import { OmniError } from '../../node/errors.js';
import { DAEMON_FLAGS } from './daemon-flags.js';

const FILE = 'omnid-flags.json';
const MAX_FILE_BYTES = 64 * 1024;
/** Flags that are not the node's settings: where its data is, and where it listens (kept by the daemon). */
const NOT_SAVED = new Set(['data', 'listen']);

export type FlagValues = Record<string, unknown>;

export function savedFlagsPath(dataDir: string): string {
  return join(dataDir, FILE);
}

/** The settable daemon flags among `values` (what is saved). */
function settings(values: FlagValues): FlagValues {
  const out: FlagValues = {};
  for (const [k, v] of Object.entries(values)) if (k in DAEMON_FLAGS && !NOT_SAVED.has(k) && v !== undefined) out[k] = v;
  return out;
}

/**
 * Saves the settings given; `apiUrl` is where the API was bound, so a requested port 0 is saved as
 * the port it got: a restart then serves where the CLI's config (written at init) points.
 */
export async function saveFlags(dataDir: string, values: FlagValues, apiUrl?: string): Promise<void> {
  const kept = apiUrl === undefined ? values : keepBoundApiPort(values, apiUrl);
  await writeFileAtomic(savedFlagsPath(dataDir), JSON.stringify({ flags: settings(kept) }, null, 2) + '\n', 0o600);
}

/** `--api HOST:0` becomes `HOST:<the port bound>`; any other value is kept as given. */
export function keepBoundApiPort(values: FlagValues, apiUrl: string): FlagValues {
  const api = values.api;
  if (typeof api !== 'string' || !api.endsWith(':0')) return values;
  let port: string;
  try {
    port = new URL(apiUrl).port;
  } catch {
    return values;
  }
  if (!/^[1-9]\d*$/.test(port)) return values;
  return { ...values, api: `${api.slice(0, -2)}:${port}` };
}

/** The flags saved at init/join (or the last start); {} for a data dir from before they were saved. */
export async function loadFlags(dataDir: string): Promise<FlagValues> {
  let text: string;
  try {
    text = await readFile(savedFlagsPath(dataDir), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw err;
  }
  const bad = (why: string) => new OmniError('BAD_CONFIG', `${savedFlagsPath(dataDir)}: ${why}; fix or remove it (omnid start then uses only the flags given)`);
  if (text.length > MAX_FILE_BYTES) throw bad('too large');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw bad('not JSON');
  }
  const flags = (parsed as { flags?: unknown })?.flags;
  if (typeof flags !== 'object' || flags === null || Array.isArray(flags)) throw bad('no "flags" object');
  const out: FlagValues = {};
  for (const [k, v] of Object.entries(flags)) {
    const spec = DAEMON_FLAGS[k];
    if (!spec || NOT_SAVED.has(k)) continue; // a flag this version does not know: ignored
    const ok = spec.type === 'boolean' ? typeof v === 'boolean' : spec.multiple ? Array.isArray(v) && v.every((x) => typeof x === 'string') : typeof v === 'string';
    if (!ok) throw bad(`--${k} has the wrong type`);
    out[k] = v;
  }
  return out;
}

/** Saved flags overridden by the ones given now (a repeatable flag given now replaces the saved list). */
export function mergeFlags(saved: FlagValues, given: FlagValues): FlagValues {
  const merged: FlagValues = { ...saved };
  for (const [k, v] of Object.entries(given)) if (v !== undefined) merged[k] = v;
  // --tls and --insecure-http exclude each other: the one given now wins over a saved one.
  if (given.tls === true) delete merged['insecure-http'];
  if (given['insecure-http'] === true) delete merged.tls;
  return merged;
}
