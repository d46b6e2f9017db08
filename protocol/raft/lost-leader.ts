// When a follower's every connection to its leader closes (a killed process closes its sockets
// at once), it campaigns after a short delay instead of a whole election timeout
// (node/raft/raft-node.ts peerDisconnected). The survivors see the same close at about the same
// time: with independent random delays, two of them sometimes started their pre-votes within one
// message's flight of each other, granted each other's pre-vote (a pre-candidate grants a higher
// prospective term), both became candidates, voted for themselves and split the vote — the
// failover then waited a whole randomized election timeout (1-2 s; 5-8 % of failovers in
// bench:cluster). Here the survivors take turns in the order of their ids: the first fires within
// the first half of its slot, the next a slot later, so a second campaign starts only once the
// first had time to win (and its pre-vote is then refused by a candidate, or never sent: a
// leader showed up). The order is the same on every survivor (the voters are the configuration's);
// one that cannot win (its log is behind) is refused, and the next in turn campaigns.
//
// Pure: the caller gives the randomness.

/**
 * Milliseconds `self` waits before it campaigns for the leader `lost`; undefined when it is not a
 * voter (it cannot campaign). `spreadMs`: the window all survivors' campaigns fall in (the driver's
 * fifth of the election timeout). `random`: a value in [0, 1).
 */
export function lostLeaderCampaignDelayMs(self: string, voters: Iterable<string>, lost: string, spreadMs: number, random: number): number | undefined {
  const survivors = [...new Set(voters)].filter((v) => v !== lost).sort();
  const rank = survivors.indexOf(self);
  if (rank < 0) return undefined;
  const slotMs = spreadMs / survivors.length;
  return Math.floor(rank * slotMs + random * (slotMs / 2));
}
