// omni deploy app.yaml: create an app, or roll out a changed spec (rolling update with
// automatic rollback), then wait until it is healthy.
import { parse, printJson, timeoutFlagMs, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect } from './connection.js';
import { readSpecFile, waitHealthy, waitJob } from './app-io.js';
import { scheduleLine } from './schedule.js';
import type { ScheduleView } from '../../protocol/apps/cron.js';

const USAGE = `usage: omni deploy FILE.yaml [--detach] [--timeout SECONDS] [flags]

Submits the app spec in FILE (YAML or JSON). A new app is placed and started; a changed spec
is rolled out (update.parallel at a time, waiting for health, rolled back on failure); a
changed replica count alone scales. Waits until the replicas are healthy and stable (serving for
update.minHealthyMs without a restart) unless --detach; a crash loop, a rollback or a failed app
is reported with its cause and the task's last output lines, and exits 1.
${CONNECTION_HELP}
`;

export async function deploy(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...CONNECTION_FLAGS, detach: { type: 'boolean', short: 'd' }, timeout: { type: 'string' } }, USAGE);
  if (positionals.length !== 1) throw new UsageError(`need exactly one spec file\n\n${USAGE}`);
  const spec = await readSpecFile(positionals[0]);
  return submit(values, spec);
}

/** Shared with omni run: POST the spec, then follow it to healthy. */
export async function submit(values: Record<string, unknown>, spec: Record<string, unknown>, opts: { createOnly?: boolean; extra?: Record<string, unknown>; onResult?: () => void } = {}): Promise<number> {
  const timeoutMs = timeoutFlagMs(values.timeout, 120); // a bad flag is refused before the spec is sent
  const client = connect(values);
  try {
    const r = await client.post<{ name: string; version: number; changed: boolean; action: string }>(opts.createOnly ? '/v1/apps?create=true' : '/v1/apps', spec);
    if (!values.json) process.stderr.write(`${r.name}: ${r.action} (version ${r.version})\n`);
    opts.onResult?.();
    if (values.detach || !r.changed) {
      if (values.json) printJson({ ...r, ...opts.extra });
      return 0;
    }
    if (spec.type === 'cron') {
      // A cron app has nothing to wait for: its runs come at its schedule (omni inspect shows them).
      const a = await client.get<{ schedule?: ScheduleView }>(`/v1/apps/${encodeURIComponent(r.name)}`);
      if (values.json) printJson({ ...r, ...(a.schedule ? { schedule: a.schedule } : {}), ...opts.extra });
      else if (a.schedule) process.stdout.write(`${r.name}: schedule ${scheduleLine(a.schedule)}\n`);
      return 0;
    }
    if (spec.type === 'job') {
      // A job is waited for until it finished: succeeded (exit 0) or failed after its retries (exit 1).
      const res = await waitJob(client, r.name, r.version, timeoutMs, (line) => {
        if (!values.json) process.stderr.write(`${r.name}: ${line}\n`);
      });
      if (values.json) printJson({ ...r, succeeded: res.ok, message: res.message, ...(res.job ? { job: res.job } : {}), ...(res.logs ? { logs: res.logs } : {}) });
      else {
        process.stdout.write(`${r.name}: ${res.message}\n`);
        if (!res.ok && res.logs && res.logs.length > 0) process.stdout.write(`last output:\n${res.logs.map((l) => `  ${l}`).join('\n')}\n`);
      }
      return res.ok ? 0 : 1;
    }
    const res = await waitHealthy(client, r.name, r.version, timeoutMs, (line) => {
      if (!values.json) process.stderr.write(`${r.name}: ${line}\n`);
    });
    if (values.json) printJson({ ...r, ...opts.extra, healthy: res.ok, message: res.message, ...(res.logs ? { logs: res.logs } : {}) });
    else if (res.ok) process.stdout.write(`${r.name} is healthy (version ${r.version})\n`);
    else {
      process.stdout.write(`${r.name}: ${res.message}\n`);
      if (res.logs && res.logs.length > 0) process.stdout.write(`last output:\n${res.logs.map((l) => `  ${l}`).join('\n')}\n`);
    }
    return res.ok ? 0 : 1;
  } finally {
    client.close();
  }
}
