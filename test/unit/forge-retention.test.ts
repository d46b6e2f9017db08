import { describe, expect, it } from 'vitest';
import { buildsToRemove, DEFAULT_BUILD_RETENTION } from '../../protocol/forge/retention.js';

const H = 3600_000;
describe('forge: retention of finished build apps', () => {
  it('keeps the newest keepLast finished builds of each repository, removes older ones', () => {
    const now = 10 * H;
    const fin = [1, 2, 3, 4].map((i) => ({ name: `build-a${i}`, repo: 'team/a', finishedAtMs: now - i * 60_000 }));
    fin.push({ name: 'build-b1', repo: 'team/b', finishedAtMs: now - 5 * 60_000 });
    expect(buildsToRemove(fin, now, { keepLast: 2, ttlMs: 24 * H })).toEqual(['build-a3', 'build-a4']);
    expect(buildsToRemove(fin, now, { keepLast: 0, ttlMs: 24 * H })).toEqual(['build-a1', 'build-a2', 'build-a3', 'build-a4', 'build-b1']);
  });

  it('removes any finished build past the TTL, even the newest of its repository', () => {
    const now = 100 * H;
    const fin = [
      { name: 'build-old', repo: 'team/a', finishedAtMs: now - 25 * H },
      { name: 'build-new', repo: 'team/b', finishedAtMs: now - H },
    ];
    expect(buildsToRemove(fin, now, DEFAULT_BUILD_RETENTION)).toEqual(['build-old']);
    expect(buildsToRemove([], now)).toEqual([]);
  });
});
