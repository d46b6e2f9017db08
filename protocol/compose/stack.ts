// A stack in the replicated state (pure): one record per stack (stacks/NAME) listing its
// services, their apps and dependencies, and which services are held back until their
// dependencies meet their conditions. The leader advances held services (advanceStack), and
// the health of a stack is computed from its apps (stackHealth).
import type { DependCondition, Dependency } from './parse.js';
import type { AppState } from '../apps/model.js';

export const STACK_PREFIX = 'stacks/';
export const stackKey = (name: string) => `${STACK_PREFIX}${name}`;
export const STACK_NAME = /^[a-z0-9][a-z0-9_-]{0,39}$/;
/** How long held services wait for their dependencies by default before the stack fails. */
export const DEFAULT_START_TIMEOUT_MS = 120_000;
export const MAX_START_TIMEOUT_MS = 3_600_000;

export interface StackServiceRecord {
  service: string;
  app: string;
  dependsOn: Dependency[];
  critical: boolean;
}

export interface StackFailure {
  /** The dependency that did not meet its condition. */
  service: string;
  condition: DependCondition;
  reason: string;
  /** The dependency's last output lines / health check cause. */
  lastOutput: string[];
  /** Services that were not started because of it. */
  notStarted: string[];
}

export type StackStatus = 'starting' | 'up' | 'failed';

export interface StackRecord {
  name: string;
  /** 1, 2, …: every `up` that changed something. */
  generation: number;
  services: StackServiceRecord[];
  /** Services whose apps are written stopped until their dependencies meet their conditions. */
  held: string[];
  status: StackStatus;
  failure?: StackFailure;
  /** When the current holds began (leader clock): the start timeout counts from here. */
  heldSinceMs: number;
  startTimeoutMs: number;
  updatedAtMs: number;
}

/** What the stack logic needs to know of one service's app. */
export interface ServiceView {
  exists: boolean;
  state: AppState;
  isJob: boolean;
  replicas: number;
  /** Live tasks running. */
  running: number;
  /** Live tasks running with their health check passing (or none). */
  serving: number;
  /** Jobs: this version's run. */
  job?: 'running' | 'succeeded' | 'failed';
  /** Why it is not fine ('' when nothing is known). */
  reason: string;
  lastOutput: string[];
}

export type ConditionState = { met: true } | { met: false; failed?: string };

export function conditionState(cond: DependCondition, v: ServiceView | undefined): ConditionState {
  if (!v || !v.exists) return { met: false, failed: 'its app does not exist' };
  if (v.state === 'failed') return { met: false, failed: v.reason || 'its app failed' };
  if (v.state === 'removing') return { met: false, failed: 'its app is being removed' };
  switch (cond) {
    case 'service_completed_successfully':
      if (v.job === 'succeeded') return { met: true };
      if (v.job === 'failed') return { met: false, failed: v.reason || 'it did not complete successfully' };
      if (!v.isJob) return { met: false, failed: 'it is not a job' };
      return { met: false };
    case 'service_healthy':
      if (v.state !== 'running') return { met: false };
      return v.serving >= Math.max(1, v.replicas) ? { met: true } : { met: false };
    default:
      if (v.state !== 'running') return { met: false };
      if (v.isJob) return v.job === 'succeeded' || v.running > 0 ? { met: true } : { met: false };
      return v.running > 0 || v.replicas === 0 ? { met: true } : { met: false };
  }
}

const CONDITION_WORDS: Record<DependCondition, string> = {
  service_started: 'start',
  service_healthy: 'become healthy',
  service_completed_successfully: 'complete successfully',
};

/**
 * Which held services may start now (every dependency meets its condition and is not itself
 * held), or the failure that stops the stack: a dependency failed, or the start timeout passed
 * with a dependency still not meeting its condition.
 */
