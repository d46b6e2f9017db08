// `.gitignore` / `.dockerignore` patterns (pure): which paths of a source tree stay out of the
// build context. The common subset of both: `#` comments, blank lines, `!` negation (the last
// matching pattern wins), a trailing `/` for directories only, a leading or inner `/` anchoring
// the pattern to the root (a pattern without one matches at any depth, as git does; .dockerignore
// patterns are always anchored), `*`, `?`, `[...]` and `**`. A `.gitignore` in a subdirectory
// gives rules scoped to that directory (`base`): they match paths below it, relative to it, and,
// coming after the rules of the directories above (gitignoreRules orders them so), win over them,
// as in git.
export interface IgnoreRule {
  negate: boolean;
  dirOnly: boolean;
  re: RegExp;
  source: string;
  /** The directory (relative, `/`-separated, no trailing `/`) whose .gitignore gave the rule; '' for the root. */
  base: string;
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

/**
 * Parses ignore-file text; `anchored` treats every pattern as relative to the root (.dockerignore);
 * `base` is the directory of the file (a subdirectory's .gitignore), '' for the root.
 */
export function parseIgnore(text: string, anchored = false, base = ''): IgnoreRule[] {
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
    rules.push({ negate, dirOnly, re, source: raw, base });
    if (rules.length > MAX_IGNORE_RULES) throw new Error(`more than ${MAX_IGNORE_RULES} ignore patterns`);
  }
  return rules;
}

function verdict(rules: readonly IgnoreRule[], path: string, isDir: boolean): boolean {
  let ignored = false;
  for (const r of rules) {
    if (r.negate !== ignored) continue; // only a rule that could change the verdict is tested
    if (r.dirOnly && !isDir) continue;
    if (r.base === '') {
      if (r.re.test(path)) ignored = !r.negate;
    } else if (path.length > r.base.length + 1 && path.startsWith(r.base) && path[r.base.length] === '/') {
      if (r.re.test(path.slice(r.base.length + 1))) ignored = !r.negate;
    }
  }
  return ignored;
}

/**
 * Whether `path` itself matches (the last matching pattern wins), its directories not looked at:
 * for a walk that does not enter ignored directories (it knows every parent is not ignored).
 */
export function matchesIgnore(rules: readonly IgnoreRule[], path: string, isDir: boolean): boolean {
  return rules.length > 0 && verdict(rules, path, isDir);
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

/** Most .gitignore files read from one tree, and most directories looked into for them. */
export const MAX_GITIGNORE_FILES = 1000;
export const MAX_GITIGNORE_DIRS = 100_000;

/**
 * The rules of every .gitignore of a tree in git's precedence: the root's first, then each
 * subdirectory's, parents before children, each scoped to its directory. Pure: `subdirs` lists a
 * directory's subdirectory names (no .git, no symbolic links), `read` gives a directory's
 * .gitignore text or undefined. A directory ignored by the rules above it is not looked into
 * (its .gitignore does not count, as in git). Throws past the limits above.
 */
export function gitignoreRules(subdirs: (dir: string) => string[], read: (dir: string) => string | undefined): IgnoreRule[] {
  const rules: IgnoreRule[] = [];
  const stack: string[] = [''];
  let files = 0;
  let dirs = 0;
  while (stack.length) {
    const d = stack.pop()!;
    if (d !== '' && isIgnored(rules, d, true)) continue;
    if (++dirs > MAX_GITIGNORE_DIRS) throw new Error(`more than ${MAX_GITIGNORE_DIRS} directories`);
    const text = read(d);
    if (text !== undefined) {
      if (++files > MAX_GITIGNORE_FILES) throw new Error(`more than ${MAX_GITIGNORE_FILES} .gitignore files`);
      rules.push(...parseIgnore(text, false, d));
      if (rules.length > MAX_IGNORE_RULES) throw new Error(`more than ${MAX_IGNORE_RULES} ignore patterns`);
    }
    const subs = subdirs(d).filter((n) => n !== '.git').map((n) => (d ? `${d}/${n}` : n)).sort();
    for (let i = subs.length - 1; i >= 0; i--) stack.push(subs[i]);
  }
  return rules;
}
