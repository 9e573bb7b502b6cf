#!/usr/bin/env bash
# phigate's memory per idle session: the slope of its RSS between FROM and TO idle client
# sessions (pgbench clients that log in through phigate, run nothing and sleep), with
# analysis and the audit log on. PostgreSQL allows TO + 100 connections for the run.
# usage: benches/idle.sh [from] [to]   (from the repository root; defaults 500 and 2000)
set -euo pipefail
FROM=${1:-500}
TO=${2:-2000}
ROUNDS=1
SECS=1
MAX_CONNECTIONS=$((TO + 100))
# shellcheck source=benches/harness.sh
source "$(dirname "$0")/harness.sh"

rss() { awk '/^VmRSS/ {print $2}' "/proc/$PHPID/status"; }
upstream() {
  $PSQL -d postgres -Atc "select count(*) from pg_stat_activity where application_name like 'phigate:bench%'"
}
printf '\\sleep 600 s\n' >"$WORK/idle.sql"
# opens `n` more idle sessions and waits until `total` are open upstream
open_idle() {
  local n=$1 total=$2
  PGPASSWORD=bench-pw pgbench -n -c "$n" -j 2 -t 1 -f "$WORK/idle.sql" \
    -h 127.0.0.1 -p "$PHPORT" -U bench bench >"$WORK/idle-$total.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 600); do
    [ "$(upstream)" -ge "$total" ] && break
    sleep 0.2
  done
  [ "$(upstream)" -ge "$total" ] || { echo "only $(upstream) of $total sessions opened"; tail -3 "$WORK/idle-$total.log"; exit 1; }
  sleep 2
}
echo "phigate RSS with no session: $(rss) KiB"
open_idle "$FROM" "$FROM"
at_from=$(rss)
echo "with $FROM idle sessions: $at_from KiB"
open_idle $((TO - FROM)) "$TO"
at_to=$(rss)
echo "with $TO idle sessions: $at_to KiB"
awk -v a="$at_from" -v b="$at_to" -v f="$FROM" -v t="$TO" \
  'BEGIN { printf "RSS per idle session (slope from %d to %d): %.1f KiB\n", f, t, (b - a) / (t - f) }'
