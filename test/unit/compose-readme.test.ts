// The README's Compose key table lists every key of protocol/compose/keys.ts with its rule, so
// the documented support cannot drift from what the parser does.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { keyTable } from '../../protocol/compose/keys.js';

describe('README: Compose stacks key table', () => {
  it('names every key with its rule (supported, warning, error)', () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const start = readme.indexOf('## Compose stacks');
    const section = readme.slice(start, readme.indexOf('\n## ', start + 10));
    const rows = section.split('\n').filter((l) => l.startsWith('| '));
    for (const { section: where, key, rule } of keyTable()) {
      const row = rows.find((r) => r.startsWith(`| ${where} |`) && r.includes(`\`${key}\``));
      expect(row, `${where}.${key}`).toBeDefined();
      const kind = rule.kind === 'supported' ? '| supported |' : rule.kind === 'warn' ? `| warning: ${rule.why} |` : `| **error**: ${rule.why} |`;
      expect(row!.endsWith(kind), `${where}.${key}: ${row}`).toBe(true);
    }
  });
});
