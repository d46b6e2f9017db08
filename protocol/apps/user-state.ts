// The states a person sees (issue 16, the Omega seed's model), mapped from the app record and its
// tasks. Pure. Services and labs are "agents": INIT / IDLE / BUSY / DEAD; jobs: CREATED /
// RUNNING / STOPPED (with succeeded / failed / stopped). NONE: there is no such app.
//
// Agent (service, lab):
//   DEAD  the app is stopped, failed or being removed, and none of its tasks still runs
//   BUSY  the app is stopped/removed but a task still runs (it is going down), or it runs and
//         is changing: a rollout in progress, a replica starting, restarting or unhealthy while
//         another serves, or fewer replicas serving than wanted
//   INIT  the app should run but no replica of its current version serves yet (placing,
//         pulling, starting, waiting for its first health check)
//   IDLE  every wanted replica of the current version serves (running, health check passing,
//         stable) and no rollout is in progress: ready, nothing in flight
// A lab is also BUSY while one of its notebook kernels computes (its node counts them, agent.ts).
// Cron app: IDLE between fires, BUSY while a run is in progress, DEAD once stopped (its
// schedule's ON / OFF is shown beside it).
export type AgentState = 'INIT' | 'IDLE' | 'BUSY' | 'DEAD';
export type JobUserState = 'CREATED' | 'RUNNING' | 'STOPPED';
export type UserState = AgentState | JobUserState | 'NONE';

/** What the mapping reads: the fields of GET /v1/apps/NAME (or the records behind it). */
export interface StateInput {
  type?: string;
  /** The app record's state: running | stopped | failed | removing. */
  state: string;
  version: number;
  replicas: number;
  /** The rollout: stable | deploying | rolled-back | failed. */
  deploy: string;
  job?: { phase: JobUserState; outcome: string };
  tasks: { version: number; desired: string; state: string; health: string; stable?: boolean; kernels?: { total: number; busy: number } }[];
}

export interface UserStateView {
  kind: 'agent' | 'job';
  state: UserState;
  /** For a STOPPED job: succeeded | failed | stopped. */
  outcome?: string;
  /** One line on why (e.g. "1/2 serving, rollout in progress"). */
  detail: string;
}

const alive = (t: StateInput['tasks'][number]) => t.state === 'running' || t.state === 'starting';

/** The user's state of an app; `undefined` input (no app of that name) is NONE. */
export function userState(a: StateInput | undefined): UserStateView {
  if (!a) return { kind: 'agent', state: 'NONE', detail: 'no such app' };
  if (a.type === 'job') {
    const phase = a.job?.phase ?? 'CREATED';
    return { kind: 'job', state: phase, ...(phase === 'STOPPED' ? { outcome: a.job?.outcome || 'stopped' } : {}), detail: phase === 'STOPPED' ? a.job?.outcome || 'stopped' : phase === 'RUNNING' ? 'running' : 'not started yet' };
  }
  const running = a.tasks.filter(alive);
  if (a.type === 'cron') {
    // A cron app waits between fires (IDLE) and works while a run is in progress (BUSY); its schedule's ON / OFF is shown beside.
    if (a.state !== 'running' && a.state !== 'failed') return running.length > 0 ? { kind: 'agent', state: 'BUSY', detail: `${a.state}: ${running.length} run task(s) still running` } : { kind: 'agent', state: 'DEAD', detail: a.state };
    return running.length > 0 ? { kind: 'agent', state: 'BUSY', detail: `${running.length} run task(s) in progress` } : { kind: 'agent', state: 'IDLE', detail: 'waiting for the next scheduled time' };
  }
  if (a.state !== 'running') {
    if (running.length > 0) return { kind: 'agent', state: 'BUSY', detail: `${a.state === 'removing' ? 'being removed' : a.state}: ${running.length} task(s) still running` };
    return { kind: 'agent', state: 'DEAD', detail: a.state };
  }
  const mine = a.tasks.filter((t) => t.version === a.version && t.desired === 'run');
  const serving = mine.filter((t) => t.state === 'running' && (t.health === 'healthy' || t.health === 'none'));
  const stable = serving.filter((t) => t.stable === true);
  if (a.replicas === 0) return running.length > 0 ? { kind: 'agent', state: 'BUSY', detail: `scaled to 0: ${running.length} task(s) still running` } : { kind: 'agent', state: 'IDLE', detail: 'scaled to 0 replicas' };
  if (serving.length === 0) return { kind: 'agent', state: 'INIT', detail: `starting: 0/${a.replicas} serving` };
  const rolling = a.deploy === 'deploying';
  const extra = a.tasks.filter((t) => alive(t) && (t.version !== a.version || t.desired !== 'run')).length;
  if (stable.length >= a.replicas && !rolling && extra === 0) {
    const busyKernels = a.type === 'lab' ? serving.reduce((n, t) => n + (t.kernels?.busy ?? 0), 0) : 0;
    if (busyKernels > 0) return { kind: 'agent', state: 'BUSY', detail: `${busyKernels} kernel(s) computing` };
    return { kind: 'agent', state: 'IDLE', detail: `${stable.length}/${a.replicas} serving` };
  }
  const why = [rolling ? 'rollout in progress' : '', serving.length < a.replicas ? `${serving.length}/${a.replicas} serving` : '', serving.length > stable.length ? `${serving.length - stable.length} not yet stable` : '', extra > 0 ? `${extra} old task(s) stopping` : ''].filter(Boolean);
  return { kind: 'agent', state: 'BUSY', detail: why.join(', ') || 'changing' };
}

