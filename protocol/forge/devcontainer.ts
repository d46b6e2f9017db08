// `.devcontainer/devcontainer.json` as Forge's build environment (pure). The file is JSONC
// (comments and trailing commas allowed): stripJsonc removes both outside strings before
// JSON.parse. Forge uses:
//   image               the build environment image: a cluster-registry or local-engine image
//                       (Forge cannot pull from the internet, so an image of another registry —
//                       a host with a dot or a port, mcr.microsoft.com/… — is refused);
//   build.dockerfile    (and build.context, build.args) built by the engine instead of image;
//   containerEnv        the environment of every build step (and of the install);
//   remoteUser          (else containerUser) the user the steps run as;
//   postCreateCommand   run once before the dependency install and the build steps, in the
//                       build workspace; the container it ran in becomes the environment of
//                       the later steps (its changes outside the workspace are kept).
// `features` are refused (they are downloaded from the internet); other keys (customizations,
// forwardPorts, mounts, …) are ignored with a warning listing them. Variables such as
// ${localEnv:X} are refused: a build must not depend on the host it runs on.
export const DEVCONTAINER_PATH = '.devcontainer/devcontainer.json';
export const MAX_DEVCONTAINER_BYTES = 256 * 1024;

export interface DevContainer {
  image?: string;
  build?: { dockerfile: string; context: string; args: Record<string, string> };
  containerEnv: Record<string, string>;
  user?: string;
  postCreateCommand?: string;
  warnings: string[];
}

export type DevContainerResult = { ok: true; config: DevContainer } | { ok: false; message: string };

