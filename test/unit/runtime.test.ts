import { expect, it } from 'vitest';

it('runs on Node >= 22 (the node@24 devDependency), as libp2p requires', () => {
  const major = Number(process.versions.node.split('.')[0]);
  expect(major).toBeGreaterThanOrEqual(22);
});
