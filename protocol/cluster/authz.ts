// Who may propose what: the leader checks every command and membership change against this
// table before it enters the Raft log (node/daemon.ts). Pure: the principal has already been
// authenticated (node/cluster/caller.ts) and the view answers from the leader's applied state.
//
// Principals:
//  - admin:  an API caller whose admin token the leader itself verified (a forwarded request
//            carries the token; the leader does not take another node's word for it).
//  - member: a current member acting for itself, over libp2p or through its own control
//            socket. It may only report about itself (its registration, its status, the
//            status of the tasks placed on it) and ask for its own leave; while a Forge build
//            task (an app named build-<hex>, protocol/forge/build-request.ts) is placed on it
//            and meant to run, it may also add registry records (blobs, manifests, tags, repo
//            links: puts only, never deletes) and build records (forge/builds/…), which is what
//            the build writes (node/forge/node-registry.ts) — scoped: tags, repo links and
//            build records only of the repository in that build's spec (--repo) and of the
//            shared dependency-layer cache (forge-cache/deps); content-addressed blob and
//            manifest records are not per repository. While a task of an app is placed
//            on it (running or stopped, until its record is removed), it may write that app's
//            workspace (node/sync/task-workspace.ts): the record sync/<app>, and registry puts
//            in repository omni-sync/<app> (tags, repo links) plus the content-addressed blob
//            and manifest records they name, and deletes of that repository's revision tags
//            (ws-<n>: a sync removes the one that falls out of the last 10).
//  - joiner: a host the leader admitted with a join token (it joins as itself, proven by noise).
//  - leader: the leader's own duties (bootstrap, autopilot, orchestrator). Never forwarded:
//            another node cannot claim it.
// Membership changes are decided by the leader (the autopilot): nobody can ask to be promoted.
import type { Command, CommandType } from './commands.js';
import { SPEC_PREFIX, STATUS_PREFIX, TASK_PREFIX, parseRecord, type TaskRecord } from '../apps/model.js';
import { DEPS_CACHE_REPO_NAME, isBuildAppName, parseBuildCommand } from '../forge/build-request.js';
import { BLOB_PREFIX, GC_FENCE_KEY, MANIFEST_PREFIX, REPO_BLOB_PREFIX, REPO_MANIFEST_PREFIX, TAG_PREFIX } from '../registry/records.js';

export type Principal =
  | { kind: 'admin'; tokenId: string }
  | { kind: 'member'; nodeId: string }
  | { kind: 'joiner'; nodeId: string }
  | { kind: 'leader' };

export type PrincipalKind = Principal['kind'];

/** The Raft membership changes, by the name the state machine uses. */
export type ConfChangeKind = 'addVoter' | 'addLearner' | 'remove';
export interface ConfChangeRequest {
  type: ConfChangeKind;
  node: string;
}

export type Action = { kind: 'command'; command: Command } | { kind: 'conf'; change: ConfChangeRequest };

/** What the rules need to know from the replicated state. */
export interface AuthzView {
  /** The node a task is placed on (undefined: no such task). */
  taskNodeId(taskId: string): string | undefined;
  /** Whether a Forge build task meant to run is placed on the node (absent: never). */
  runsBuild?(nodeId: string): boolean;
  /**
   * The repositories of the Forge build tasks meant to run on the node (from each build app's
   * spec command, --repo). Absent: a build may write any repository (the view predates scoping).
   */
  buildRepos?(nodeId: string): string[];
  /** Whether a task of `app` (any desired state) is placed on the node (absent: never). */
  hostsApp?(nodeId: string, app: string): boolean;
  /** Whether any task is placed on the node (absent: never). */
  hostsTasks?(nodeId: string): boolean;
}

export type AuthzResult = { ok: true } | { ok: false; error: { code: 'FORBIDDEN'; message: string } };

/**
 * A rule: true (allowed), false (refused), or a check of the command against the principal's
 * node id that returns why it is refused (undefined: allowed).
 */
