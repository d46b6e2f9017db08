# The one definition of "dist/ is up to date" (issue 13). Sourced by bin/omni and bin/omnid (their
# fast path starts no process for it: shell builtins only) and run by scripts/build.mjs through sh;
# POSIX sh plus test's -nt (dash, bash and busybox have it).
#
# omni_dist_check ROOT sets omni_stale to why ROOT/dist/ must be rebuilt — a missing output, or the
# first input file modified after the last build started — and to '' when dist/ is current;
# omni_dist_stale ROOT prints the same. Inputs: every file under cli/, node/ and protocol/ down to
# four levels (scripts/build.mjs refuses a deeper one; hidden files are not inputs), the build
# itself, this file, tsconfig.json and node_modules/.package-lock.json (npm rewrites it whenever it
# changes node_modules: the bundles contain the npm packages). A directory's own date counts too (a
# source added, renamed or removed). dist/.stamp carries the time the last build started minus a
# margin, so a file edited while a build runs counts as newer.
omni_dist_check() {
  omni_stale=
  for _omni_out in .stamp omni.cjs omnid.cjs omni.bundle.cjs omnid.bundle.cjs code-cache.cjs process-wrapper.sh lease-watchdog.sh; do
    if [ ! -f "$1/dist/$_omni_out" ]; then
      omni_stale="$1/dist/$_omni_out is missing"
      return 0
    fi
  done
  _omni_lock="$1/node_modules/.package-lock.json"
  [ -f "$_omni_lock" ] || _omni_lock="$1/package.json"
  # the patterns below need globbing, whatever the caller set (bin/omni runs under set -f)
  case $- in *f*) _omni_noglob=1; set +f ;; *) _omni_noglob= ;; esac
  for _omni_in in "$1/cli" "$1/node" "$1/protocol" \
    "$1/cli"/* "$1/cli"/*/* "$1/cli"/*/*/* "$1/cli"/*/*/*/* \
    "$1/node"/* "$1/node"/*/* "$1/node"/*/*/* "$1/node"/*/*/*/* \
    "$1/protocol"/* "$1/protocol"/*/* "$1/protocol"/*/*/* "$1/protocol"/*/*/*/* \
    "$1/scripts/build.mjs" "$1/scripts/dist-inputs.sh" "$1/tsconfig.json" "$_omni_lock"; do
    if [ "$_omni_in" -nt "$1/dist/.stamp" ]; then
      omni_stale="$_omni_in is newer than $1/dist/"
      break
    fi
  done
  [ -z "$_omni_noglob" ] || set -f
}

omni_dist_stale() {
  omni_dist_check "$1"
  [ -z "$omni_stale" ] || echo "$omni_stale"
}