export function advanceStack(stack: StackRecord, views: ReadonlyMap<string, ServiceView>, nowMs: number): { start: string[]; failure?: StackFailure } {
  if (stack.status === 'failed' || stack.held.length === 0) return { start: [] };
  const held = new Set(stack.held);
  const byName = new Map(stack.services.map((s) => [s.service, s]));
  const start: string[] = [];
  let blocker: { dep: string; condition: DependCondition; failed?: string } | undefined;
  for (const name of stack.held) {
    const s = byName.get(name);
    if (!s) continue;
    let ready = true;
    for (const d of s.dependsOn) {
      if (held.has(d.service)) {
        ready = false;
        continue;
      }
      const st = conditionState(d.condition, views.get(d.service));
      if (st.met) continue;
      ready = false;
      if (st.failed !== undefined) {
        if (!blocker?.failed) blocker = { dep: d.service, condition: d.condition, failed: st.failed };
      } else blocker ??= { dep: d.service, condition: d.condition };
    }
    if (ready) start.push(name);
  }
  const timedOut = nowMs - stack.heldSinceMs > stack.startTimeoutMs;
  if (start.length === 0 && blocker && (blocker.failed !== undefined || timedOut)) {
    const v = views.get(blocker.dep);
    const words = CONDITION_WORDS[blocker.condition];
    const reason = blocker.failed !== undefined ? `${blocker.dep} did not ${words}: ${blocker.failed}` : `${blocker.dep} did not ${words} within ${Math.round(stack.startTimeoutMs / 1000)} s${v?.reason ? `: ${v.reason}` : ''}`;
    return { start: [], failure: { service: blocker.dep, condition: blocker.condition, reason, lastOutput: v?.lastOutput ?? [], notStarted: [...stack.held] } };
  }
  return { start };
}

export type StackHealthStatus = 'healthy' | 'degraded' | 'unhealthy';

export interface ServiceHealth {
  service: string;
  app: string;
  critical: boolean;
  up: boolean;
  state: string;
  replicas: number;
  serving: number;
  reason: string;
}

/**
 * healthy: every service up (a job: succeeded or running); degraded: only services marked
 * x-omni-critical: false are down; unhealthy: a critical service is down, a held service is
 * not started, or the stack failed to start.
 */
export function stackHealth(stack: StackRecord, views: ReadonlyMap<string, ServiceView>): { status: StackHealthStatus; reasons: string[]; services: ServiceHealth[] } {
  const held = new Set(stack.held);
  const services: ServiceHealth[] = stack.services.map((s) => {
    const v = views.get(s.service);
    let up = false;
    let reason = '';
    let state = v?.state ?? 'missing';
    if (!v || !v.exists) reason = 'its app does not exist';
    else if (held.has(s.service)) {
      state = stack.status === 'failed' ? 'not started' : 'waiting';
      reason = stack.status === 'failed' ? `not started: ${stack.failure?.reason ?? 'the stack failed'}` : `waiting for ${s.dependsOn.map((d) => d.service).join(', ')}`;
    } else if (v.state !== 'running') reason = v.reason || `app is ${v.state}`;
    else if (v.isJob) {
      up = v.job !== 'failed';
      state = v.job === 'succeeded' ? 'completed' : v.job === 'failed' ? 'failed' : 'running';
      if (!up) reason = v.reason || 'the job failed';
    } else {
      up = v.replicas === 0 || v.serving >= 1;
      if (!up) reason = v.reason || `0/${v.replicas} replicas healthy`;
      else if (v.serving < v.replicas) reason = `${v.serving}/${v.replicas} replicas healthy`;
    }
    return { service: s.service, app: s.app, critical: s.critical, up, state, replicas: v?.replicas ?? 0, serving: v?.serving ?? 0, reason };
  });
  const down = services.filter((s) => !s.up);
  const reasons = down.map((s) => `${s.service}${s.critical ? '' : ' (not critical)'}: ${s.reason}`);
  if (stack.status === 'failed' && stack.failure) reasons.unshift(`start failed: ${stack.failure.reason}`);
  const status: StackHealthStatus = stack.status === 'failed' || down.some((s) => s.critical) ? 'unhealthy' : down.length > 0 ? 'degraded' : 'healthy';
  return { status, reasons, services };
}