type Rule<C> = boolean | ((c: C, nodeId: string, view: AuthzView) => string | undefined);

export interface AuthzRow<C> {
  admin: boolean;
  member: Rule<C>;
  joiner: Rule<C>;
  leader: boolean;
  /** Said in a refusal: who may do this. */
  who: string;
}

type CommandOf<T extends CommandType> = Extract<Command, { type: T }>;

const onlyItself = (id: string, nodeId: string, what: string): string | undefined =>
  id === nodeId ? undefined : `a member may only ${what} itself, not node ${id.slice(0, 64)}`;

/** Every command type has a row (the compiler and test/unit/authz.test.ts make sure of it). */
export const COMMAND_AUTHZ: { readonly [T in CommandType]: AuthzRow<CommandOf<T>> } = {
  'cluster.init': { admin: false, member: false, joiner: false, leader: true, who: 'the bootstrap of omnid init' },
  'config.set': { admin: true, member: false, joiner: false, leader: false, who: 'an admin token' },
  'root.retire': { admin: false, member: false, joiner: false, leader: true, who: "the leader's autopilot" },
  'node.register': {
    admin: false,
    member: (c, nodeId) => onlyItself(c.node.id, nodeId, 'register'),
    joiner: (c, nodeId) => onlyItself(c.node.id, nodeId, 'register'),
    leader: true,
    who: 'the node itself',
  },
  'node.status': {
    admin: false,
    member: (c, nodeId) => onlyItself(c.id, nodeId, 'report the status of'),
    joiner: false,
    leader: true,
    who: "the node itself or the leader's autopilot",
  },
  'node.remove': {
    admin: true,
    member: (c, nodeId) => onlyItself(c.id, nodeId, 'remove'),
    joiner: false,
    leader: true,
    who: 'an admin token, the node itself (leave) or the autopilot',
  },
  'node.eligibility': { admin: true, member: false, joiner: false, leader: true, who: "an admin token or the leader's orchestrator" },
  'token.add': { admin: true, member: false, joiner: false, leader: true, who: 'an admin token' },
  'token.revoke': { admin: true, member: false, joiner: false, leader: false, who: 'an admin token' },
  'kv.put': {
    admin: true,
    member: (c, nodeId, view) => memberPut(c.key, nodeId, view),
    joiner: false,
    leader: true,
    who: 'an admin token (a member writes only the status of its own tasks, and what its builds write)',
  },
  'kv.delete': { admin: true, member: false, joiner: false, leader: true, who: 'an admin token' },
  'kv.txn': {
    admin: true,
    member: (c, nodeId, view) => {
      for (const op of c.ops) {
        const why = op.op === 'put' ? memberPut(op.key, nodeId, view) : memberDelete(op.key, nodeId, view);
        if (why) return why;
      }
      return undefined;
    },
    joiner: false,
    leader: true,
    who: 'an admin token (a member writes only the status of its own tasks, and what its builds write)',
  },
};

export const CONF_AUTHZ: { readonly [K in ConfChangeKind]: AuthzRow<ConfChangeRequest> } = {
  addVoter: { admin: false, member: false, joiner: false, leader: true, who: "the leader's autopilot (a node cannot ask to be promoted)" },
  addLearner: {
    admin: false,
    member: false,
    joiner: (c, nodeId) => onlyItself(c.node, nodeId, 'add'),
    leader: true,
    who: "the leader (a join, or the autopilot's demotion)",
  },
  remove: {
    admin: true,
    member: (c, nodeId) => onlyItself(c.node, nodeId, 'remove'),
    joiner: false,
    leader: true,
    who: 'an admin token, the node itself (leave) or the autopilot',
  },
};