/** "IDLE", "STOPPED (succeeded)": the state as one word (plus the outcome). */
export function stateLabel(v: UserStateView): string {
  return v.outcome ? `${v.state} (${v.outcome})` : v.state;
}

/** Whether the app counts as running for `omni config` (changes refused) and `omni stop` (asks first). */
export function isActive(v: UserStateView): boolean {
  return v.state === 'INIT' || v.state === 'IDLE' || v.state === 'BUSY' || v.state === 'CREATED' || v.state === 'RUNNING';
}

// The flows' decisions (the seed's decision trees), from the current state only: every flow can
// be interrupted and run again, and decides again from what it finds.

export type RunStep =
  /** no app, or a dead/stopped one: submit the spec (creates, or starts with this spec) */
  | 'submit'
  /** starting: wait for IDLE (or DEAD), then decide again */
  | 'wait'
  /** running (IDLE/BUSY, job CREATED/RUNNING): submit the spec again — unchanged is a no-op, a changed build rolls — then sync and watch */
  | 'ensure'
  /** a job that finished with this spec: report its outcome (omni start NAME runs it again) */
  | 'report';

export function decideRun(v: UserStateView): RunStep {
  switch (v.state) {
    case 'NONE':
    case 'DEAD':
      return 'submit';
    case 'INIT':
      return 'wait';
    case 'IDLE':
    case 'BUSY':
    case 'CREATED':
    case 'RUNNING':
      return 'ensure';
    case 'STOPPED':
      // stopped by omni stop: run resumes it (the same run); finished: its outcome stands
      return v.outcome === 'stopped' ? 'submit' : 'report';
  }
}

export type StopStep =
  /** nothing runs: nothing to do (sync back only) */
  | 'nothing'
  /** running or starting: ask (unless --yes), stop, wait until DEAD / STOPPED */
  | 'stop'
  /** already stopping: wait until DEAD / STOPPED */
  | 'wait';

export function decideStop(v: UserStateView, appState: string | undefined): StopStep {
  if (v.state === 'NONE' || v.state === 'DEAD' || v.state === 'STOPPED') return 'nothing';
  if (appState !== undefined && appState !== 'running') return 'wait';
  return 'stop';
}

/** omni watch: stream while the app is alive, else print what its nodes kept and end. */
export function decideWatch(v: UserStateView): 'stream' | 'cached' | 'missing' {
  if (v.state === 'NONE') return 'missing';
  return isActive(v) || v.state === 'BUSY' ? 'stream' : 'cached';
}
