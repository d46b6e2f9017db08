// Readable one-line renderings of Raft messages for simulator traces.

import { type Message, MessageType } from '../protocol/raft/types.js';

export function formatMessage(m: Message): string {
  const head = `${m.from}->${m.to} ${MessageType[m.type]} t${m.term}`;
  switch (m.type) {
    case MessageType.App:
      return `${head} prev=${m.index}/t${m.logTerm} n=${m.entries.length}${m.entries.length ? ` [${m.entries[0].index}..${m.entries[m.entries.length - 1].index}]` : ''} commit=${m.commit}`;
    case MessageType.AppResp:
      return m.reject ? `${head} REJECT ${m.index} hint=${m.rejectHint}/t${m.logTerm}` : `${head} match=${m.index}`;
    case MessageType.Vote:
    case MessageType.PreVote:
      return `${head} last=${m.index}/t${m.logTerm}${m.context.length ? ' (transfer)' : ''}`;
    case MessageType.VoteResp:
    case MessageType.PreVoteResp:
      return `${head} ${m.reject ? 'REJECT' : 'grant'}`;
    case MessageType.Heartbeat:
      return `${head} commit=${m.commit}${m.context.length ? ' +read' : ''}`;
    case MessageType.Snap:
      return `${head} snapshot=${m.snapshot?.meta.index}/t${m.snapshot?.meta.term}`;
    case MessageType.ReadIndexResp:
      return `${head} index=${m.index}`;
    default:
      return head;
  }
}