/** Whether `principal` may propose `action`. Never throws; unknown kinds are refused. */
export function authorize(principal: Principal, action: Action, view: AuthzView): AuthzResult {
  const row = action.kind === 'command' ? commandRow(action.command) : CONF_AUTHZ[action.change.type];
  const subject = action.kind === 'command' ? action.command : action.change;
  const what = action.kind === 'command' ? action.command.type : `membership change ${action.change.type}`;
  if (row === undefined) return refuse(`${String(what).slice(0, 64)}: unknown action`);
  let why: string | undefined;
  switch (principal.kind) {
    case 'admin':
      why = row.admin ? undefined : `not with an admin token`;
      break;
    case 'leader':
      why = row.leader ? undefined : `not as a leader duty`;
      break;
    case 'member':
    case 'joiner': {
      const rule = row[principal.kind] as Rule<typeof subject>;
      why = typeof rule === 'function' ? rule(subject, principal.nodeId, view) : rule ? undefined : `not by a ${principal.kind === 'member' ? 'member acting for itself' : 'joining node'}`;
      break;
    }
    default:
      why = 'unknown principal';
  }
  return why === undefined ? { ok: true } : refuse(`${what} refused: ${why}; allowed for ${row.who}`);
}

function commandRow(c: Command): AuthzRow<Command> | undefined {
  const rows = COMMAND_AUTHZ as Readonly<Record<string, AuthzRow<Command>>>;
  return Object.hasOwn(rows, c.type) ? rows[c.type] : undefined;
}

function refuse(message: string): AuthzResult {
  return { ok: false, error: { code: 'FORBIDDEN', message } };
}

/** Keys a build writes: registry records (not the GC policy, replicas or history) and build records. */
const BUILD_KEY_PREFIXES = [BLOB_PREFIX, MANIFEST_PREFIX, TAG_PREFIX, REPO_MANIFEST_PREFIX, REPO_BLOB_PREFIX, 'forge/builds/'];

/** The app whose workspace a key belongs to (sync/<app>, or a repository record of omni-sync/<app>), if any. */
export function workspaceAppOfKey(key: string): string | undefined {
  if (key.startsWith('sync/')) return key.slice('sync/'.length);
  for (const [prefix, end] of [[TAG_PREFIX, ':'], [REPO_MANIFEST_PREFIX, '@'], [REPO_BLOB_PREFIX, '@']] as const) {
    if (!key.startsWith(prefix + 'omni-sync/')) continue;
    const rest = key.slice(prefix.length + 'omni-sync/'.length);
    const i = rest.indexOf(end);
    return i > 0 ? rest.slice(0, i) : undefined;
  }
  return undefined;
}

/** The repository a tag / repo-link record names (undefined: not such a record). */
export function repoOfKey(key: string): string | undefined {
  for (const [prefix, end] of [[TAG_PREFIX, ':'], [REPO_MANIFEST_PREFIX, '@'], [REPO_BLOB_PREFIX, '@']] as const) {
    if (!key.startsWith(prefix)) continue;
    const rest = key.slice(prefix.length);
    const i = rest.lastIndexOf(end);
    return i > 0 ? rest.slice(0, i) : undefined;
  }
  return undefined;
}

/**
 * A member's delete: only the tag of an old revision of a workspace it holds a task of
 * (`omni-sync/<app>:ws-<n>`, removed by the sync that writes revision n + 10); nothing else.
 */
function memberDelete(key: string, nodeId: string, view: AuthzView): string | undefined {
  const app = workspaceAppOfKey(key);
  if (app === undefined || !key.startsWith(`${TAG_PREFIX}omni-sync/${app}:ws-`)) return 'a member deletes nothing but the old revision tags of a workspace it holds a task of';
  return view.hostsApp?.(nodeId, app) ? undefined : `a member removes the revisions of ${app.slice(0, 100)} only while a task of it is placed there`;
}

