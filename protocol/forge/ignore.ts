// `.gitignore` / `.dockerignore` patterns (pure): which paths of a source tree stay out of the
// build context. The common subset of both: `#` comments, blank lines, `!` negation (the last
// matching pattern wins), a trailing `/` for directories only, a leading or inner `/` anchoring
// the pattern to the root (a pattern without one matches at any depth, as git does; .dockerignore
// patterns are always anchored), `*`, `?`, `[...]` and `**`.
export interface IgnoreRule {
  negate: boolean;
  dirOnly: boolean;
  re: RegExp;
  source: string;
}

export const MAX_IGNORE_RULES = 10_000;

function globToRegex(glob: string): string {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*') {
      if (glob[i + 1] === '*') {
        // `**/` any number of directories, `/**` everything inside, `**` alone anything
        const after = glob[i + 2];
        i++;
        if (after === '/') {
          i++;
          out += '(?:.*/)?';
        } else out += '.*';
      } else out += '[^/]*';
    } else if (c === '?') out += '[^/]';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 2);
      if (end < 0) out += '\\[';
      else {
        let body = glob.slice(i + 1, end);
        if (body.startsWith('!')) body = '^' + body.slice(1);
        out += '[' + body.replace(/\\/g, '\\\\') + ']';
        i = end;
      }
    } else if (c === '\\' && i + 1 < glob.length) {
      out += glob[++i].replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    } else out += c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  return out;
}

/** Parses ignore-file text; `anchored` treats every pattern as relative to the root (.dockerignore). */
export function parseIgnore(text: string, anchored = false): IgnoreRule[] {
  const rules: IgnoreRule[] = [];
  for (const raw of text.split(/\r?\n/)) {
    let line = raw.replace(/(?<!\\)\s+$/, '');
    if (line === '' || line.startsWith('#')) continue;
    const negate = line.startsWith('!');
    if (negate) line = line.slice(1);
    if (anchored) line = line.replace(/^(\.\/)+/, '');
    const dirOnly = line.endsWith('/');
    if (dirOnly) line = line.replace(/\/+$/, '');
    if (line === '') continue;
    const isAnchored = anchored || line.includes('/');
    line = line.replace(/^\/+/, '');
    const body = globToRegex(line);
    const re = new RegExp(`^${isAnchored ? '' : '(?:.*/)?'}${body}$`);
    rules.push({ negate, dirOnly, re, source: raw });
    if (rules.length > MAX_IGNORE_RULES) throw new Error(`more than ${MAX_IGNORE_RULES} ignore patterns`);
  }
  return rules;
}

function verdict(rules: readonly IgnoreRule[], path: string, isDir: boolean): boolean {
  let ignored = false;
  for (const r of rules) {
    if (r.negate !== ignored) continue; // only a rule that could change the verdict is tested
    if (r.dirOnly && !isDir) continue;
    if (r.re.test(path)) ignored = !r.negate;
  }
  return ignored;
}

/**
 * Whether `path` (relative, `/`-separated) is ignored: it matches (the last matching pattern
 * wins), or one of its directories is ignored (as in git, a file inside an ignored directory
 * cannot be re-included). `isDir` tells whether the path itself is a directory.
 */
export function isIgnored(rules: readonly IgnoreRule[], path: string, isDir: boolean): boolean {
  if (rules.length === 0) return false;
  const parts = path.split('/');
  for (let i = 1; i < parts.length; i++) if (verdict(rules, parts.slice(0, i).join('/'), true)) return true;
  return verdict(rules, path, isDir);
}
