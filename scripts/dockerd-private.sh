#!/usr/bin/env bash
# A private Docker engine for tests and CI (see ../shared/docker-in-ci.md).
#
#   scripts/dockerd-private.sh start DIR   starts dockerd with its own data-root, exec-root, unix
#                                          socket and pidfile under DIR (under `tini -s --` when
#                                          installed), waits until it answers, makes the base image
#                                          omni-test/busybox:1 (docker import, no registry), and
#                                          prints DOCKER_HOST=unix://DIR/docker.sock on stdout.
#   scripts/dockerd-private.sh stop DIR    stops that dockerd by its pidfile and waits for it to exit.
#   scripts/dockerd-private.sh image       makes omni-test/busybox:1 on the engine at $DOCKER_HOST
#                                          (no-op when it is there already).
#
# Needs root, `dockerd` and a static busybox (apt-get install -y docker.io busybox-static).
# Progress goes to stderr; the only stdout line of `start` is DOCKER_HOST=….
set -euo pipefail

readonly IMAGE=omni-test/busybox:1
readonly START_TIMEOUT_S=30   # dockerd answers in ~0.3 s here; allow slow machines
readonly STOP_TIMEOUT_S=30    # dockerd takes ~3 s to stop (it stops its containers first)

say() { echo "dockerd-private: $*" >&2; }
die() { say "error: $*"; exit 1; }

# docker CLI talking to DOCKER_HOST (set by the caller or by start)
dk() { docker "$@"; }

# Is the pid in FILE a live dockerd? (guards against a stale pidfile whose pid was reused)
alive_dockerd() {
  local pid=$1
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]]
}

find_static_busybox() {
  local b
  for b in /bin/busybox /usr/bin/busybox; do
    if [[ -x "$b" ]] && file -L "$b" 2>/dev/null | grep -q 'statically linked'; then echo "$b"; return 0; fi
  done
  # `file` may be missing: trust busybox-static's path if ldd says so
  for b in /bin/busybox /usr/bin/busybox; do
    if [[ -x "$b" ]] && ! ldd "$b" >/dev/null 2>&1; then echo "$b"; return 0; fi
  done
  return 1
}

# Several private dockerds on one host share the docker0 bridge (172.17.0.0/16): each would hand
# out 172.17.0.2 to its first container. Give each its own /24 out of it (--fixed-cidr), picked
# under a lock among those the running dockerds use. Empty when docker0 has another subnet.
pick_fixed_cidr() {
  local cur used n p
  cur=$(ip -4 -o addr show dev docker0 2>/dev/null | awk '{print $4}' | head -n1 || true)
  if [[ -n "$cur" && "$cur" != 172.17.0.1/16 ]]; then return 0; fi
  used=" "
  for p in $(pgrep -x dockerd || true); do
    used+="$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -o -- '--fixed-cidr [0-9./]*' | awk '{print $2}' | tr '\n' ' ' || true) "
  done
  for ((n = 1; n < 255; n++)); do
    if [[ "$used" != *" 172.17.$n.0/24 "* ]]; then echo "172.17.$n.0/24"; return 0; fi
  done
}

build_image() {
  if dk image inspect "$IMAGE" >/dev/null 2>&1; then say "image $IMAGE present"; return 0; fi
  local bb work
  bb=$(find_static_busybox) || die "no static busybox found (apt-get install -y busybox-static)"
  work=$(mktemp -d)
  mkdir -p "$work/rootfs/bin" "$work/rootfs/tmp" "$work/rootfs/etc"
  chmod 1777 "$work/rootfs/tmp"
  cp "$bb" "$work/rootfs/bin/busybox"
  # inside the chroot, so the links point at /bin/busybox of the image, not the host's path
  chroot "$work/rootfs" /bin/busybox --install -s /bin
  echo 'root:x:0:0:root:/root:/bin/sh' >"$work/rootfs/etc/passwd"
  echo 'root:x:0:' >"$work/rootfs/etc/group"
  tar -C "$work/rootfs" -c . | dk import --change 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
  rm -rf "$work"
  dk run --rm "$IMAGE" true || die "image $IMAGE was imported but does not run"
  say "image $IMAGE built from $bb"
}

