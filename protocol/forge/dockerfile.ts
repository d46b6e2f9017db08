// The images a Dockerfile builds FROM (pure): a node has no internet, so before the engine builds,
// each one must be in its engine or in the cluster's registry (node/forge/docker-runner.ts pulls it
// from the registry and tags it under the name the Dockerfile uses). Stage names (`FROM x AS
// build` … `FROM build`) and `scratch` are not images. A name made of build arguments (`FROM
// $BASE`, `${BASE}`, `${BASE:-omni/node:24}`, `${TAG:+...}`) is resolved as the engine does: from
// the ARG lines before the first FROM (their defaults, which may use earlier ones) and the
// build's --build-arg values for those names; one that stays unknown (an ARG without default and
// no value given) is left to the engine. Line continuations and comments are handled; parser
// directives and heredocs are not needed for FROM lines.

export interface FromImages {
  /** Images in the order of their first use, without duplicates. */
  images: string[];
  /** FROM arguments whose build arguments have no value here: left to the engine. */
  variable: string[];
}

const MAX_FROM_LINES = 128;

/** Joins continued lines (a trailing backslash) and drops comment lines. */
function instructions(text: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trimEnd();
    if (/^\s*#/.test(line) && cur === '') continue;
    if (line.endsWith('\\')) {
      cur += line.slice(0, -1) + ' ';
      continue;
    }
    out.push(cur + line);
    cur = '';
  }
  if (cur) out.push(cur);
  return out;
}

const ARG_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Splits `ARG A=1 B="two words" C` into [name, value | undefined] pairs (quotes removed). */
function argDeclarations(rest: string): [string, string | undefined][] {
  const out: [string, string | undefined][] = [];
  const re = /([A-Za-z_][A-Za-z0-9_]*)(?:=("(?:[^"\\]|\\.)*"|'[^']*'|\S*))?/g;
  for (const m of rest.matchAll(re)) {
    let v = m[2];
    if (v !== undefined && ((v.startsWith('"') && v.endsWith('"') && v.length >= 2) || (v.startsWith("'") && v.endsWith("'") && v.length >= 2))) v = v.slice(1, -1);
    out.push([m[1], v]);
  }
  return out;
}

/** Replaces $NAME, ${NAME}, ${NAME:-word}, ${NAME:+word}; undefined when a name has no value and no fallback. */
export function expandArgs(word: string, values: Map<string, string | undefined>): string | undefined {
  let unknown = false;
  const out = word.replace(/\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))/g, (_all, braced: string | undefined, op: string | undefined, alt: string | undefined, bare: string | undefined) => {
    const name = (braced ?? bare)!;
    const v = values.get(name);
    if (op === ':-') return v !== undefined && v !== '' ? v : (alt ?? '');
    if (op === ':+') return v !== undefined && v !== '' ? (alt ?? '') : '';
    if (v === undefined) unknown = true;
    return v ?? '';
  });
  return unknown ? undefined : out;
}

export function dockerfileFromImages(text: string, buildArgs: Record<string, string> = {}): FromImages {
  const stages = new Set<string>();
  const images: string[] = [];
  const variable: string[] = [];
  /** The global build arguments (ARG before the first FROM) and their values. */
  const args = new Map<string, string | undefined>();
  let n = 0;
  for (const ins of instructions(text)) {
    const arg = n === 0 ? /^\s*ARG\s+(.*)$/i.exec(ins) : null;
    if (arg) {
      for (const [name, def] of argDeclarations(arg[1])) {
        if (!ARG_NAME.test(name)) continue;
        const given = Object.prototype.hasOwnProperty.call(buildArgs, name) ? buildArgs[name] : undefined;
        args.set(name, given ?? (def === undefined ? undefined : expandArgs(def, args)));
      }
      continue;
    }
    const m = /^\s*FROM\s+(.*)$/i.exec(ins);
    if (!m) continue;
    if (++n > MAX_FROM_LINES) break;
    const words = m[1].trim().split(/\s+/).filter((w) => !w.startsWith('--'));
    const written = words[0];
    if (!written) continue;
    const from = written.includes('$') ? expandArgs(written, args) : written;
    if (from === undefined || from === '') {
      if (!variable.includes(written)) variable.push(written);
      if (words.length >= 3 && words[1].toLowerCase() === 'as') stages.add(words[2].toLowerCase());
      continue;
    }
    // An earlier stage's name is checked before this line's own name is known.
    const isStage = stages.has(from.toLowerCase());
    if (words.length >= 3 && words[1].toLowerCase() === 'as') stages.add(words[2].toLowerCase());
    if (isStage || from.toLowerCase() === 'scratch') continue;
    if (!images.includes(from)) images.push(from);
  }
  return { images, variable };
}
