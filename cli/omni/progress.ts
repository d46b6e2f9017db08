// One progress line for a transfer (omni images push/pull/import/export, omni bundle): bytes done
// and to do, the rate and the time left, rewritten in place at most every 200 ms — on a terminal
// only. When stderr is not a TTY (a pipe, a file, CI) nothing is written: the command's result
// (text, or --json) is all that is printed.
import { formatBytes } from '../common.js';

/** What the line is written to (process.stderr; a fake in tests). */
export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(s: string): unknown;
}

export interface ProgressOptions {
  stream?: ProgressStream;
  now?: () => number;
  /** Fewest milliseconds between two redraws. */
  intervalMs?: number;
}

/** "1m05s", "42s", "2h03m". */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** The text of a progress line (pure, for tests). */
export function progressLine(label: string, done: number, total: number, elapsedMs: number): string {
  const parts = [label, total > 0 ? `${formatBytes(done)} / ${formatBytes(total)} (${Math.min(100, Math.floor((done / total) * 100))}%)` : formatBytes(done)];
  // A rate needs a little time behind it to mean anything.
  if (elapsedMs >= 500 && done > 0) {
    const perSec = (done / elapsedMs) * 1000;
    parts.push(`${formatBytes(perSec)}/s`);
    if (total > done) parts.push(`ETA ${formatDuration(((total - done) / perSec) * 1000)}`);
  }
  return parts.join('  ');
}

export class Progress {
  private readonly stream: ProgressStream;
  private readonly now: () => number;
  private readonly intervalMs: number;
  private readonly startMs: number;
  private lastDrawMs = -Infinity;
  private drawn = false;
  private doneBytes = 0;
  private totalBytes = 0;

  constructor(
    private label: string,
    o: ProgressOptions = {},
  ) {
    this.stream = o.stream ?? process.stderr;
    this.now = o.now ?? (() => performance.now());
    this.intervalMs = o.intervalMs ?? 200;
    this.startMs = this.now();
  }

  get enabled(): boolean {
    return this.stream.isTTY === true;
  }

  get done(): number {
    return this.doneBytes;
  }

  get total(): number {
    return this.totalBytes;
  }

  /** Changes what the line says is happening (drawn at the next update). */
  setLabel(label: string): void {
    this.label = label;
    this.draw(true);
  }

  /** More bytes to move (known as the work is discovered). */
  addTotal(bytes: number): void {
    this.totalBytes += bytes;
  }

  /** Bytes moved (or found already there). */
  advance(bytes: number): void {
    this.doneBytes += bytes;
    this.draw(false);
  }

  private draw(force: boolean): void {
    if (!this.enabled) return;
    const now = this.now();
    if (!force && now - this.lastDrawMs < this.intervalMs) return;
    this.lastDrawMs = now;
    let line = progressLine(this.label, this.doneBytes, this.totalBytes, now - this.startMs);
    const width = this.stream.columns ?? 0;
    if (width > 10 && line.length >= width) line = line.slice(0, width - 1);
    this.stream.write(`\r\x1b[K${line}`);
    this.drawn = true;
  }

  /** Clears the line (the command then prints its result). Safe to call twice. */
  end(): void {
    if (this.drawn) this.stream.write('\r\x1b[K');
    this.drawn = false;
  }
}
