# The one definition of "dist/ is up to date" (issue 13). Sourced by bin/omni and bin/omnid (no
# extra process on their fast path besides find) and run by scripts/build.mjs through sh; POSIX sh.
#
# omni_dist_stale ROOT prints why ROOT/dist/ must be rebuilt — a missing output, or the first
# input file modified after the last build started — and prints nothing when dist/ is current.
# Inputs: every file under cli/, node/ and protocol/ (the sources, and
# node/apps/drivers/process-wrapper.sh), the build itself, tsconfig.json and
# node_modules/.package-lock.json (npm rewrites it whenever it changes node_modules: the bundles
# contain the npm packages). dist/.stamp carries the time the last build started minus a margin,
# so a file edited while a build runs counts as newer. If find fails, dist/ counts as stale.
omni_dist_stale() {
  for _omni_out in .stamp omni.cjs omnid.cjs omni.bundle.cjs omnid.bundle.cjs process-wrapper.sh lease-watchdog.sh; do
    if [ ! -f "$1/dist/$_omni_out" ]; then
      echo "$1/dist/$_omni_out is missing"
      return 0
    fi
  done
  _omni_lock="$1/node_modules/.package-lock.json"
  [ -f "$_omni_lock" ] || _omni_lock="$1/package.json"
  _omni_newer=$(find "$1/cli" "$1/node" "$1/protocol" "$1/scripts/build.mjs" "$1/scripts/dist-inputs.sh" "$1/tsconfig.json" "$_omni_lock" \
    -type f -newer "$1/dist/.stamp" -print -quit) || { echo "find failed in $1"; return 0; }
  [ -z "$_omni_newer" ] || echo "$_omni_newer is newer than $1/dist/"
}
