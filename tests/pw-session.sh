#!/usr/bin/env bash
# A private, headless PipeWire graph for tests and demos: its own XDG_RUNTIME_DIR, a PipeWire
# daemon, WirePlumber on a private D-Bus session, and a null audio sink as the driver.
#
#   pw-session.sh start [OPTIONS]        start one, print `export VAR=...` lines to eval
#   pw-session.sh stop DIR               stop the session whose directory is DIR
#   pw-session.sh run [OPTIONS] -- CMD…  run CMD inside a fresh session, always torn down;
#                                        exits with CMD's status
#
# OPTIONS
#   --rate HZ        force the graph rate (settings metadata clock.force-rate)
#   --quantum N      force the quantum (settings metadata clock.force-quantum)
#   --sink NAME      node.name of the null sink (default sandpipe-test-sink)
#   --timeout S      how long to wait for each readiness condition (default 20)
#   --watch PID      stop the session by itself once PID has exited (a crashed test runner
#                    then leaves no daemons behind)
#
# Everything a session starts is recorded by PID in DIR/pids and stopped by those PIDs only.
# Logs are in DIR/*.log.
set -euo pipefail

rate=""
quantum=""
sink="sandpipe-test-sink"
timeout_s=20
watch_pid=""

die() {
  echo "pw-session: $*" >&2
  exit 1
}

usage() {
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# poll TIMEOUT CMD…: runs CMD until it succeeds or TIMEOUT seconds have passed.
poll() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}

# The PIDs of a session, newest first: stopping goes in reverse start order.
session_pids() {
  [[ -f "$1/pids" ]] && tac "$1/pids" || true
}

stop_session() {
  local dir=$1 pid name
  [[ -d "$dir" ]] || return 0
  while read -r pid name; do
    [[ -n "$pid" ]] || continue
    kill -TERM "$pid" 2>/dev/null || continue
    # Wait for it to go, bounded; then make sure.
    if ! poll 5 bash -c "! kill -0 $pid"; then
      echo "pw-session: $name ($pid) ignored SIGTERM, killing" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done < <(session_pids "$dir")
  rm -f "$dir/pids"
  # Keep logs when asked (CI artifacts); the runtime dir's sockets go either way.
  if [[ -n "${PW_SESSION_KEEP_LOGS:-}" ]]; then
    rm -rf "$dir/run"
  else
    rm -rf "$dir"
  fi
}

# record DIR NAME PID
record() { echo "$3 $2" >>"$1/pids"; }

node_present() {
  pw-dump 2>/dev/null | grep -q "\"node.name\": \"$1\""
}

client_present() {
  pw-dump 2>/dev/null | grep -q "\"application.name\": \"$1\""
}

start_session() {
  command -v pipewire >/dev/null || die "pipewire not installed"
  command -v wireplumber >/dev/null || die "wireplumber not installed"
  command -v dbus-run-session >/dev/null || die "dbus-run-session not installed (package dbus)"

  local dir
  dir=$(mktemp -d "${TMPDIR:-/tmp}/sandpipe-pw.XXXXXX")
  mkdir -m 700 "$dir/run" "$dir/state" "$dir/config"
  export XDG_RUNTIME_DIR="$dir/run" PIPEWIRE_RUNTIME_DIR="$dir/run"
  # WirePlumber keeps default-node state here: private, so runs don't leak into each other.
  export XDG_STATE_HOME="$dir/state" XDG_CONFIG_HOME="$dir/config"
  unset PIPEWIRE_REMOTE PULSE_SERVER DBUS_SESSION_BUS_ADDRESS

  # If anything below fails (die exits), take down what was started.
  trap 'stop_session "$dir"' EXIT

  pipewire </dev/null >"$dir/pipewire.log" 2>&1 &
  record "$dir" pipewire $!
  poll "$timeout_s" pw-cli info 0 || die "pipewire did not come up (see $dir/pipewire.log)"

  # dbus-run-session owns a private bus and ends it when its child ends; recording the
  # child's own PID (exec keeps it) lets stop signal WirePlumber directly.
  dbus-run-session -- bash -c 'echo $$ >"$1"; exec wireplumber' _ "$dir/wireplumber.pid" \
    </dev/null >"$dir/wireplumber.log" 2>&1 &
  record "$dir" dbus-run-session $!
  poll "$timeout_s" test -s "$dir/wireplumber.pid" || die "wireplumber did not start"
  record "$dir" wireplumber "$(cat "$dir/wireplumber.pid")"
  poll "$timeout_s" client_present WirePlumber || die "wireplumber not ready (see $dir/wireplumber.log)"

  pw-cli create-node adapter "{ factory.name=support.null-audio-sink node.name=$sink \
    node.description=\"Sandpipe test sink\" media.class=Audio/Sink audio.position=[FL FR] \
    object.linger=true monitor.channel-volumes=true }" >/dev/null || die "cannot create the null sink"
  poll "$timeout_s" node_present "$sink" || die "null sink $sink did not appear"

  if [[ -n "$rate" ]]; then
    pw-metadata -n settings 0 clock.force-rate "$rate" >/dev/null || die "cannot force rate $rate"
  fi
  if [[ -n "$quantum" ]]; then
    pw-metadata -n settings 0 clock.force-quantum "$quantum" >/dev/null || die "cannot force quantum $quantum"
  fi

  if [[ -n "$watch_pid" ]]; then
    # Detached watchdog: checks once a second whether the watched process is gone.
    setsid bash -c 'while kill -0 "$1" 2>/dev/null && [[ -f "$2/pids" ]]; do sleep 1; done
                    [[ -f "$2/pids" ]] && exec "$3" stop "$2"' _ "$watch_pid" "$dir" "$(realpath "$0")" \
      </dev/null >/dev/null 2>&1 &
  fi
  trap - EXIT

  printf 'export PW_SESSION_DIR=%q\n' "$dir"
  printf 'export XDG_RUNTIME_DIR=%q\n' "$dir/run"
  printf 'export PIPEWIRE_RUNTIME_DIR=%q\n' "$dir/run"
  printf 'export PW_SESSION_SINK=%q\n' "$sink"
}

parse_options() {
  while (($#)); do
    case $1 in
      --rate) rate=${2:?}; shift 2 ;;
      --quantum) quantum=${2:?}; shift 2 ;;
      --sink) sink=${2:?}; shift 2 ;;
      --timeout) timeout_s=${2:?}; shift 2 ;;
      --watch) watch_pid=${2:?}; shift 2 ;;
      --) shift; rest=("$@"); return ;;
      *) die "unknown option $1" ;;
    esac
  done
  rest=()
}

cmd=${1:-}
[[ -n "$cmd" ]] || usage
shift
rest=()
case $cmd in
  start)
    parse_options "$@"
    start_session
    ;;
  stop)
    [[ $# -eq 1 ]] || usage
    stop_session "$1"
    ;;
  run)
    parse_options "$@"
    ((${#rest[@]})) || die "run needs -- CMD..."
    env_lines=$(start_session)
    eval "$env_lines"
    trap 'stop_session "$PW_SESSION_DIR"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    status=0
    "${rest[@]}" || status=$?
    exit "$status"
    ;;
  -h | --help) usage ;;
  *) usage ;;
esac
