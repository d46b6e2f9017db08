// The images a Dockerfile builds FROM (pure): a node has no internet, so before the engine builds,
// each one must be in its engine or in the cluster's registry (node/forge/docker-runner.ts pulls it
// from the registry and tags it under the name the Dockerfile uses). Stage names (`FROM x AS
// build` … `FROM build`) and `scratch` are not images; a name made of build arguments (`FROM
// $BASE`) cannot be known before the build and is left to the engine. Line continuations and
// comments are handled; parser directives and heredocs are not needed for FROM lines.

export interface FromImages {
  /** Images in the order of their first use, without duplicates. */
  images: string[];
  /** FROM arguments that name build arguments (`$BASE`, `${BASE}`): resolved by the engine. */
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

export function dockerfileFromImages(text: string): FromImages {
  const stages = new Set<string>();
  const images: string[] = [];
  const variable: string[] = [];
  let n = 0;
  for (const ins of instructions(text)) {
    const m = /^\s*FROM\s+(.*)$/i.exec(ins);
    if (!m) continue;
    if (++n > MAX_FROM_LINES) break;
    const words = m[1].trim().split(/\s+/).filter((w) => !w.startsWith('--'));
    const from = words[0];
    if (!from) continue;
    // An earlier stage's name is checked before this line's own name is known.
    const isStage = stages.has(from.toLowerCase());
    if (words.length >= 3 && words[1].toLowerCase() === 'as') stages.add(words[2].toLowerCase());
    if (isStage || from.toLowerCase() === 'scratch') continue;
    if (from.includes('$')) {
      if (!variable.includes(from)) variable.push(from);
      continue;
    }
    if (!images.includes(from)) images.push(from);
  }
  return { images, variable };
}
