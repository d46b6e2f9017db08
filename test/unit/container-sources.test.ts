// ContainerSources: which task a container's address belongs to, read from the engine's list
// only when an address is unknown or its cached task is gone, at most once per gap.
import { describe, expect, it } from 'vitest';
import { ContainerSources } from '../../node/net/container-sources.js';

describe('ContainerSources', () => {
  it('reads the list once for known addresses, again for an unknown one, and shares a read among callers', async () => {
    let reads = 0;
    let list = new Map([['172.17.0.2', 'a-t1']]);
    const s = new ContainerSources(() => {
      reads++;
      return Promise.resolve(new Map(list));
    }, Date.now, 5);
    expect(await s.taskOf('172.17.0.2')).toBe('a-t1');
    expect(await s.taskOf('172.17.0.2')).toBe('a-t1');
    expect(reads).toBe(1);
    // a container that started since: found by a new read
    list = new Map([...list, ['172.17.0.3', 'b-t1']]);
    expect(await s.taskOf('172.17.0.3')).toBe('b-t1');
    expect(reads).toBe(2);
    // a stranger: one more read (after the gap), then refused; concurrent askers share the read
    const [x, y] = await Promise.all([s.taskOf('172.17.0.9'), s.taskOf('172.17.0.9')]);
    expect([x, y]).toEqual([undefined, undefined]);
    expect(reads).toBe(3);
  });

  it('reads again when the cached task of an address is gone (the address went to a new container)', async () => {
    let list = new Map([['172.17.0.2', 'old-t1']]);
    const s = new ContainerSources(() => Promise.resolve(new Map(list)), Date.now, 1);
    expect(await s.taskOf('172.17.0.2')).toBe('old-t1');
    list = new Map([['172.17.0.2', 'new-t1']]);
    expect(await s.taskOf('172.17.0.2', (id) => id !== 'old-t1')).toBe('new-t1');
  });

  it('asks again when it joined a read that began before the container existed', async () => {
    let list = new Map<string, string>();
    let release!: () => void;
    let reads = 0;
    const s = new ContainerSources(() => {
      reads++;
      const asOfNow = new Map(list);
      if (reads === 1) return new Promise((r) => (release = () => r(asOfNow)));
      return Promise.resolve(new Map(list));
    }, Date.now, 1);
    const first = s.taskOf('10.0.0.1'); // starts read 1
    await new Promise((r) => setTimeout(r, 5));
    list = new Map([['10.0.0.2', 'c-t1']]); // the container appears while read 1 is under way
    const second = s.taskOf('10.0.0.2');
    release(); // read 1 answers with the list from before
    expect(await first).toBeUndefined();
    expect(await second).toBe('c-t1');
    expect(reads).toBe(2);
  });

  it('a failing engine rejects the lookup (the mesh refuses the connection)', async () => {
    const s = new ContainerSources(() => Promise.reject(new Error('engine down')), Date.now, 1);
    await expect(s.taskOf('10.0.0.1')).rejects.toThrow('engine down');
  });

  it('a list older than its age limit is read again before it answers', async () => {
    let nowMs = 0;
    let reads = 0;
    let list = new Map([['172.17.0.2', 'old-t1']]);
    const s = new ContainerSources(() => {
      reads++;
      return Promise.resolve(new Map(list));
    }, () => nowMs, 0, 5000);
    expect(await s.taskOf('172.17.0.2')).toBe('old-t1');
    nowMs = 4000;
    expect(await s.taskOf('172.17.0.2')).toBe('old-t1');
    expect(reads).toBe(1);
    list = new Map([['172.17.0.2', 'other-t9']]); // the address went to another container
    nowMs = 6000;
    expect(await s.taskOf('172.17.0.2')).toBe('other-t9');
    expect(reads).toBe(2);
  });
});