/** Removes // and /* *\/ comments and trailing commas outside strings; other text is unchanged. */
export function stripJsonc(text: string): string {
  let out = '';
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text[i];
    if (c === '"') {
      // a string, escapes included, copied as is
      let j = i + 1;
      while (j < n && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j + 1;
    } else if (c === '/' && text[i + 1] === '/') {
      while (i < n && text[i] !== '\n') i++;
    } else if (c === '/' && text[i + 1] === '*') {
      const end = text.indexOf('*/', i + 2);
      if (end < 0) throw new SyntaxError('a /* comment is not closed');
      out += ' ';
      i = end + 2;
    } else if (c === ',') {
      // a comma followed (after blanks and comments) by } or ] is dropped
      let j = i + 1;
      for (;;) {
        while (j < n && /\s/.test(text[j])) j++;
        if (text[j] === '/' && text[j + 1] === '/') {
          while (j < n && text[j] !== '\n') j++;
        } else if (text[j] === '/' && text[j + 1] === '*') {
          const end = text.indexOf('*/', j + 2);
          j = end < 0 ? n : end + 2;
        } else break;
      }
      if (text[j] !== '}' && text[j] !== ']') out += c;
      i++;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const fail = (message: string): { ok: false; message: string } => ({ ok: false, message: `${DEVCONTAINER_PATH}: ${message}` });
const USED = ['image', 'build', 'dockerFile', 'context', 'containerEnv', 'remoteEnv', 'remoteUser', 'containerUser', 'postCreateCommand', 'features', 'name', '$schema'];
const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
const HOST_VARIABLE = /\$\{(localEnv|localWorkspaceFolder|localWorkspaceFolderBasename|devcontainerId)\b[^}]*\}/;

/**
 * Whether an image reference names another registry (its first component has a dot or a port,
 * and is not localhost or a loopback address): Forge cannot pull it.
 */
export function isRemoteImage(image: string): boolean {
  const slash = image.indexOf('/');
  if (slash < 0) return false;
  const first = image.slice(0, slash);
  if (!/[.:]/.test(first) && first !== 'localhost') return false;
  const host = first.replace(/:\d+$/, '');
  return !(host === 'localhost' || /^127\.\d+\.\d+\.\d+$/.test(host) || host === '[::1]');
}

/** A postCreateCommand as one shell command: a string, or an argv (quoted for sh). */
function command(v: unknown, field: string): { ok: true; command?: string } | { ok: false; message: string } {
  if (v === undefined) return { ok: true };
  if (typeof v === 'string') return v.trim() ? { ok: true, command: v } : { ok: true };
  if (Array.isArray(v) && v.length > 0 && v.every((a) => typeof a === 'string')) return { ok: true, command: (v as string[]).map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ') };
  if (isObj(v)) {
    // the object form: named commands run in parallel by the devcontainer CLI; here one after the other
    const parts: string[] = [];
    for (const [k, c] of Object.entries(v)) {
      const r = command(c, `${field}.${k}`);
      if (!r.ok) return r;
      if (r.command) parts.push(`(${r.command})`);
    }
    return { ok: true, command: parts.length ? parts.join(' && ') : undefined };
  }
  return fail(`${field} must be a string, an array of strings or an object of them`);
}

export function parseDevcontainer(text: string): DevContainerResult {
  if (text.length > MAX_DEVCONTAINER_BYTES) return fail(`larger than ${MAX_DEVCONTAINER_BYTES} bytes`);
  let doc: unknown;
  try {
    doc = JSON.parse(stripJsonc(text));
  } catch (err) {
    return fail(`not valid JSON (comments and trailing commas are allowed): ${(err as Error).message}`);
  }
  if (!isObj(doc)) return fail('must be an object');
  if (HOST_VARIABLE.test(JSON.stringify(doc))) return fail(`${HOST_VARIABLE.exec(JSON.stringify(doc))![0]}: variables of the local host are not supported (a build must not depend on the machine it runs on)`);
  if (doc.features !== undefined && !(isObj(doc.features) && Object.keys(doc.features).length === 0)) {
    const names = isObj(doc.features) ? Object.keys(doc.features).join(', ') : String(doc.features);
    return fail(`features (${names}) are not supported: they are downloaded from the internet, which Forge cannot reach. Install what they give in a Dockerfile (build.dockerfile) FROM an image of the cluster's registry, or in postCreateCommand`);
  }
  if (doc.dockerComposeFile !== undefined) return fail('dockerComposeFile is not supported: give image or build.dockerfile');
  const warnings: string[] = [];
  const ignored = Object.keys(doc).filter((k) => !USED.includes(k) && k !== 'dockerComposeFile');
  if (ignored.length) warnings.push(`${DEVCONTAINER_PATH}: ${ignored.join(', ')} not used by Forge`);
  const config: DevContainer = { containerEnv: {}, warnings };
  // image or build.dockerfile (dockerFile/context: the older top-level spelling)
  const b = isObj(doc.build) ? doc.build : undefined;
  if (doc.build !== undefined && !b) return fail('build must be an object');
  const dockerfile = b?.dockerfile ?? b?.dockerFile ?? doc.dockerFile;
  if (doc.image !== undefined) {
    if (typeof doc.image !== 'string' || !doc.image.trim()) return fail('image must be a non-empty string');
    if (dockerfile !== undefined) return fail('give image or build.dockerfile, not both');
    if (isRemoteImage(doc.image)) return fail(`image ${doc.image} is in another registry and Forge cannot pull from the internet: put it in the cluster's registry (omni images import or push) and name it as REPO:TAG, or build one with build.dockerfile`);
    config.image = doc.image.trim();
  } else if (dockerfile !== undefined) {
    if (typeof dockerfile !== 'string' || !dockerfile.trim()) return fail('build.dockerfile must be a non-empty string');
    const context = b?.context ?? doc.context ?? '.';
    if (typeof context !== 'string') return fail('build.context must be a string');
    const args: Record<string, string> = {};
    if (b?.args !== undefined) {
      if (!isObj(b.args)) return fail('build.args must be an object of strings');
      for (const [k, v] of Object.entries(b.args)) {
        if (typeof v !== 'string') return fail(`build.args.${k} must be a string`);
        args[k] = v;
      }
    }
    config.build = { dockerfile: dockerfile.trim(), context, args };
  } else return fail('give image (an image of the cluster\'s registry or of the local engine) or build.dockerfile');
  for (const field of ['containerEnv', 'remoteEnv'] as const) {
    const env = doc[field];
    if (env === undefined) continue;
    if (!isObj(env)) return fail(`${field} must be an object of strings`);
    for (const [k, v] of Object.entries(env)) {
      if (!ENV_KEY.test(k)) return fail(`${field}.${k}: variable names are letters, digits and _, not starting with a digit`);
      if (typeof v !== 'string') return fail(`${field}.${k} must be a string`);
      if (v.includes('${')) return fail(`${field}.${k}: \${...} variables are not supported`);
      config.containerEnv[k] = v;
    }
  }
  const user = doc.remoteUser ?? doc.containerUser;
  if (user !== undefined) {
    if (typeof user !== 'string' || !/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?$/.test(user)) return fail('remoteUser must be a user name or id (optionally :group)');
    config.user = user;
  }
  const pc = command(doc.postCreateCommand, 'postCreateCommand');
  if (!pc.ok) return pc;
  if (pc.command) config.postCreateCommand = pc.command;
  return { ok: true, config };
}

/**
 * The relative path of a path under `.devcontainer/` (build.dockerfile and build.context are
 * relative to the devcontainer.json's folder), or undefined when it leaves the source tree.
 */
export function devcontainerPath(rel: string): string | undefined {
  const parts = ['.devcontainer'];
  for (const p of rel.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') {
      if (!parts.length) return undefined;
      parts.pop();
    } else parts.push(p);
  }
  return parts.join('/');
}
