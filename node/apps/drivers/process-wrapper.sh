# Omni process-task wrapper (run by node/apps/drivers/process.ts with /bin/sh; ~1-2 MB RSS).
# argv: <taskDir> <command> [args...]; cwd is <taskDir>/work; env is the task's env; stdin and
# stdout are pipes from the driver, for the start handshake only.
# It leads the task's process group (the driver starts it with setsid), runs the command as
# given (the driver resolved argv[0] to a path, so no shell builtin or function can shadow it,
# and "$@" is never re-parsed), and records the command's exit status for the driver, which
# may have restarted meanwhile. It writes no log itself: the command's stdout/stderr go to two
# named pipes that omnid reads (node/apps/drivers/process-output.ts).
dir=$1
shift

# stop() (or a user) signals the whole group: the command must get the signal, the wrapper must
# outlive it to record the status. A trap with a command (not '') is reset to the default in the
# command. SIGKILL cannot be trapped: the driver then records the run as killed.
trap : TERM INT HUP QUIT USR1 USR2

# Hold both pipes open for reading and writing, so that the command's writes never fail
# (SIGPIPE) while no reader is attached (omnid restarting); they only block once a pipe is full.
exec 3<>"$dir/out.pipe" 4<>"$dir/err.pipe" || exit 125
# Service networking: the driver started this shell in a private mount namespace (unshare) and
# names the network's hosts file: the task sees it as /etc/hosts (the host's stays untouched).
if [ -n "${OMNI_HOSTS_FILE:-}" ]; then
  mount --bind "$OMNI_HOSTS_FILE" /etc/hosts || exit 125
fi
# ... and its resolv.conf (the network's DNS address first) as /etc/resolv.conf; without it
# (a host whose /etc/resolv.conf cannot be mounted over) names still come from /etc/hosts.
if [ -n "${OMNI_RESOLV_FILE:-}" ]; then
  mount --bind "$OMNI_RESOLV_FILE" /etc/resolv.conf 2>/dev/null || echo "omni: could not mount the network's resolv.conf over /etc/resolv.conf" >&2
fi
echo ok
# Run the command only once the driver has recorded this wrapper (state.json) and reads the
# pipes: were omnid to die before, nothing would ever find, stop or release this run.
read -r go && [ "$go" = go ] || exit 125
exec </dev/null >/dev/null

# An exclusive task (OMNI_LEASE_FILE set): a watchdog kills the whole group — the command, its
# children, this wrapper — once the time in the lease file (boot-clock centiseconds, see
# node/apps/lease-file.ts) has passed or the file cannot be read. omnid renews it while a quorum
# answers; this is what stops the task on time when omnid is down or frozen.
watchdog=
if [ -n "${OMNI_LEASE_FILE:-}" ]; then
  group=$$
  (
    # Signals meant for the task (stop() signals the group) do not end the watchdog.
    trap '' TERM INT HUP QUIT USR1 USR2
    exec 3>&- 4>&-
    while kill -0 "$group" 2>/dev/null; do
      deadline=
      read -r deadline <"$OMNI_LEASE_FILE" 2>/dev/null
      read -r up _ </proc/uptime
      frac=${up#*.}
      now=$(( ${up%%.*} * 100 + ${frac#0} ))
      case $deadline in ''|*[!0-9]*) deadline=0 ;; esac
      if [ "$now" -ge "$deadline" ]; then
        echo "omni: exclusive lease lapsed (deadline $deadline, now $now): killing the task" >&2
        kill -KILL "-$group"
        exit 0
      fi
      sleep 1
    done
  ) &
  watchdog=$!
fi

# Hard limits (resources.limit: true): the command joins the task's cgroup(s) the driver made
# (OMNI_CGROUP_PROCS: their cgroup.procs files, ':'-separated) in a shell that then becomes the
# command, so everything it forks is counted and this wrapper stays outside (an OOM kill takes
# the command, and the wrapper still records its status).
if [ -n "${OMNI_CGROUP_PROCS:-}" ]; then
  procs=$OMNI_CGROUP_PROCS
  unset OMNI_CGROUP_PROCS
  set -- /bin/sh -c 'set -f; procs=$1; shift; IFS=:; for f in $procs; do echo $$ >"$f" || { echo "omni: cannot join the task cgroup ($f)" >&2; exit 125; }; done; unset IFS; exec "$@"' omni-limits "$procs" "$@"
fi

"$@" </dev/null >"$dir/out.pipe" 2>"$dir/err.pipe" 3>&- 4>&-
status=$?
[ -n "$watchdog" ] && kill -KILL "$watchdog" 2>/dev/null
echo "$status" >"$dir/exit.code"

# What the command wrote last may still sit in the pipes, which vanish with their last open
# descriptor: wait until the driver holds them (opening ack.pipe blocks until it does).
: <"$dir/ack.pipe"
