// Compose variable interpolation (pure): $VAR, ${VAR}, ${VAR:-default}, ${VAR-default},
// ${VAR:?error}, ${VAR?error}, ${VAR:+replacement}, ${VAR+replacement}; $$ is a literal $.
// Defaults may themselves contain ${...}. Applied to every string value of the parsed file
// (never to keys), as docker compose does.

export class InterpolationError extends Error {}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*/;

/**
 * Interpolates one string. `missing` is told each variable that was unset and had no default
 * (compose substitutes an empty string and warns).
 */
export function interpolate(s: string, env: Readonly<Record<string, string>>, missing: (name: string) => void, where = ''): string {
  let out = '';
  let i = 0;
  while (i < s.length) {
    const c = s[i];
    if (c !== '$') {
      out += c;
      i++;
      continue;
    }
    const next = s[i + 1];
    if (next === '$') {
      out += '$';
      i += 2;
      continue;
    }
    if (next === '{') {
      const end = matchingBrace(s, i + 1);
      if (end < 0) throw new InterpolationError(`${where ? `${where}: ` : ''}unclosed \${ in "${s.slice(0, 80)}"`);
      out += expand(s.slice(i + 2, end), env, missing, where);
      i = end + 1;
      continue;
    }
    const m = NAME.exec(s.slice(i + 1));
    if (m) {
      const v = env[m[0]];
      if (v === undefined) missing(m[0]);
      out += v ?? '';
      i += 1 + m[0].length;
      continue;
    }
    out += '$';
    i++;
  }
  return out;
}

/** Index of the } closing the { at `open` (nested ${...} allowed), or -1. */
function matchingBrace(s: string, open: number): number {
  let depth = 0;
  for (let j = open; j < s.length; j++) {
    if (s[j] === '{') depth++;
    else if (s[j] === '}' && --depth === 0) return j;
  }
  return -1;
}

function expand(body: string, env: Readonly<Record<string, string>>, missing: (name: string) => void, where: string): string {
  const m = NAME.exec(body);
  const at = where ? `${where}: ` : '';
  if (!m) throw new InterpolationError(`${at}invalid variable reference \${${body.slice(0, 60)}}`);
  const name = m[0];
  const rest = body.slice(name.length);
  const v = env[name];
  if (rest === '') {
    if (v === undefined) missing(name);
    return v ?? '';
  }
  const op = /^(:-|-|:\?|\?|:\+|\+)/.exec(rest);
  if (!op) throw new InterpolationError(`${at}invalid variable reference \${${body.slice(0, 60)}}`);
  const arg = () => interpolate(rest.slice(op[0].length), env, missing, where);
  const unsetOrEmpty = v === undefined || v === '';
  switch (op[0]) {
    case ':-':
      return unsetOrEmpty ? arg() : v;
    case '-':
      return v === undefined ? arg() : v;
    case ':?':
      if (unsetOrEmpty) throw new InterpolationError(`${at}variable ${name} is required: ${arg() || 'it is unset or empty'}`);
      return v;
    case '?':
      if (v === undefined) throw new InterpolationError(`${at}variable ${name} is required: ${arg() || 'it is unset'}`);
      return v;
    case ':+':
      return unsetOrEmpty ? '' : arg();
    default:
      return v === undefined ? '' : arg();
  }
}

/** Interpolates every string value of a parsed YAML tree (keys untouched); `path` names where. */
export function interpolateTree(v: unknown, env: Readonly<Record<string, string>>, missing: (name: string, path: string) => void, path = ''): unknown {
  if (typeof v === 'string') return interpolate(v, env, (n) => missing(n, path), path);
  if (Array.isArray(v)) return v.map((x, i) => interpolateTree(x, env, missing, `${path}[${i}]`));
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = k.startsWith('x-') ? x : interpolateTree(x, env, missing, path ? `${path}.${k}` : k);
    return out;
  }
  return v;
}

/**
 * A .env / env_file text: KEY=VALUE lines, # comments, blank lines, optional `export `, values
 * in single quotes (literal) or double quotes (\n, \t, \\, \" escapes); unquoted values end
 * before ` #`. A KEY alone (no =) is skipped, as compose does when it is unset.
 */
export function parseEnvText(text: string, file: string): Record<string, string> {
  const env: Record<string, string> = {};
  text.split(/\r?\n/).forEach((raw, i) => {
    let line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    if (line.startsWith('export ')) line = line.slice(7).trim();
    const eq = line.indexOf('=');
    if (eq === 0) throw new InterpolationError(`${file}:${i + 1}: expected KEY=VALUE`);
    if (eq < 0) {
      if (/^[A-Za-z_][A-Za-z0-9_.-]*$/.test(line)) return;
      throw new InterpolationError(`${file}:${i + 1}: expected KEY=VALUE`);
    }
    const key = line.slice(0, eq).trim();
    if (!/^[A-Za-z_][A-Za-z0-9_.-]*$/.test(key)) throw new InterpolationError(`${file}:${i + 1}: invalid variable name ${JSON.stringify(key.slice(0, 60))}`);
    let value = line.slice(eq + 1).trim();
    if (value.startsWith("'") && value.lastIndexOf("'") > 0) value = value.slice(1, value.lastIndexOf("'"));
    else if (value.startsWith('"') && value.lastIndexOf('"') > 0) {
      value = value.slice(1, value.lastIndexOf('"')).replace(/\\([nt"\\])/g, (_m, c: string) => ({ n: '\n', t: '\t', '"': '"', '\\': '\\' })[c]!);
    } else {
      const hash = value.search(/\s#/);
      if (hash >= 0) value = value.slice(0, hash).trim();
    }
    env[key] = value;
  });
  return env;
}
