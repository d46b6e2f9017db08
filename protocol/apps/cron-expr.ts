// Cron expressions, pure: parsed by croner (never by hand), and IANA time zone names. Apart from
// cron.ts so that spec.ts can validate a schedule without an import cycle.
import { Cron } from 'croner';

export const MAX_CRON_EXPRESSION_CHARS = 200;
const cache = new Map<string, Cron>();

/** A time zone name the runtime knows (IANA, e.g. Europe/Paris), canonicalized; undefined if unknown. */
export function canonicalTimeZone(tz: string): string | undefined {
  if (tz.length === 0 || tz.length > 64) return undefined;
  try {
    return new Intl.DateTimeFormat('en-US', { timeZone: tz }).resolvedOptions().timeZone;
  } catch {
    return undefined;
  }
}

/**
 * Parses a 5-field (minute hour day-of-month month day-of-week) or 6-field (seconds first) cron
 * expression in a time zone; the error names what is wrong. Croner does the parsing; a schedule
 * that never fires (e.g. February 30) is refused too.
 */
export function parseCron(expr: string, timeZone: string): { ok: true; cron: Cron } | { ok: false; error: string } {
  const key = `${timeZone}\u0000${expr}`;
  const hit = cache.get(key);
  if (hit) return { ok: true, cron: hit };
  if (expr.length > MAX_CRON_EXPRESSION_CHARS) return { ok: false, error: `longer than ${MAX_CRON_EXPRESSION_CHARS} characters` };
  const fields = expr.trim().split(/\s+/).length;
  if (fields !== 5 && fields !== 6) return { ok: false, error: `expected 5 fields (minute hour day month weekday) or 6 (seconds first), got ${fields}` };
  let cron: Cron;
  try {
    cron = new Cron(expr, { paused: true, timezone: timeZone, mode: '5-or-6-parts' });
  } catch (err) {
    return { ok: false, error: (err as Error).message.replace(/^CronPattern: /, '') };
  }
  // A fixed reference (the protocol never reads the clock): a schedule with no time after it never fires.
  if (cron.nextRun(new Date(Date.UTC(2000, 0, 1))) === null) return { ok: false, error: 'never fires' };
  if (cache.size > 1000) cache.clear();
  cache.set(key, cron);
  return { ok: true, cron };
}

