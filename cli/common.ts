// Shared CLI plumbing: argument parsing, errors as one actionable line, --json output.
import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { OmniError } from '../node/errors.js';

export class UsageError extends Error {}

export type Flags = NonNullable<ParseArgsConfig['options']>;

export function parse(argv: string[], options: Flags, usage: string): { values: Record<string, unknown>; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
    if (values.help) {
      process.stdout.write(usage.trimEnd() + '\n');
      process.exit(0);
    }
    return { values: values as Record<string, unknown>, positionals };
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`${(err as Error).message}\n\n${usage.trimEnd()}`);
  }
}

/**
 * Runs a CLI main: user errors print one line and exit non-zero; no stack traces. With
 * `exitWhenDone` (omni) the process exits once main is done and its output is flushed, so a
 * pending timer or an idle keep-alive socket never holds a finished command for seconds.
 */
export async function runMain(main: () => Promise<number | void>, opts: { exitWhenDone?: boolean } = {}): Promise<void> {
  // Output piped into a reader that stopped (omni logs APP | head): stop quietly, as cat does.
  for (const out of [process.stdout, process.stderr]) {
    out.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(0);
      throw err;
    });
  }
  try {
    const code = await main();
    if (typeof code === 'number') process.exitCode = code;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`error: ${err.message}\n`);
      process.exitCode = 2;
    } else if (err instanceof OmniError) {
      process.stderr.write(`error: ${err.message} (${err.code})\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(`error: ${(err as Error).stack ?? String(err)}\n`);
      process.exitCode = 1;
    }
  }
  if (opts.exitWhenDone) {
    const flushed = (out: NodeJS.WriteStream) => new Promise<void>((resolve) => out.write('', () => resolve()));
    await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
    process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
  }
}

/** `omni version`, `omnid --version`: the package's version and the Node that runs it. */
export function versionLine(program: string): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return `${program} ${pkg.version} (node ${process.versions.node})\n`;
}

/** --timeout SECONDS (a positive whole number) in ms, `defaultS` when not given. */
export function timeoutFlagMs(value: unknown, defaultS: number): number {
  if (value === undefined) return defaultS * 1000;
  if (typeof value !== 'string' || !/^\d+$/.test(value) || Number(value) <= 0) throw new UsageError(`--timeout must be a whole number of seconds, got ${String(value)}`);
  return Number(value) * 1000;
}

/** `PROGRAM help CMD [...]` read as `PROGRAM CMD [...] --help` (as git and docker do), for a known CMD. */
export function helpAsFlag(argv: string[], isCommand: (cmd: string) => boolean): { cmd: string; rest: string[] } {
  const [cmd, ...rest] = argv;
  if (cmd === 'help' && rest.length > 0 && isCommand(rest[0])) return { cmd: rest[0], rest: [...rest.slice(1), '--help'] };
  return { cmd, rest };
}

/**
 * The words both programs take in place of a command: help (`--help`, `-h`, `help`; none at all
 * prints the usage and exits 2) and version (`--version`, `-v`, `version`). Prints and returns the
 * exit code for those; undefined for a command.
 */
export function helpOrVersion(cmd: string | undefined, usage: string, program: string): number | undefined {
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(usage);
    return cmd === undefined ? 2 : 0;
  }
  if (cmd === '--version' || cmd === '-v' || cmd === 'version') {
    process.stdout.write(versionLine(program));
    return 0;
  }
  return undefined;
}

export function printJson(v: unknown): void {
  process.stdout.write(JSON.stringify(v, null, 2) + '\n');
}

/** Where `omnid init` writes, and `omni` reads, the CLI's address and token. */
export function clientConfigPath(): string {
  return process.env.OMNI_CONFIG ?? join(process.env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), 'omni', 'config.json');
}

export function defaultDataDir(): string {
  return process.env.OMNI_DATA ?? join(homedir(), '.omni', 'data');
}

/** Renders rows as aligned columns (first row is the header). */
export function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ')).join('\n') + '\n';
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) (n /= 1024), i++;
  return `${n.toFixed(i === 0 ? 0 : 1)}${units[i]}`;
}

/**
 * "4GiB", "4G", "512MiB", "512m", "64KiB", "1.3GiB", "2000000" → bytes. Units are binary (1024),
 * as Docker reads 512m and 1g; a fraction of a unit is rounded down to whole bytes; a bare number
 * is bytes (a whole number).
 */
export function parseByteSize(s: string, what: string): number {
  const m = /^(\d{1,16}(?:\.\d{1,6})?)\s*([kmgt]?)(i?b)?$/i.exec(s.trim());
  const unit = m ? ' kmgt'.indexOf((m[2] || ' ').toLowerCase()) : 0;
  const n = m ? (unit === 0 ? Number(m[1]) : Math.floor(Number(m[1]) * 1024 ** unit)) : NaN;
  if (!m || (m[2] === '' && m[3] !== undefined && m[3].toLowerCase() !== 'b') || !Number.isSafeInteger(n)) {
    throw new UsageError(`${what} must be a size such as 4GiB, 512MiB or a number of bytes, got ${s}`);
  }
  return n;
}

/** "30s", "10m", "2h", "7d", "0" → ms. */
export function parseDurationMs(s: string, flag: string): number {
  const m = /^(\d{1,12})(ms|s|m|h|d)?$/.exec(s.trim());
  if (!m || (m[2] === undefined && m[1] !== '0')) throw new UsageError(`${flag} must be a duration such as 30s, 10m, 2h or 7d (or 0), got ${s}`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 'ms') as 'ms']!;
}
