// The error codes of the distribution API (`{"errors": [{"code", "message", "detail"}]}`) and
// the HTTP status each goes with; Omni's own codes that reach the registry map onto them.

const OCI_STATUS: Readonly<Record<string, number>> = {
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 404,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  TAG_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 415,
  TOOMANYREQUESTS: 429,
  RANGE_INVALID: 416,
  PAYLOAD_TOO_LARGE: 413,
  METHOD_UNKNOWN: 405,
};

/** Omni codes seen by the registry → the distribution API's code and status. */
const FROM_OMNI: Readonly<Record<string, [string, number]>> = {
  BAD_REQUEST: ['UNSUPPORTED', 400],
  FORBIDDEN: ['DENIED', 403],
  NOT_FOUND: ['NAME_UNKNOWN', 404],
  TOO_LARGE: ['SIZE_INVALID', 413],
  BUSY: ['TOOMANYREQUESTS', 429],
  RESOURCE_EXHAUSTED: ['DENIED', 429],
  NO_SPACE: ['UNKNOWN', 507],
  BLOB_CORRUPT: ['BLOB_UNKNOWN', 503],
  CONFLICT: ['UNKNOWN', 409],
  TIMEOUT: ['UNAVAILABLE', 504],
  NO_LEADER: ['UNAVAILABLE', 503],
  NOT_LEADER: ['UNAVAILABLE', 503],
  UNAVAILABLE: ['UNAVAILABLE', 503],
  PROPOSAL_DROPPED: ['UNAVAILABLE', 503],
  LEADERSHIP_LOST: ['UNAVAILABLE', 503],
  TRANSFERRING: ['UNAVAILABLE', 503],
};

/** The distribution API's [code, status] for an error code (OCI or Omni). */
export function registryErrorStatus(code: string): [string, number] {
  if (Object.hasOwn(OCI_STATUS, code)) return [code, OCI_STATUS[code]];
  if (Object.hasOwn(FROM_OMNI, code)) return FROM_OMNI[code];
  return ['UNKNOWN', 500];
}
