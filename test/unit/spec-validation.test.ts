import { describe, expect, it } from 'vitest';
import { validateAppSpec, specDigest, parseMemoryMB, parseCpu } from '../../protocol/apps/spec.js';

const fields = (input: unknown) => {
  const r = validateAppSpec(input);
  return r.ok ? [] : r.errors.map((e) => e.field);
};

describe('app spec validation', () => {
  it('applies defaults', () => {
    const r = validateAppSpec({ name: 'web', image: 'nginx:1' });
    expect(r.ok && r.spec).toMatchObject({ replicas: 1, driver: 'docker', resources: { cpu: 0.1, memoryMB: 64, gpus: 0 }, restart: { policy: 'always' }, update: { parallel: 1, autoRollback: true }, placement: 'binpack' });
    expect(validateAppSpec({ name: 'job', command: ['echo', 'hi'] }).ok && (validateAppSpec({ name: 'job', command: ['echo', 'hi'] }) as { spec: { driver: string } }).spec.driver).toBe('process');
  });

  it('names the offending field', () => {
    expect(fields({ name: 'Web', image: 'x' })).toEqual(['name']);
    expect(fields({ name: 'web' })).toEqual(['image']);
    expect(fields({ name: 'web', image: 'x', command: ['y'] })).toEqual(['command']);
    expect(fields({ name: 'web', image: 'x', ports: [{ name: 'http', port: 0 }] })).toEqual(['ports[0].port']);
    expect(fields({ name: 'web', image: 'x', resources: { memory: 'lots' } })).toEqual(['resources.memory']);
    expect(fields({ name: 'web', image: 'x', constraints: ['zone=a'] })).toEqual(['constraints[0]']);
    expect(fields({ name: 'web', image: 'x', healthCheck: { type: 'http', port: 'nope' } })).toEqual(['healthCheck.port']);
    expect(fields({ name: 'web', image: 'x', env: { '1BAD': 'v' } })).toEqual(['env.1BAD']);
    expect(fields({ name: 'web', image: 'x', restart: { policy: 'sometimes' } })).toEqual(['restart.policy']);
    expect(fields({ name: 'web', image: 'x', volumes: [{ name: 'data', path: 'relative' }] })).toEqual(['volumes[0].path']);
  });

  it('update.minHealthyMs and reschedule: defaults and bounds', () => {
    const r = validateAppSpec({ name: 'web', image: 'x' });
    expect(r.ok && r.spec).toMatchObject({ update: { minHealthyMs: 5000, healthyTimeoutMs: 30_000 }, reschedule: { attempts: 5, delayMs: 1000, maxDelayMs: 60_000 } });
    const short = validateAppSpec({ name: 'web', image: 'x', update: { healthyTimeoutMs: 4000 } });
    expect(short.ok && short.spec.update.minHealthyMs).toBe(2000); // the default stays below the deadline
    expect(fields({ name: 'web', image: 'x', update: { healthyTimeoutMs: 4000, minHealthyMs: 4000 } })).toEqual(['update.minHealthyMs']);
    expect(fields({ name: 'web', image: 'x', reschedule: { attempts: -1 } })).toEqual(['reschedule.attempts']);
    expect(fields({ name: 'web', image: 'x', reschedule: { delayMs: 5000, maxDelayMs: 1000 } })).toEqual(['reschedule.maxDelayMs']);
    expect(fields({ name: 'web', image: 'x', reschedule: { attempt: 1 } })).toEqual(['reschedule.attempt']);
  });

  it('refuses unknown fields with a suggestion', () => {
    const r = validateAppSpec({ name: 'web', image: 'x', replica: 3 });
    expect(r.ok).toBe(false);
    expect(!r.ok && r.errors[0]).toEqual({ field: 'replica', message: "unknown field 'replica' (did you mean 'replicas'?)" });
  });

  it('never throws on garbage', () => {
    for (const g of [null, 1, 'x', [], { name: {} }, { name: 'a', image: 5, ports: 'x', env: [], resources: 7 }]) expect(validateAppSpec(g).ok).toBe(false);
  });

  it('parses human sizes and CPU', () => {
    expect(parseMemoryMB('512M')).toBe(512);
    expect(parseMemoryMB('1G')).toBe(1024);
    expect(parseMemoryMB('256Mi')).toBe(256);
    expect(parseCpu('500m')).toBe(0.5);
    expect(parseCpu(2)).toBe(2);
  });

  it('digests ignore key order', () => {
    const a = validateAppSpec({ name: 'web', image: 'x', env: { A: '1', B: '2' } });
    const b = validateAppSpec({ env: { B: '2', A: '1' }, image: 'x', name: 'web' });
    expect(a.ok && b.ok && specDigest(a.spec) === specDigest(b.spec)).toBe(true);
  });
});
