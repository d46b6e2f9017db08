# Omni lease watchdog for an exclusive container (started detached by node/apps/drivers/docker.ts
# with /bin/sh; ~1 MB RSS). argv: <lease file> <pid> <start ticks>. <pid> is the container's init
# process as the host sees it, <start ticks> its start time (field 22 of /proc/<pid>/stat), so a
# reused pid is never touched. Once the time in the lease file (boot-clock centiseconds, see
# node/apps/lease-file.ts) has passed, or the file cannot be read, it kills that process with
# SIGKILL — which ends the container (its pid namespace dies with its init) — and exits. It
# exits on its own once the process is gone. omnid renews the lease while a quorum answers; this
# is what stops the container on time when omnid is down or frozen.
lease=$1
pid=$2
start=$3
trap '' TERM INT HUP QUIT USR1 USR2

alive() {
  line=
  read -r line <"/proc/$pid/stat" 2>/dev/null || return 1
  rest=${line##*) }
  # shellcheck disable=SC2086
  set -- $rest
  shift 19
  [ "${1:-}" = "$start" ]
}

while alive; do
  deadline=
  read -r deadline <"$lease" 2>/dev/null
  read -r up _ </proc/uptime
  frac=${up#*.}
  now=$(( ${up%%.*} * 100 + ${frac#0} ))
  case $deadline in ''|*[!0-9]*) deadline=0 ;; esac
  if [ "$now" -ge "$deadline" ]; then
    echo "omni: exclusive lease lapsed (deadline $deadline, now $now): killing pid $pid" >&2
    kill -KILL "$pid"
    exit 0
  fi
  sleep 1
done
