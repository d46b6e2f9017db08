#!/usr/bin/env bash
# Forge's runtime base images, made offline from this host's own runtimes (no registry, no
# internet): a root filesystem with a static busybox (/bin/sh and the usual tools, httpd), plus
#   node    this host's `node` (or $NODE) and npm, with the shared libraries they load
#   python  this host's `python3` (or $PYTHON): its interpreter, standard library (tests, idle,
#           tkinter, ensurepip left out), pip (site-packages holds nothing else: dependencies
#           live in /app/.deps) and shared libraries
#   static  busybox alone (httpd serves /app)
# Each tree is cached under $OMNI_FORGE_BASE_CACHE (default ~/.cache/omni/forge-base), keyed by
# the runtime's version: a second run reuses it. With --import it is imported into the cluster's
# registry as omni/node:24 (the major of the node used), omni/python:3, omni/static:1 by
#   ${OMNI:-bin/omni} images import-rootfs DIR REPO:TAG   (OMNI_ADDR/--addr and the token as usual)
# and the same tree gives the same digest (the layer is reproducible).
#
#   scripts/forge-base.sh [node|python|static|all]... [--import] [-- extra omni flags]
#
# Without busybox-static: apt-get install -y busybox-static. Another way to a base (a Debian
# userland): debootstrap --variant=minbase bookworm DIR http://your-mirror, then
# omni images import-rootfs DIR omni/debian:12 (needs a reachable Debian mirror).
set -euo pipefail

say() { echo "forge-base: $*" >&2; }
die() { say "error: $*"; exit 1; }

CACHE=${OMNI_FORGE_BASE_CACHE:-${HOME:-/root}/.cache/omni/forge-base}
BUSYBOX=${BUSYBOX:-/bin/busybox}
OMNI=${OMNI:-$(cd "$(dirname "$0")/.." && pwd)/bin/omni}

whats=()
import=0
extra=()
while (($#)); do
  case $1 in
    node|python|static|all) whats+=("$1") ;;
    --import) import=1 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument $1 (usage: forge-base.sh [node|python|static|all] [--import] [-- omni flags])" ;;
  esac
  shift
done

