#!/usr/bin/env bash
# Progress lines for long shell commands (images/build.sh), on a terminal only: the step, the
# time since the command began, what is being waited on; "still waiting" every
# HAVRE_PROGRESS_EVERY seconds (default 10) of one wait. Nothing when standard error is not a
# terminal (CI, Ansible, a pipe, a log file). HAVRE_PROGRESS=1 forces the lines on, 0 off.
# The same format as havre/host/progress.py:  LABEL [  12.3s] step: waiting on what
#
#   . scripts/lib/progress.sh
#   havre_progress_start "images/build.sh"
#   havre_step "building havre/hub:0.1.0" "docker build"
#   havre_wait_on "docker build of havre/hub:0.1.0" docker build ...   # runs the command

havre_progress_start() {
  HAVRE_PROGRESS_LABEL="$1"
  HAVRE_PROGRESS_T0="$(date +%s.%N)"
  HAVRE_PROGRESS_STEP=""
  case "${HAVRE_PROGRESS:-}" in
    1) HAVRE_PROGRESS_ON=1 ;;
    0) HAVRE_PROGRESS_ON=0 ;;
    *) if [ -t 2 ]; then HAVRE_PROGRESS_ON=1; else HAVRE_PROGRESS_ON=0; fi ;;
  esac
}

_havre_progress_line() {
  [ "${HAVRE_PROGRESS_ON:-0}" = 1 ] || return 0
  local now
  now="$(date +%s.%N)"
  LC_ALL=C printf '%s [%6.1fs] %s\n' "$HAVRE_PROGRESS_LABEL" \
    "$(echo "$now - $HAVRE_PROGRESS_T0" | LC_ALL=C awk '{ print $1 - $3 }')" "$1" >&2
}

# havre_step WHAT [WAITING_ON]
havre_step() {
  HAVRE_PROGRESS_STEP="$1"
  if [ -n "${2:-}" ]; then _havre_progress_line "$1: waiting on $2"; else _havre_progress_line "$1"; fi
}

# havre_wait_on WHAT COMMAND...: run COMMAND; on a terminal, a "still waiting" line every
# HAVRE_PROGRESS_EVERY seconds while it runs. Returns the command's status.
havre_wait_on() {
  local what="$1" ticker="" status=0
  shift
  if [ "${HAVRE_PROGRESS_ON:-0}" = 1 ]; then
    (
      while sleep "${HAVRE_PROGRESS_EVERY:-10}"; do
        _havre_progress_line "${HAVRE_PROGRESS_STEP:-working}: still waiting on $what"
      done
    ) &
    ticker=$!
  fi
  "$@" || status=$?
  if [ -n "$ticker" ]; then
    kill "$ticker" 2>/dev/null || true
    wait "$ticker" 2>/dev/null || true
  fi
  return "$status"
}

havre_progress_done() {
  _havre_progress_line "${1:-done}"
}