start() {
  local dir=$1
  command -v dockerd >/dev/null || die "dockerd not installed (apt-get install -y docker.io busybox-static)"
  [[ $(id -u) == 0 ]] || die "dockerd needs root"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  # unix socket paths are limited to 108 bytes, and containerd puts its sockets deeper under exec-root
  (( ${#dir} <= 60 )) || die "DIR path is too long for dockerd's sockets (${#dir} > 60 chars): $dir"
  export DOCKER_HOST="unix://$dir/docker.sock"

  local pid
  pid=$(cat "$dir/dockerd.pid" 2>/dev/null || true)
  if alive_dockerd "$pid"; then
    say "already running (pid $pid)"
  else
    local -a launcher=() net=()
    if command -v tini >/dev/null; then launcher=(tini -s --); fi
    # one start at a time on this host, until the new dockerd has set up its bridge
    exec 9>/tmp/omni-dockerd-private.lock
    flock -w 60 9 || die "could not lock /tmp/omni-dockerd-private.lock"
    local cidr
    cidr=$(pick_fixed_cidr)
    if [[ -n "$cidr" ]]; then net=(--fixed-cidr "$cidr"); fi
    # stdin/stdout/stderr detached from the caller, so `$(… start DIR)` does not wait for dockerd
    "${launcher[@]}" dockerd \
      --data-root "$dir/data" --exec-root "$dir/exec" \
      -H "$DOCKER_HOST" --pidfile "$dir/dockerd.pid" "${net[@]}" \
      </dev/null 9>&- >"$dir/dockerd.log" 2>&1 &
    echo $! >"$dir/launcher.pid"
    local i ok=0
    for ((i = 0; i < START_TIMEOUT_S * 10; i++)); do
      if dk info >/dev/null 2>&1; then ok=1; break; fi
      if ! kill -0 "$(cat "$dir/launcher.pid")" 2>/dev/null; then break; fi
      sleep 0.1
    done
    exec 9>&-
    if [[ $ok != 1 ]]; then
      tail -n 20 "$dir/dockerd.log" >&2 || true
      stop "$dir" || true
      die "dockerd did not answer within ${START_TIMEOUT_S}s (log: $dir/dockerd.log)"
    fi
    say "dockerd $(dk version --format '{{.Server.Version}}' 2>/dev/null) running (pid $(cat "$dir/dockerd.pid"), containers in ${cidr:-the default subnet}, log $dir/dockerd.log)"
  fi
  build_image
  echo "DOCKER_HOST=$DOCKER_HOST"
}

stop() {
  local dir=$1 pid launcher i
  pid=$(cat "$dir/dockerd.pid" 2>/dev/null || true)
  launcher=$(cat "$dir/launcher.pid" 2>/dev/null || true)
  if alive_dockerd "$pid"; then
    kill -TERM "$pid"
    for ((i = 0; i < STOP_TIMEOUT_S * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "dockerd (pid $pid) still running after ${STOP_TIMEOUT_S}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    say "dockerd (pid $pid) stopped"
  else
    say "no dockerd running for $dir"
  fi
  # the tini launcher exits with dockerd; wait for it so nothing of ours outlives `stop`
  if [[ -n "$launcher" ]] && kill -0 "$launcher" 2>/dev/null && [[ "$(cat "/proc/$launcher/comm" 2>/dev/null)" =~ ^(tini|dockerd)$ ]]; then
    for ((i = 0; i < 50; i++)); do kill -0 "$launcher" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$launcher" 2>/dev/null && kill -KILL "$launcher" 2>/dev/null || true
  fi
  rm -f "$dir/launcher.pid"
}

case "${1:-}" in
  start) [[ -n "${2:-}" ]] || die "usage: $0 start DIR"; start "$2" ;;
  stop) [[ -n "${2:-}" ]] || die "usage: $0 stop DIR"; stop "$2" ;;
  image) [[ -n "${DOCKER_HOST:-}" ]] || say "DOCKER_HOST unset: using the default engine"; build_image ;;
  *) die "usage: $0 start DIR | stop DIR | image" ;;
esac
