// Which Compose specification keys Omni supports, refuses (an error) or accepts with a warning
// (the key is read and has no effect, said so by name). A key missing from these tables is not
// in the Compose specification: an error naming it. The README's table is this file.

export type KeyRule = { kind: 'supported' } | { kind: 'warn'; why: string } | { kind: 'refused'; why: string };
const S: KeyRule = { kind: 'supported' };
const warn = (why: string): KeyRule => ({ kind: 'warn', why });
const refuse = (why: string): KeyRule => ({ kind: 'refused', why });

const NO_DOCKER_OPTION = 'the docker driver does not set it';
const ISOLATION = 'a task runs with the driver’s default isolation; this would change what the container may do';

export const TOP_KEYS: Record<string, KeyRule> = {
  version: warn('obsolete in the Compose specification; ignored'),
  name: S,
  services: S,
  networks: S,
  volumes: S,
  secrets: S,
  configs: S,
  include: refuse('not supported: merge the included file into this one'),
  models: refuse('not supported'),
};

export const SERVICE_KEYS: Record<string, KeyRule> = {
  image: S,
  build: S,
  command: S,
  entrypoint: S,
  environment: S,
  env_file: S,
  ports: S,
  volumes: S,
  depends_on: S,
  healthcheck: S,
  restart: S,
  deploy: S,
  scale: S,
  networks: S,
  secrets: S,
  configs: S,
  profiles: S,
  labels: S,
  cpus: S,
  mem_limit: S,
  mem_reservation: S,
  platform: S,
  expose: warn('informational: a service reaches another on its container ports anyway'),
  container_name: warn('the app is named PROJECT-SERVICE'),
  hostname: S,
  domainname: warn(NO_DOCKER_OPTION),
  links: warn('not needed: every service of the stack reaches the others by service name (README, Service networking)'),
  external_links: warn('ignored: names reach only the services of the same stack'),
  extra_hosts: warn(NO_DOCKER_OPTION),
  dns: warn(NO_DOCKER_OPTION),
  dns_opt: warn(NO_DOCKER_OPTION),
  dns_search: warn(NO_DOCKER_OPTION),
  logging: warn('task logs are kept by the driver and read with omni compose logs'),
  pull_policy: warn('images are pinned by digest: a task always runs the digest the stack names'),
  stop_grace_period: S,
  stop_signal: S,
  init: warn('every container already runs with an init process (docker-init) that passes signals on'),
  tty: warn(NO_DOCKER_OPTION),
  stdin_open: warn(NO_DOCKER_OPTION),
  attach: warn('ignored'),
  annotations: warn(NO_DOCKER_OPTION),
  mac_address: warn(NO_DOCKER_OPTION),
  oom_score_adj: warn(NO_DOCKER_OPTION),
  oom_kill_disable: warn(NO_DOCKER_OPTION),
  pids_limit: warn(NO_DOCKER_OPTION),
  mem_swappiness: warn(NO_DOCKER_OPTION),
  memswap_limit: warn(NO_DOCKER_OPTION),
  cpu_shares: warn(NO_DOCKER_OPTION),
  cpu_count: warn('use cpus'),
  cpu_percent: warn('use cpus'),
  cpu_period: warn('use cpus'),
  cpu_quota: warn('use cpus'),
  cpu_rt_period: warn(NO_DOCKER_OPTION),
  cpu_rt_runtime: warn(NO_DOCKER_OPTION),
  cpuset: warn(NO_DOCKER_OPTION),
  blkio_config: warn(NO_DOCKER_OPTION),
  develop: warn('compose watch is not supported'),
  label_file: warn('labels are not applied to tasks'),
  read_only: S,
  user: S,
  working_dir: S,
  privileged: refuse(ISOLATION),
  cap_add: refuse(ISOLATION),
  cap_drop: S,
  security_opt: refuse(ISOLATION),
  devices: refuse(ISOLATION),
  device_cgroup_rules: refuse(ISOLATION),
  network_mode: refuse('services are reached through the mesh on their networks; host/none/service: modes are not supported'),
  pid: refuse(ISOLATION),
  ipc: refuse(ISOLATION),
  uts: refuse(ISOLATION),
  userns_mode: refuse(ISOLATION),
  cgroup: refuse(ISOLATION),
  cgroup_parent: refuse(ISOLATION),
  isolation: refuse(ISOLATION),
  runtime: refuse(ISOLATION),
  sysctls: refuse(ISOLATION),
  ulimits: S,
  shm_size: S,
  storage_opt: refuse(NO_DOCKER_OPTION),
  tmpfs: S,
  volumes_from: refuse('volumes are per app: name a volume instead'),
  extends: refuse('not supported: write the service out'),
  gpus: refuse('use deploy.resources.reservations.devices with capabilities [gpu] and count'),
  group_add: refuse(ISOLATION),
  credential_spec: refuse('Windows only'),
  post_start: refuse('lifecycle hooks are not supported'),
  pre_stop: refuse('lifecycle hooks are not supported'),
  provider: refuse('not supported'),
  models: refuse('not supported'),
  use_api_socket: refuse(ISOLATION),
  driver_opts: refuse('not supported'),
};

export const BUILD_KEYS: Record<string, KeyRule> = {
  context: S,
  dockerfile: S,
  args: S,
  target: S,
  cache_from: warn('Forge caches dependency layers itself'),
  cache_to: warn('Forge caches dependency layers itself'),
  labels: warn('image labels are not set'),
  tags: warn('the image is tagged REPO:sha-<source digest> and pinned by digest'),
  pull: warn('ignored'),
  no_cache: warn('use omni compose build --rebuild'),
  network: warn('ignored'),
  platforms: warn('the image is built for the building node’s platform'),
  shm_size: warn('ignored'),
  extra_hosts: warn('ignored'),
  isolation: warn('ignored'),
  privileged: refuse('privileged builds are not supported'),
  dockerfile_inline: refuse('write the Dockerfile to a file'),
  additional_contexts: refuse('one context per build'),
  ssh: refuse('not supported'),
  secrets: refuse('build secrets are not supported'),
  ulimits: refuse('not supported'),
  entitlements: refuse('not supported'),
  provenance: warn('ignored'),
  sbom: warn('ignored'),
};

export const DEPLOY_KEYS: Record<string, KeyRule> = {
  mode: S,
  replicas: S,
  resources: S,
  placement: S,
  update_config: S,
  restart_policy: S,
  labels: warn('service labels are not applied'),
  endpoint_mode: warn('no virtual IP or DNS round robin in this version'),
  rollback_config: warn('a failed update rolls back one task at a time (update.autoRollback)'),
};

export const HEALTHCHECK_KEYS: Record<string, KeyRule> = {
  test: S,
  interval: S,
  timeout: S,
  retries: S,
  start_period: S,
  disable: S,
  start_interval: warn('the check runs every interval from the start'),
};

/** Keys of the Compose specification this file's tables describe, for the README. */
export function keyTable(): { section: string; key: string; rule: KeyRule }[] {
  const rows: { section: string; key: string; rule: KeyRule }[] = [];
  for (const [section, t] of [['top level', TOP_KEYS], ['service', SERVICE_KEYS], ['build', BUILD_KEYS], ['deploy', DEPLOY_KEYS], ['healthcheck', HEALTHCHECK_KEYS]] as const) {
    for (const [key, rule] of Object.entries(t)) rows.push({ section, key, rule });
  }
  return rows;
}
