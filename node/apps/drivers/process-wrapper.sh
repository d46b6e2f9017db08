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
echo ok
# Run the command only once the driver has recorded this wrapper (state.json) and reads the
# pipes: were omnid to die before, nothing would ever find, stop or release this run.
read -r go && [ "$go" = go ] || exit 125
exec </dev/null >/dev/null

"$@" </dev/null >"$dir/out.pipe" 2>"$dir/err.pipe" 3>&- 4>&-
echo "$?" >"$dir/exit.code"

# What the command wrote last may still sit in the pipes, which vanish with their last open
# descriptor: wait until the driver holds them (opening ack.pipe blocks until it does).
: <"$dir/ack.pipe"
