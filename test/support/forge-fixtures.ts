// Source trees Forge is tested on: the two example apps users try first (examples/node-api,
// examples/python-api) and the fixtures under test/fixtures/forge/.
import { fileURLToPath } from 'node:url';

const EXAMPLES = new Set(['node-api', 'python-api']);

/** The absolute path of a Forge fixture tree (an example app, or test/fixtures/forge/NAME). */
export function forgeFixture(name: string): string {
  return fileURLToPath(new URL(EXAMPLES.has(name) ? `../../examples/${name}` : `../fixtures/forge/${name}`, import.meta.url));
}
