// The project documents itself: README.md and docs/ link only to files inside the repository,
// and every relative link resolves (a user's clone has nothing beside it).
import { describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const docs = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
const LINK = /\]\(([^)\s]+)\)/g;
/** Paths mentioned in backticks that point out of the repository (`../shared/…`). */
const OUTSIDE_MENTION = /`\.\.\/[^`]*`/g;

function relativeLinks(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  return [...text.matchAll(LINK)].map((m) => m[1]).filter((l) => !/^[a-z][a-z0-9+.-]*:/i.test(l) && !l.startsWith('#'));
}

describe('documentation links', () => {
  it('finds links to check (the scan works)', () => {
    expect(relativeLinks('README.md')).toContain('docs/architecture.md');
  });

  for (const file of docs) {
    it(`${file}: every relative link stays inside the repository and exists`, () => {
      for (const link of relativeLinks(file)) {
        const target = resolve(ROOT, dirname(file), link.split('#')[0]);
        expect(relative(ROOT, target).startsWith('..'), `${link} leaves the repository`).toBe(false);
        expect(existsSync(target), `${link} does not exist`).toBe(true);
      }
      expect(readFileSync(join(ROOT, file), 'utf8').match(OUTSIDE_MENTION) ?? []).toEqual([]);
    });
  }
});
