// type: lab — a Jupyter notebook server as an app (issue 16). Pure: the defaults a lab spec gets
// before it is validated as a service (spec.ts), and the checks of its `lab` field.
//
// A lab is a service of one replica whose default command (process driver) is Debian's
// `jupyter notebook` (package jupyter-notebook, notebook 6.x) listening on the task's $PORT,
// serving the `workspace` volume, with its access token in JUPYTER_TOKEN (never in the argv,
// so `ps` on the host does not show it; notebook 6 reads it from there and logs the URL with
// the token masked). The token is generated once when the app is created (the API fills
// lab.token, keeping the previous version's), is part of the stored spec, and is shown by
// `omni run` and `omni inspect`. Health: HTTP GET /api (answers without a token).

/** The lab's own fields: its token and the address the notebook server binds. */
export interface LabSpec {
  token: string;
  /** 127.0.0.1 (default: reachable from the node itself, e.g. through an SSH tunnel) or 0.0.0.0. */
  ip: string;
}

export const LAB_TOKEN = /^[A-Za-z0-9_-]{16,128}$/;
export const LAB_PORT = 8888;
export const LAB_WORKSPACE_VOLUME = 'workspace';
export const LAB_WORKSPACE_PATH = '/workspace';
export const LAB_IPS = ['127.0.0.1', '0.0.0.0'];

/** The process driver's notebook server: Debian's jupyter-notebook 6.x flags. */
export function labCommand(ip: string): string[] {
  return [
    'jupyter', 'notebook', '--no-browser', '--allow-root',
    `--ip=${ip}`, '--port=$PORT', '--port-retries=0',
    // the workspace volume's host path (process driver); an image lab sets its own command
    '--notebook-dir=$OMNI_VOLUME_WORKSPACE',
  ];
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * A lab spec with its defaults filled in (the input is not changed): one replica, the notebook
 * command unless an image or command is given, port `http` 8888, an HTTP health check on /api,
 * the `workspace` volume, and JUPYTER_TOKEN from lab.token. Fields the user gave are kept (and
 * then validated as for any service); `errors` are the lab field's own problems.
 */
export function withLabDefaults(input: Obj): { spec: Obj; lab?: LabSpec; errors: { field: string; message: string }[] } {
  const errors: { field: string; message: string }[] = [];
  const raw = input.lab === undefined ? {} : input.lab;
  let lab: LabSpec | undefined;
  if (!isObj(raw)) errors.push({ field: 'lab', message: 'must be {token, ip}' });
  else {
    for (const k of Object.keys(raw)) if (k !== 'token' && k !== 'ip') errors.push({ field: `lab.${k}`, message: `unknown field '${k}' (a lab has token and ip)` });
    const token = raw.token;
    const ip = raw.ip === undefined ? '127.0.0.1' : raw.ip;
    if (typeof token !== 'string' || !LAB_TOKEN.test(token)) errors.push({ field: 'lab.token', message: 'required: 16 to 128 letters, digits, _ or - (the API generates one when the app is created)' });
    if (typeof ip !== 'string' || !LAB_IPS.includes(ip)) errors.push({ field: 'lab.ip', message: `must be ${LAB_IPS.join(' or ')}` });
    if (errors.length === 0) lab = { token: token as string, ip: ip as string };
  }
  const spec: Obj = { ...input };
  delete spec.lab;
  delete spec.type;
  if (spec.replicas === undefined) spec.replicas = 1;
  else if (spec.replicas !== 1 && spec.replicas !== 0) errors.push({ field: 'replicas', message: 'a lab runs one notebook server (1, or 0 to scale it down)' });
  if (spec.image === undefined && spec.command === undefined) spec.command = labCommand(lab?.ip ?? '127.0.0.1');
  if (spec.ports === undefined) spec.ports = [{ name: 'http', port: LAB_PORT }];
  if (spec.healthCheck === undefined) spec.healthCheck = { type: 'http', path: '/api', startPeriodMs: 5000 };
  const volumes = Array.isArray(spec.volumes) ? spec.volumes : spec.volumes === undefined ? [] : undefined;
  if (volumes && !volumes.some((v) => isObj(v) && v.name === LAB_WORKSPACE_VOLUME)) spec.volumes = [...volumes, { name: LAB_WORKSPACE_VOLUME, path: LAB_WORKSPACE_PATH }];
  if (lab) {
    const env = isObj(spec.env) ? spec.env : {};
    if (env.JUPYTER_TOKEN !== undefined && env.JUPYTER_TOKEN !== lab.token) errors.push({ field: 'env.JUPYTER_TOKEN', message: 'set by the lab from lab.token: leave it out' });
    spec.env = { ...env, JUPYTER_TOKEN: lab.token };
  }
  return { spec, ...(lab ? { lab } : {}), errors };
}
