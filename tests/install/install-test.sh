#!/usr/bin/env bash
# `meson install` puts every part where a user and systemd look for it, and the installed
# command finds its chains and built-in plugins there. Installs the build tree into a temporary
# DESTDIR (no rebuild), then checks the layout, the systemd user unit and the config search
# path. Fails with the first thing that is missing or wrong.
#   install-test.sh BUILD_DIR PREFIX LIBDIR
set -euo pipefail
build=$1 prefix=$2 libdir=$3
dest=$(mktemp -d /tmp/sandpipe-install-test.XXXXXX)
trap 'rm -rf "$dest"' EXIT
fails=0
check() { # DESCRIPTION CMD…: runs CMD, counts a failure with DESCRIPTION
  local what=$1
  shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what" >&2; fails=$((fails + 1)); fi
}

meson install -C "$build" --destdir "$dest" --no-rebuild --quiet >"$dest.log" 2>&1 ||
  { cat "$dest.log" >&2; rm -f "$dest.log"; echo "FAIL: meson install" >&2; exit 1; }
rm -f "$dest.log"
root=$dest$prefix
[[ $libdir = /* ]] || libdir=$prefix/$libdir
lib=$dest$libdir

check "bin/sandpipe is executable" test -x "$root/bin/sandpipe"
check "the sandbox binary is in libexec" test -x "$root/libexec/sandpipe-sandbox"
check "the PID namespace's init beside it" test -x "$root/libexec/sandpipe-pid-init"
for p in gain biquad delay; do
  check "built-in $p.so in LIBDIR/sandpipe/plugins" test -f "$lib/sandpipe/plugins/$p.so"
done
check "the Python SDK" test -f "$root/share/sandpipe/python/sandpipe/__init__.py"
check "the earlier API's base_plugin" test -f "$root/share/sandpipe/python/base_plugin.py"
check "example Python plugins" test -f "$root/share/sandpipe/examples/python/gain.py"
check "example chains" test -f "$root/share/sandpipe/examples/gain-lowpass.conf"
check "the docs" test -f "$root/share/doc/sandpipe/config.md"
unit=$root/lib/systemd/user/sandpipe@.service
check "the systemd user unit" test -f "$unit"
check "the unit runs the installed binary on its instance name" grep -qx "ExecStart=$prefix/bin/sandpipe run %i" "$unit"
check "the unit does not restart a broken config" grep -qx "RestartPreventExitStatus=2" "$unit"
check "no unit placeholder left" bash -c "! grep -q '@[A-Z_]*@' '$unit'"

# The installed command: --help, and a chain found by name in $XDG_CONFIG_HOME/sandpipe (its
# built-in loaded by `check`; SANDPIPE_PLUGIN_PATH stands in for the baked LIBDIR, which the
# DESTDIR moved).
check "sandpipe --help names every command" bash -c "'$root/bin/sandpipe' --help | grep -q 'reload' && '$root/bin/sandpipe' --help | grep -q 'render'"
config_home=$dest/config
mkdir -p "$config_home/sandpipe"
cat >"$config_home/sandpipe/fx.conf" <<'CONF'
node.name = "installed-fx"
plugins = [ { name = "trim" path = "builtin:gain" params = { gain = 0.5 } } ]
CONF
out=$(XDG_CONFIG_HOME=$config_home SANDPIPE_PLUGIN_PATH=$lib/sandpipe/plugins "$root/bin/sandpipe" check fx 2>&1) || true
check "sandpipe check NAME reads \$XDG_CONFIG_HOME/sandpipe/NAME.conf" grep -q "trim" <<<"$out"
out=$(XDG_CONFIG_HOME=$config_home "$root/bin/sandpipe" check no-such-chain 2>&1) && st=0 || st=$?
check "an unknown chain name is exit 2 naming where it looked" \
  bash -c "[[ $st -eq 2 ]] && grep -q 'no chain \"no-such-chain\".*$config_home/sandpipe' <<<'$out'"

if ((fails)); then
  echo "install: $fails check(s) failed" >&2
  exit 1
fi
echo "install: every check passed"
