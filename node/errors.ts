// Typed errors with a stable code, shared by the daemon, its API and the CLI client.

export class OmniError extends Error {
  readonly code: string;
  /** Extra machine-readable detail (e.g. the leader's id for NOT_LEADER). */
  readonly detail: Record<string, unknown>;
  constructor(code: string, message: string, detail: Record<string, unknown> = {}) {
    super(message);
    this.name = 'OmniError';
    this.code = code;
    this.detail = detail;
  }
}

/** HTTP status for each error code the API can return. */
export function httpStatusFor(code: string): number {
  switch (code) {
    case 'BAD_REQUEST':
    case 'INVALID_ARGUMENT':
    case 'INVALID_COMMAND':
    case 'UNKNOWN_COMMAND':
    case 'INVALID_SPEC':
    case 'SECRET_SEALED_ELSEWHERE':
    case 'DIGEST_INVALID':
    case 'MANIFEST_INVALID':
    case 'MANIFEST_BLOB_UNKNOWN':
    case 'MANIFEST_UNKNOWN':
    case 'SIZE_INVALID':
      return 400;
    case 'UNAUTHORIZED':
      return 401;
    case 'FORBIDDEN':
      return 403;
    case 'NOT_FOUND':
      return 404;
    case 'METHOD_NOT_ALLOWED':
      return 405;
    case 'CONFLICT':
    case 'NAME_TAKEN':
    case 'ALREADY_INITIALIZED':
      return 409;
    case 'TOO_LARGE':
      return 413;
    case 'RESOURCE_EXHAUSTED':
    case 'QUOTA_EXCEEDED':
      return 429;
    case 'TIMEOUT':
      return 504;
    case 'NO_SPACE':
      return 507;
    case 'NOT_IMPLEMENTED':
      return 501;
    case 'NO_LEADER':
    case 'NOT_LEADER':
    case 'UNAVAILABLE':
    case 'TRANSFERRING':
    case 'CONF_CHANGE_PENDING':
    case 'TOO_MANY_PENDING':
    case 'TOO_MANY_PENDING_BYTES':
    case 'PROPOSAL_DROPPED':
    case 'LEADER_CATCHING_UP':
    case 'LEADERSHIP_LOST':
    case 'BUSY':
      return 503;
    default:
      return 500;
  }
}
