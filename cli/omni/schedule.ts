// omni schedule enable|disable|trigger APP: a cron app's (or a service's) schedule ON or OFF, or one run now; and the
// one-line and table views of a schedule that omni ps, inspect and deploy print.
import { parse, printJson, table, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect } from './connection.js';
import type { ScheduleView } from '../../protocol/apps/cron.js';

const USAGE = `usage: omni schedule enable APP [flags]
       omni schedule disable APP [flags]
       omni schedule trigger APP [flags]

enable / disable turn the schedule of a cron app (type cron) or of a service with a schedule ON
or OFF. trigger asks for one run now, ON or OFF (the leader fires it within a second, once, as a
run of its own; the concurrency policy applies: forbid refuses while a run goes on).
OFF: nothing fires; a run in progress finishes. ON again: the schedule restarts from the
leader's clock, so the times that passed while it was OFF are not caught up. Idempotent:
enabling an enabled schedule changes nothing (exit 0). A new version of the app applies its
spec's suspend again. omni ps and omni inspect show ON / OFF, the last and next fire times
and the run history.
${CONNECTION_HELP}
`;

export async function schedule(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, CONNECTION_FLAGS, USAGE);
  const [what, app, ...rest] = positionals;
  if (what !== 'enable' && what !== 'disable' && what !== 'trigger') throw new UsageError(`say enable, disable or trigger\n\n${USAGE}`);
  if (!app || rest.length > 0) throw new UsageError(`need exactly one APP\n\n${USAGE}`);
  const client = connect(values);
  try {
    if (what === 'trigger') {
      const r = await client.post<{ name: string; changed: boolean }>(`/v1/apps/${encodeURIComponent(app)}/schedule/trigger`, {});
      if (values.json) printJson(r);
      else process.stdout.write(`${r.name}: a run ${r.changed ? 'was asked for' : 'is already asked for'}; the leader fires it now (omni inspect ${r.name} shows its run, omni logs ${r.name} its output)\n`);
      return 0;
    }
    const r = await client.post<{ name: string; schedule: 'ON' | 'OFF'; changed: boolean }>(`/v1/apps/${encodeURIComponent(app)}/schedule/${what}`, {});
    if (values.json) printJson(r);
    else process.stdout.write(`${r.name}: schedule ${r.schedule}${r.changed ? '' : ' (already)'}\n`);
    return 0;
  } finally {
    client.close();
  }
}

const at = (ms: number | null) => (ms ? new Date(ms).toISOString().replace('.000Z', 'Z') : '-');

/** "ON '*\/5 * * * * *' UTC, next 2026-…Z, last run 4 (succeeded) for 2026-…Z" */
export function scheduleLine(s: ScheduleView): string {
  const last = s.lastRun > 0 ? `, last run ${s.lastRun}${s.lastStatus && !s.active.some((r) => r.run === s.lastRun) ? ` (${s.lastStatus})` : s.active.some((r) => r.run === s.lastRun) ? ' (running)' : ''} for ${at(s.lastScheduledMs)}` : ', no run yet';
  const counts = [s.missed ? `${s.missed} missed` : '', s.skipped ? `${s.skipped} skipped` : ''].filter(Boolean).join(', ');
  return `${s.state} '${s.cron}' ${s.timeZone}, ${s.concurrencyPolicy}${s.command ? `, runs ${s.command.join(' ')}` : ''}; next ${at(s.nextFireMs)}${last}${counts ? `; ${counts}` : ''}`;
}

export interface CronRunRow { run: number; scheduledMs: number; firedAtMs: number; finishedAtMs: number; status: string; attempts: number; failures: number; exitCodes: (number | null)[]; reason: string }

/** The run history: runs in progress, then finished runs and times that never ran (newest last). */
export function scheduleRunsTable(active: { run: number; scheduledMs: number; firedAtMs: number; attempts: number; failures: number }[], runs: CronRunRow[]): string {
  const rows = [['RUN', 'SCHEDULED', 'FIRED', 'STATUS', 'ATTEMPTS', 'EXIT', 'REASON']];
  for (const r of runs) rows.push([r.run ? String(r.run) : '-', at(r.scheduledMs), at(r.firedAtMs), r.status, String(r.attempts), r.exitCodes.map((c) => (c === null ? '-' : String(c))).join(',') || '-', r.reason || '-']);
  for (const r of active) rows.push([String(r.run), at(r.scheduledMs), at(r.firedAtMs), 'running', String(r.attempts), '-', r.failures ? `${r.failures} failure(s) so far` : '-']);
  return table(rows).trimEnd();
}
