// Runs the leader's duties (protocol/cluster/autopilot.ts decides; this carries them out):
// marking silent nodes down, promoting caught-up learners to the voter target, replacing
// voters that stay down, root step-down, and removing members that left.
import { planAutopilot, type AutopilotAction } from '../../protocol/cluster/autopilot.js';
import { ConfChangeType, Role } from '../../protocol/raft/types.js';
import type { Logger } from '../logger.js';
import type { LivenessView, MembershipChanger, Proposer, RaftView, RemovedMemberNotice } from './ports.js';
import { LEADER_DUTY } from './caller.js';

export const DEFAULT_DOWN_AFTER_MS = 5000;
export const DEFAULT_REPLACE_AFTER_MS = 15_000;
const AUTOPILOT_INTERVAL_MS = 500;
/**
 * While the membership is forming (a learner waits to make the voter target, a configuration
 * change is in flight, the root is due to step down) or the last round acted, the next round
 * comes this soon: a cold start's promotions, transfer and retirement are a chain of rounds.
 * (A membership change applied during a round brings the next one at once: see kick.)
 */
const SETTLING_INTERVAL_MS = 20;
/** A learner this close to the leader's log is caught up enough to vote. */
const MAX_PROMOTABLE_LAG_ENTRIES = 64;
/** Leadership transfers are retried at most this often. */
const TRANSFER_RETRY_MS = 3000;
const REMOVED_NOTICE_TIMEOUT_MS = 3000;

export interface AutopilotOptions {
  downAfterMs: number;
  replaceAfterMs: number;
}

/** What the autopilot uses: this node's Raft view, leader-duty proposals and membership changes, liveness, removed-member notices. */
export interface AutopilotDeps extends Proposer, MembershipChanger {
  readonly id: string;
  readonly log: Logger;
  readonly raft: RaftView & { transferLeader(to: string): void };
  readonly liveness: LivenessView & { touch(nodeId: string): void };
  readonly peers: RemovedMemberNotice;
}

export class Autopilot {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private busy = false;
  /** Between a timer firing and the next one being set (kick waits for it). */
  private inRound = false;
  /** kick was called during a round: the next round comes at once. */
  private kickedInRound = false;
  private leaderSinceMs = 0;
  private readonly downSinceMs = new Map<string, number>();
  private lastTransferMs = 0;

  constructor(
    private readonly daemon: AutopilotDeps,
    private readonly opts: AutopilotOptions,
  ) {}