((${#whats[@]})) || whats=(all)
want() { local w; for w in "${whats[@]}"; do [[ $w == "$1" || $w == all ]] && return 0; done; return 1; }

[[ -x $BUSYBOX ]] || die "no static busybox at $BUSYBOX (apt-get install -y busybox-static, or BUSYBOX=PATH)"
file -b "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' || ldd "$BUSYBOX" 2>&1 | grep -q 'not a dynamic' || die "$BUSYBOX is not statically linked"

# The busybox userland: /bin/busybox and relative links for each applet, /etc/passwd, /tmp, /app.
skeleton() {
  local r=$1
  mkdir -p "$r/bin" "$r/etc" "$r/tmp" "$r/app" "$r/usr/local/bin" "$r/usr/bin"
  chmod 1777 "$r/tmp"
  cp "$BUSYBOX" "$r/bin/busybox"
  local a
  for a in $("$BUSYBOX" --list); do [[ $a == busybox ]] || ln -sf busybox "$r/bin/$a"; done
  ln -sf ../../bin/env "$r/usr/bin/env"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
}

# Copies the shared libraries a binary loads (ldd) into the tree, at the same paths.
libs() {
  local r=$1 bin=$2 lib
  for lib in $(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*' | sort -u); do
    [[ -e $lib ]] || continue
    mkdir -p "$r$(dirname "$lib")"
    cp -L "$lib" "$r$lib"
  done
}

# Bumped when what goes into a tree changes (a cached tree of an older recipe is not reused).
readonly RECIPE=2

# Makes (or reuses) the tree NAME-KEY; prints its path.
tree() {
  local name=$1 key=$2 make=$3
  local dir="$CACHE/$name-$key-r$RECIPE"
  if [[ -f $dir/.done ]]; then say "$name: cached $dir/rootfs"; echo "$dir/rootfs"; return; fi
  rm -rf "$dir" && mkdir -p "$dir"
  say "$name: making $dir/rootfs"
  skeleton "$dir/rootfs"
  "$make" "$dir/rootfs"
  touch "$dir/.done"
  echo "$dir/rootfs"
}

NODE_BIN=$(readlink -f "${NODE:-$(command -v node || true)}" 2>/dev/null || true)
make_node() {
  local r=$1
  cp "$NODE_BIN" "$r/usr/local/bin/node"
  libs "$r" "$NODE_BIN"
  # npm: the tree installed beside this node (lib/node_modules/npm)
  local npm_dir
  npm_dir=$(dirname "$(dirname "$NODE_BIN")")/lib/node_modules/npm
  [[ -d $npm_dir ]] || npm_dir=$(dirname "$(readlink -f "$(command -v npm)")")/..
  if [[ -d $npm_dir ]]; then
    mkdir -p "$r/usr/local/lib/node_modules"
    cp -a "$npm_dir" "$r/usr/local/lib/node_modules/npm"
    ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$r/usr/local/bin/npm"
    ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$r/usr/local/bin/npx"
  else
    say "node: no npm found beside $NODE_BIN; the image has node only"
  fi
}

PY_BIN=$(readlink -f "${PYTHON:-$(command -v python3 || true)}" 2>/dev/null || true)
# pyenv shims are scripts: ask the interpreter where it lives
if [[ -n $PY_BIN ]] && ! file -b "$PY_BIN" 2>/dev/null | grep -q ELF; then PY_BIN=$(python3 -c 'import sys; print(sys.executable)'); PY_BIN=$(readlink -f "$PY_BIN"); fi
make_python() {
  local r=$1 prefix ver
  prefix=$("$PY_BIN" -c 'import sys; print(sys.base_prefix)')
  ver=$("$PY_BIN" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  mkdir -p "$r$prefix/bin" "$r$prefix/lib"
  cp "$PY_BIN" "$r$prefix/bin/python$ver"
  ln -sf "python$ver" "$r$prefix/bin/python3"
  ln -sf "$prefix/bin/python3" "$r/usr/local/bin/python3"
  ln -sf "$prefix/bin/python3" "$r/usr/local/bin/python"
  libs "$r" "$PY_BIN"
  # The standard library without tests, IDLE, tkinter and caches.
  (cd "$prefix/lib" && tar -c --exclude="python$ver/test" --exclude="python$ver/idlelib" --exclude="python$ver/tkinter" \
    --exclude="python$ver/turtledemo" --exclude='__pycache__' --exclude="python$ver/ensurepip" --exclude="python$ver/lib2to3/tests" "python$ver") | tar -x -C "$r$prefix/lib"
  # site-packages: pip only (the dependency step runs it; the app's packages live in /app/.deps)
  find "$r$prefix/lib/python$ver/site-packages" -mindepth 1 -maxdepth 1 ! -name 'pip' ! -name 'pip-*' -exec rm -rf {} +
  local so
  for so in "$prefix"/lib/libpython*.so*; do [[ -e $so ]] && cp -a "$so" "$r$prefix/lib/"; done
  for so in "$r$prefix/lib/python$ver/lib-dynload/"*.so; do libs "$r" "$so"; done
}

make_static() { :; }

run_import() {
  local dir=$1 ref=$2
  ((import)) || { echo "$ref $dir"; return; }
  "$OMNI" images import-rootfs "$dir" "$ref" "${extra[@]}"
}

if want node; then
  [[ -x $NODE_BIN ]] || die "no node on PATH (or NODE=PATH)"
  nver=$("$NODE_BIN" --version)
  run_import "$(tree node "${nver#v}" make_node)" "omni/node:$(echo "${nver#v}" | cut -d. -f1)"
fi
if want python; then
  [[ -x $PY_BIN ]] || die "no python3 on PATH (or PYTHON=PATH)"
  pver=$("$PY_BIN" -c 'import sys; print(".".join(map(str, sys.version_info[:3])))')
  run_import "$(tree python "$pver" make_python)" "omni/python:3"
fi
if want static; then
  bver=$("$BUSYBOX" 2>&1 | head -1 | grep -o 'v[0-9][0-9.]*' | head -1 || true)
  run_import "$(tree static "$bver" make_static)" "omni/static:1"
fi