/** A member's put: the status of its own task, a record its build writes, or its task's workspace. */
function memberPut(key: string, nodeId: string, view: AuthzView): string | undefined {
  const app = workspaceAppOfKey(key);
  if (app !== undefined && !view.runsBuild?.(nodeId)) {
    return view.hostsApp?.(nodeId, app) ? undefined : `a member writes the workspace of ${app.slice(0, 100)} only while a task of it is placed there`;
  }
  if (key === GC_FENCE_KEY || key.startsWith(BLOB_PREFIX) || key.startsWith(MANIFEST_PREFIX)) {
    // content-addressed records: what a build or a task's workspace write names
    return view.runsBuild?.(nodeId) || view.hostsTasks?.(nodeId) ? undefined : 'a member writes registry records only while a build task runs on it (or a task, for the records its workspace names)';
  }
  if (BUILD_KEY_PREFIXES.some((p) => key.startsWith(p))) {
    if (!view.runsBuild?.(nodeId)) return 'a member writes registry and build records only while a build task runs on it';
    if (!view.buildRepos) return undefined;
    // scoped: only the repository of a build placed on it (and the shared dependency-layer cache)
    const repos = view.buildRepos(nodeId);
    if (key.startsWith('forge/builds/')) {
      return repos.some((r) => key.startsWith(`forge/builds/${r}/sha-`)) ? undefined : `a member writes only the build records of the repositories its builds build (${repos.join(', ').slice(0, 200)})`;
    }
    const repo = repoOfKey(key);
    if (repo !== undefined && (repo === DEPS_CACHE_REPO_NAME || repos.includes(repo))) return undefined;
    return `a member's build writes only its own repository (${repos.join(', ').slice(0, 200)}), not ${(repo ?? key).slice(0, 200)}`;
  }
  return ownStatusKey(key, nodeId, view);
}

/** taskstatus/<id> of a task placed on nodeId. */
function ownStatusKey(key: string, nodeId: string, view: AuthzView): string | undefined {
  if (!key.startsWith(STATUS_PREFIX)) return 'a member may only write the status of its own tasks';
  const taskId = key.slice(STATUS_PREFIX.length);
  const placed = view.taskNodeId(taskId);
  if (placed === undefined) return `task ${taskId.slice(0, 64)} does not exist`;
  return placed === nodeId ? undefined : `task ${taskId.slice(0, 64)} is not placed on this member`;
}

/** The view over the cluster state: its task table (decoded at apply), else a read of the task's kv record. */
export function authzView(state: { kvGet(key: string): { value: string } | undefined; tables?: { task(id: string): TaskRecord | undefined; tasksOnNode?(nodeId: string): TaskRecord[] } }): AuthzView {
  return {
    runsBuild: (nodeId) => (state.tables?.tasksOnNode?.(nodeId) ?? []).some((t) => t.desired === 'run' && isBuildAppName(t.app)),
    buildRepos: (nodeId) => {
      const repos: string[] = [];
      for (const t of state.tables?.tasksOnNode?.(nodeId) ?? []) {
        if (t.desired !== 'run' || !isBuildAppName(t.app)) continue;
        const spec = parseRecord<{ command?: unknown }>(state.kvGet(`${SPEC_PREFIX}${t.app}/${String(t.version).padStart(8, '0')}`)?.value);
        const parsed = Array.isArray(spec?.command) && spec.command.every((a) => typeof a === 'string') ? parseBuildCommand(spec.command as string[]) : undefined;
        if (parsed?.ok) repos.push(parsed.request.repo);
      }
      return repos;
    },
    hostsApp: (nodeId, app) => (state.tables?.tasksOnNode?.(nodeId) ?? []).some((t) => t.app === app),
    hostsTasks: (nodeId) => (state.tables?.tasksOnNode?.(nodeId) ?? []).length > 0,
    taskNodeId: (taskId) => {
      const t = state.tables ? state.tables.task(taskId) : parseRecord<TaskRecord>(state.kvGet(`${TASK_PREFIX}${taskId}`)?.value);
      return typeof t?.nodeId === 'string' ? t.nodeId : undefined;
    },
  };
}
