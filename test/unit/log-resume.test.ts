// omni watch's resume point after a lost log stream (cli/omni/log-resume.ts): nothing missed,
// nothing printed twice, with several tasks and several lines in one millisecond.
import { describe, expect, it } from 'vitest';
import { LogResume } from '../../cli/omni/log-resume.js';

type Line = [task: string, at: number, text: string];

/** Lines a node would send for a request from `since` (every line at or after it, in order). */
const from = (all: Line[], since: number | undefined) => (since === undefined ? all : all.filter(([, at]) => at >= since));

describe('LogResume', () => {
  it('a stream lost in the middle, resumed: every line printed once, in order per task', () => {
    const all: Line[] = [
      ['a', 100, 'a1'], ['b', 100, 'b1'], ['a', 105, 'a2'], ['a', 105, 'a3'], ['b', 107, 'b2'],
      ['a', 105, 'a4'], ['b', 110, 'b3'], ['a', 111, 'a5'], ['b', 111, 'b4'], ['a', 120, 'a6'],
    ];
    for (let cut = 0; cut <= all.length; cut++) {
      const r = new LogResume();
      const out: string[] = [];
      r.startStream();
      for (const [task, at, text] of all.slice(0, cut)) if (r.accept(task, at)) out.push(text);
      // lost after `cut` lines: the new stream sends everything from the resume point again
      r.startStream();
      for (const [task, at, text] of from(all, r.resumeAt())) if (r.accept(task, at)) out.push(text);
      expect(out.filter((t) => t.startsWith('a'))).toEqual(['a1', 'a2', 'a3', 'a4', 'a5', 'a6']);
      expect(out.filter((t) => t.startsWith('b'))).toEqual(['b1', 'b2', 'b3', 'b4']);
    }
  });

  it('resumes from the earliest task; nothing printed yet: no resume point; several losses in a row', () => {
    const r = new LogResume();
    expect(r.resumeAt()).toBeUndefined();
    r.startStream();
    expect(r.accept('a', 50)).toBe(true);
    expect(r.accept('b', 40)).toBe(true);
    expect(r.resumeAt()).toBe(40);
    r.startStream();
    expect(r.accept('b', 40)).toBe(false); // sent again
    expect(r.accept('a', 45)).toBe(false); // before a's last line
    expect(r.accept('a', 50)).toBe(false);
    expect(r.accept('a', 50)).toBe(true); // a second line at 50: new
    r.startStream();
    expect(r.accept('a', 50)).toBe(false);
    expect(r.accept('a', 50)).toBe(false);
    expect(r.accept('c', 41)).toBe(true); // a task not seen before
    // b was replaced: it no longer holds the resume point back
    expect(r.resumeAt(new Set(['a', 'c']))).toBe(41);
    expect(r.resumeAt(new Set(['a']))).toBe(50);
    expect(r.resumeAt(new Set(['zzz']))).toBeUndefined();
  });
});

describe('stamped log lines (drivers)', () => {
  it('stampLine / unstampLine round-trip; a line without a stamp is all text', async () => {
    const { stampLine, unstampLine } = await import('../../node/apps/drivers/types.js');
    expect(unstampLine(stampLine(1733400000123, 'hello\tworld'))).toEqual({ atMs: 1733400000123, text: 'hello\tworld' });
    expect(unstampLine(stampLine(undefined, 'x'))).toEqual({ text: 'x' });
    expect(unstampLine('no stamp')).toEqual({ text: 'no stamp' });
    // lines of a node that does not stamp: a tab or a number first is text, not a time
    expect(unstampLine('\tat com.example.Main(Main.java:3)')).toEqual({ text: '\tat com.example.Main(Main.java:3)' });
    expect(unstampLine('42\tfoo')).toEqual({ text: '42\tfoo' });
  });

  it('the process driver stamps each line with the time it was written when asked', async () => {
    const { mkdtemp, rm } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { ProcessDriver } = await import('../../node/apps/drivers/process.js');
    const { unstampLine } = await import('../../node/apps/drivers/types.js');
    const dir = await mkdtemp(join(tmpdir(), 'omni-stamped-'));
    const drv = new ProcessDriver(dir);
    try {
      const before = Date.now();
      await drv.start({ taskId: 'stamped-1', app: 'a', version: 1, command: ['/bin/sh', '-c', 'echo one; echo two'], env: {}, ports: [], volumes: [], cpu: 0, memoryBytes: 0, labels: {} });
      for (let i = 0; i < 100 && (await drv.inspect('stamped-1'))?.state !== 'exited'; i++) await new Promise((r) => setTimeout(r, 50));
      const lines: string[] = [];
      for await (const l of drv.logs('stamped-1', { follow: false, stamped: true })) lines.push(l);
      const parsed = lines.map(unstampLine);
      expect(parsed.map((p) => p.text)).toEqual(['one', 'two']);
      for (const p of parsed) expect(p.atMs).toBeGreaterThanOrEqual(before - 1000);
      const plain: string[] = [];
      for await (const l of drv.logs('stamped-1', { follow: false })) plain.push(l);
      expect(plain).toEqual(['one', 'two']);
    } finally {
      await drv.destroy('stamped-1');
      await rm(dir, { recursive: true, force: true });
    }
  });
});
