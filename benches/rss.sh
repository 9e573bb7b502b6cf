#!/usr/bin/env bash
# phigate's memory over many statements: pgbench -S (prepared, CLIENTS clients) through
# phigate with analysis and the audit log on, for STATEMENTS statements in all, sampling
# phigate's RSS every 10 s. Flat means no growth per statement.
# usage: benches/rss.sh [statements] [clients]   (from the repository root)
set -euo pipefail
STATEMENTS=${1:-10000000}
CLIENTS=${2:-8}
ROUNDS=1
SECS=1
# shellcheck source=benches/harness.sh
source "$(dirname "$0")/harness.sh"

rss() { awk '/^VmRSS/ {print $2}' "/proc/$PHPID/status"; }
echo "seconds statements_so_far rss_kib"
PGPASSWORD=bench-pw pgbench -n -S -M prepared -c "$CLIENTS" -j "$JOBS" \
  -t $((STATEMENTS / CLIENTS)) -h 127.0.0.1 -p "$PHPORT" -U bench bench >"$WORK/pgbench.out" 2>&1 &
BENCH=$!
start=$(date +%s)
while kill -0 "$BENCH" 2>/dev/null; do
  done_so_far=$(PGPASSWORD=bench-pw psql -X -Atq -h 127.0.0.1 -p "$PGPORT" -U postgres -d bench \
    -c "select xact_commit from pg_stat_database where datname = 'bench'" 2>/dev/null || echo '?')
  echo "$(( $(date +%s) - start )) $done_so_far $(rss)"
  sleep 10
done
wait "$BENCH" || { cat "$WORK/pgbench.out"; exit 1; }
grep -E "^(number of transactions actually processed|tps)" "$WORK/pgbench.out"
echo "final rss_kib $(rss)"
