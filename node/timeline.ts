// Diagnostics: points on the write path, timed on one clock for every process of a host. With
// OMNI_TIMELINE_DIR set, mark(label) records `process.hrtime` (CLOCK_MONOTONIC, shared by the
// processes of a host: the omnids of a loopback cluster line up) and the label; the records go
// to DIR/<pid> once a second and at exit, as lines "<ns> <pid> <label>". Unset (always, outside a
// diagnostic run), mark is an empty function. test/bench/write-timeline-diag.ts reads the files:
// where one write's time goes across the leader and its followers (issue 13).
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

const FLUSH_EVERY_MS = 1000;
/** Records kept between flushes at most (a run that marks faster than this drops the surplus). */
const MAX_BUFFERED = 200_000;

function recorder(dir: string): (label: string) => void {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, String(process.pid));
  let lines: string[] = [];
  const flush = () => {
    if (lines.length === 0) return;
    const text = lines.join('\n') + '\n';
    lines = [];
    try {
      appendFileSync(file, text);
    } catch {
      // a diagnostic never stops the daemon
    }
  };
  setInterval(flush, FLUSH_EVERY_MS).unref();
  process.on('exit', flush);
  return (label) => {
    if (lines.length < MAX_BUFFERED) lines.push(`${process.hrtime.bigint()} ${process.pid} ${label}`);
  };
}

const DIR = process.env.OMNI_TIMELINE_DIR;

/** Whether marks are recorded (a caller skips work done only for them, e.g. a listener per request). */
export const timelineOn = DIR !== undefined && DIR !== '';

/** Records `label` at this moment (OMNI_TIMELINE_DIR set), else nothing. */
export const mark: (label: string) => void = timelineOn ? recorder(DIR!) : () => undefined;
