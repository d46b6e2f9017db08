// omni stats' sampling on a node (node/apps/task-stats.ts): concurrent, bounded by a timeout,
// never failing as a whole; answers from other nodes are checked.
import { describe, expect, it } from 'vitest';
import { parseSamples, sampleTasks } from '../../node/apps/task-stats.js';
import type { TaskDriver } from '../../node/apps/drivers/types.js';

function driver(stats: (id: string) => Promise<{ cpuPercent: number; memoryBytes: number } | undefined>): TaskDriver {
  return { stats } as unknown as TaskDriver;
}

describe('task stats', () => {
  it('samples each task: a figure, not running, an error, and one that does not answer in time', async () => {
    const out = await sampleTasks(
      [
        { id: 'a', driver: driver(async () => ({ cpuPercent: 12.345, memoryBytes: 1048576.4 })) },
        { id: 'b', driver: driver(async () => undefined) },
        { id: 'c', driver: driver(async () => Promise.reject(new Error('engine gone'))) },
        { id: 'd', driver: driver(() => new Promise(() => undefined)) },
      ],
      200,
    );
    expect(out).toEqual([
      { task: 'a', cpuPercent: 12.3, memoryBytes: 1048576 },
      { task: 'b' },
      { task: 'c', error: 'engine gone' },
      { task: 'd', error: 'no sample within 200 ms' },
    ]);
  });

  it('keeps only well-formed samples from another node', () => {
    expect(() => parseSamples({ tasks: [] })).toThrow(/expected a list/);
    expect(
      parseSamples([{ task: 'a', cpuPercent: 1.5, memoryBytes: 10 }, { task: 'b', cpuPercent: -1, memoryBytes: 'x', error: 'e' }, { nope: 1 }, null, 'x']),
    ).toEqual([{ task: 'a', cpuPercent: 1.5, memoryBytes: 10 }, { task: 'b', error: 'e' }]);
  });
});