  start(): void {
    this.stopped = false;
    this.scheduleRound(AUTOPILOT_INTERVAL_MS);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /**
   * A round now instead of at the next timer: the leadership or the membership changed (the
   * daemon calls this after applying such a change). A node that has just become leader acts at
   * once — a joining node's timer could still be on the 500 ms it took while it was catching up,
   * which held a cold start's root step-down back by that long. During a round (whose own
   * promotion was just applied, say) the next round comes as soon as it ends: it schedules the
   * next one itself, so there is only ever one timer.
   */
  kick(): void {
    if (this.stopped) return;
    if (this.inRound) {
      this.kickedInRound = true;
      return;
    }
    clearTimeout(this.timer);
    this.scheduleRound(0);
  }

  private scheduleRound(delayMs: number): void {
    this.timer = setTimeout(() => {
      this.inRound = true;
      this.kickedInRound = false;
      void this.round()
        .catch(() => false)
        .then((acted) => {
          this.inRound = false;
          if (this.stopped) return;
          this.scheduleRound(this.kickedInRound ? 0 : acted || this.settling() ? SETTLING_INTERVAL_MS : AUTOPILOT_INTERVAL_MS);
        });
    }, delayMs);
  }

  /** The membership is still forming: see SETTLING_INTERVAL_MS. Any role (a new leader's first round comes soon). */
  private settling(): boolean {
    const raft = this.daemon.raft.raft;
    const config = this.daemon.raft.state.config();
    if (config.clusterId === '') return false;
    if (raft.pendingConfIndex > raft.log.applied) return true;
    if (raft.voters.size < config.voterTarget) return raft.learners.size > 0;
    return !config.rootRetired;
  }

  /** One round; true when it carried out an action. */
  private async round(): Promise<boolean> {
    const d = this.daemon;
    const raft = d.raft.raft;
    if (raft.role !== Role.Leader) {
      this.leaderSinceMs = 0;
      return false;
    }
    if (this.busy) return false;
    const now = Date.now();
    if (this.leaderSinceMs === 0) {
      // A new leader gives every node a full timeout before judging it.
      this.leaderSinceMs = now;
      for (const n of d.raft.state.nodes()) d.liveness.touch(n.id);
    } else if (d.raft.state.nodeCount() !== d.liveness.seen.size) {
      // So does a node first seen now (a join registers it before its first heartbeat can arrive).
      for (const n of d.raft.state.nodes()) if (!d.liveness.seen.has(n.id)) d.liveness.touch(n.id);
    }
    this.busy = true;
    let acted = false;
    try {
      for (const action of this.plan(now)) acted = (await this.execute(action, now)) || acted;
    } catch (err) {
      d.log.debug(`autopilot: ${(err as Error).message}`);
    } finally {
      this.busy = false;
    }
    return acted;
  }

  private plan(now: number): AutopilotAction[] {
    const d = this.daemon;
    const raft = d.raft.raft;
    const state = d.raft.state;
    const silenceMs = new Map<string, number>();
    for (const [id, seen] of d.liveness.seen) silenceMs.set(id, now - seen.lastSeenMs);
    const downForMs = new Map<string, number>();
    for (const n of state.nodes()) {
      if (n.status !== 'down') {
        this.downSinceMs.delete(n.id);
        continue;
      }
      if (!this.downSinceMs.has(n.id)) this.downSinceMs.set(n.id, now);
      downForMs.set(n.id, now - this.downSinceMs.get(n.id)!);
    }
    const lagEntries = new Map<string, number>();
    const last = raft.log.lastIndex();
    // A member that has not acknowledged anything yet is not caught up, however short the log.
    for (const [id, pr] of raft.prs) lagEntries.set(id, pr.match === 0 ? Number.POSITIVE_INFINITY : last - pr.match);
    return planAutopilot({
      self: d.id,
      config: state.config(),
      nodes: state.nodes(),
      voters: raft.voters,
      learners: raft.learners,
      silenceMs,
      downForMs,
      lagEntries,
      confChangePending: raft.pendingConfIndex > raft.log.applied,
      downAfterMs: this.opts.downAfterMs,
      replaceAfterMs: this.opts.replaceAfterMs,
      maxPromotableLagEntries: MAX_PROMOTABLE_LAG_ENTRIES,
    });
  }

  private async execute(a: AutopilotAction, now: number): Promise<boolean> {
    const d = this.daemon;
    const name = (id: string) => d.raft.state.node(id)?.name ?? id;
    switch (a.kind) {
      case 'markDown':
        d.log.warn(`autopilot: node ${name(a.node)} is down (${a.reason})`);
        await d.proposeOk({ type: 'node.status', id: a.node, status: 'down', reason: a.reason }, LEADER_DUTY);
        return true;
      case 'markUp':
        d.log.info(`autopilot: node ${name(a.node)} is up again`);
        await d.proposeOk({ type: 'node.status', id: a.node, status: 'up' }, LEADER_DUTY);
        return true;
      case 'promote':
        d.log.info(`autopilot: promoting ${name(a.node)} to voter (${a.reason})`);
        await d.changeMembership({ type: ConfChangeType.AddVoter, node: a.node }, LEADER_DUTY);
        return true;
      case 'demote':
        d.log.warn(`autopilot: demoting ${name(a.node)} to non-voter (${a.reason})`);
        await d.changeMembership({ type: ConfChangeType.AddLearner, node: a.node }, LEADER_DUTY);
        return true;
      case 'removeMember':
        d.log.info(`autopilot: removing ${name(a.node)} from the configuration (${a.reason})`);
        await d.changeMembership({ type: ConfChangeType.RemoveNode, node: a.node }, LEADER_DUTY);
        d.peers.dropPeer(a.node);
        return true;
      case 'markLeft':
        d.log.info(`autopilot: ${name(a.node)} leaves (${a.reason})`);
        await d.proposeOk({ type: 'node.remove', id: a.node }, LEADER_DUTY);
        // It is out of the configuration, so Raft will not tell it: say so directly.
        await d.peers.tellRemoved(a.node, a.reason, REMOVED_NOTICE_TIMEOUT_MS);
        return true;
      case 'retireRoot':
        d.log.info(`autopilot: root node retires from its bootstrap role (${a.reason})`);
        await d.proposeOk({ type: 'root.retire' }, LEADER_DUTY);
        return true;
      case 'transferLeadership':
        if (now - this.lastTransferMs < TRANSFER_RETRY_MS) return false;
        this.lastTransferMs = now;
        d.log.info(`autopilot: transferring leadership to ${name(a.to)} (${a.reason})`);
        d.raft.transferLeader(a.to);
        return true;
    }
    return false;
  }
}
