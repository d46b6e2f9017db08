// The cluster's health as one node sees it (GET /health, /v1/status, omni status):
//  - unhealthy: no leader, or fewer than a majority of voters up (writes stop);
//  - degraded: writes work but the cluster tolerates fewer failures than it was set up for —
//    a node is down, a voter has gone silent (not marked down yet), or there are fewer voters
//    than the voter target (nothing to promote);
//  - healthy: otherwise.

export type Health = 'healthy' | 'degraded' | 'unhealthy';

export interface HealthReport {
  status: Health;
  leader: string;
  quorum: boolean;
  voters: number;
  votersUp: number;
  voterTarget: number;
  nodesDown: string[];
  reasons: string[];
}

export interface HealthInput {
  selfId: string;
  /** The leader's id ('' when none is known). */
  leader: string;
  voters: readonly string[];
  voterTarget: number;
  nodes: readonly { id: string; name: string; status: string; statusReason: string }[];
  /** How long ago this node last heard each peer (ms); absent when never heard since it started. */
  silentMs: (id: string) => number | undefined;
  /** A voter silent this long counts as not up before the autopilot marks it down. */
  silentAfterMs: number;
  /** Bytes of replicated state, and its quota (the QUOTA_EXCEEDED alarm: absent, no check). */
  stateBytes?: number;
  quotaBytes?: number;
}

/** Share of the state quota at which the QUOTA_EXCEEDED alarm is raised (writes soon refused). */
export const QUOTA_ALARM_SHARE = 0.95;

/** The state's size, in bytes, from which the QUOTA_EXCEEDED alarm is raised for `quotaBytes`. */
export function quotaAlarmAtBytes(quotaBytes: number): number {
  return Math.ceil(quotaBytes * QUOTA_ALARM_SHARE);
}

export function assessHealth(h: HealthInput): HealthReport {
  const byId = new Map(h.nodes.map((n) => [n.id, n]));
  const name = (id: string) => byId.get(id)?.name ?? id;
  const down = h.nodes.filter((n) => n.status === 'down');
  const silent = h.voters.filter((v) => v !== h.selfId && byId.get(v)?.status !== 'down' && (h.silentMs(v) ?? 0) > h.silentAfterMs);
  const votersUp = h.voters.filter((v) => byId.get(v)?.status !== 'down' && !silent.includes(v)).length;
  const majority = Math.floor(h.voters.length / 2) + 1;
  const quorum = h.leader !== '' && votersUp >= majority;
  const reasons: string[] = [];
  let status: Health = 'healthy';
  if (h.leader === '') {
    status = 'unhealthy';
    reasons.push('no leader: the cluster has lost quorum or is electing one');
  } else if (!quorum) {
    status = 'unhealthy';
    reasons.push(`only ${votersUp} of ${h.voters.length} voters are up`);
  } else {
    for (const n of down) reasons.push(`${h.voters.includes(n.id) ? 'voter' : 'node'} ${n.name} is down: ${n.statusReason}`);
    for (const v of silent) reasons.push(`voter ${name(v)} not heard from for ${(h.silentMs(v)! / 1000).toFixed(1)} s`);
    if (h.voters.length < h.voterTarget) {
      const missing = h.voterTarget - h.voters.length;
      reasons.push(`${h.voters.length} of ${h.voterTarget} target voters: join ${missing} more host${missing === 1 ? '' : 's'} (or make a non-voter eligible) to tolerate a failure`);
    }
    if (h.stateBytes !== undefined && h.quotaBytes !== undefined && h.stateBytes >= quotaAlarmAtBytes(h.quotaBytes)) {
      const mib = (n: number) => (n / 2 ** 20).toFixed(1);
      reasons.push(`QUOTA_EXCEEDED alarm: the replicated state holds ${mib(h.stateBytes)} MiB of its ${mib(h.quotaBytes)} MiB quota; writes that grow it are refused — delete keys or apps, or raise the quota (omni quota set SIZE)`);
    }
    if (reasons.length > 0) status = 'degraded';
  }
  return { status, leader: name(h.leader), quorum, voters: h.voters.length, votersUp, voterTarget: h.voterTarget, nodesDown: down.map((n) => n.name), reasons };
}
