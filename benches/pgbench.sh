#!/usr/bin/env bash
# pgbench harness: the same PostgreSQL measured directly, through phigate and through
# PgBouncer (session mode), alternating target by target in every round so that all three
# see the same machine state. Prints TPS per round, medians and ratios, phigate's CPU time
# per statement, and phigate's memory with 1,000 idle client sessions. phigate runs with a
# protected table declared, so every statement goes through analysis.
# Then: the same SELECT through phigate on a plaintext table and on an encrypted one,
# alternating, for phigate's extra CPU per encrypted statement. Then: phigate with the
# audit log off, in group mode and in fsync mode, alternating.
#
# usage: benches/pgbench.sh [rounds] [seconds-per-run] [clients]
# needs: PostgreSQL 15 server binaries, pgbench, psql, pgbouncer (Debian: apt-get install
# postgresql pgbouncer). Run from the repository root.
set -euo pipefail

ROUNDS=${1:-3}
SECS=${2:-10}
CLIENTS=${3:-8}
# shellcheck source=benches/harness.sh
source "$(dirname "$0")/harness.sh"

declare -A TPS TICKS TXS
echo "round mode target tps"
for round in $(seq 1 "$ROUNDS"); do
  for mode in simple prepared; do
    for target in direct phigate pgbouncer; do
      case $target in direct) port=$PGPORT ;; phigate) port=$PHPORT ;; pgbouncer) port=$PBPORT ;; esac
      case $target in phigate) pid=$PHPID ;; pgbouncer) pid=$PBPID ;; *) pid=$$ ;; esac
      measure "$pid" "$target" -S -M "$mode" -p "$port"
      TICKS[$target]=$(( ${TICKS[$target]:-0} + TICKS_OUT ))
      TXS[$target]=$(( ${TXS[$target]:-0} + TX_OUT ))
      TPS[$mode,$target]="${TPS[$mode,$target]:-} $TPS_OUT"
      echo "$round $mode $target $TPS_OUT"
    done
  done
done

echo
echo "medians over $ROUNDS rounds, pgbench -S, $CLIENTS clients, ${SECS}s per run:"
for mode in simple prepared; do
  read -r d p b <<<"$(medians_of TPS "$mode" direct phigate pgbouncer)"
  awk -v m="$mode" -v d="$d" -v p="$p" -v b="$b" 'BEGIN {
    printf "  %-8s direct %9.0f  phigate %9.0f  pgbouncer %9.0f   phigate/pgbouncer %.2f  phigate/direct %.2f\n", m, d, p, b, p/b, p/d }'
done
HZ=$(getconf CLK_TCK)
for target in phigate pgbouncer; do
  per_statement "$target (user+sys over all its runs)" "${TICKS[$target]}" "${TXS[$target]}"
done

# 1,000 idle sessions: pgbench clients that connect and then sleep client-side.
printf '\\sleep 30 s\n' >"$WORK/idle.sql"
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
base=$(rss "$PHPID")
start=$(date +%s.%N)
PGPASSWORD=bench-pw pgbench -n -c 1000 -j 2 -t 1 -f "$WORK/idle.sql" -h 127.0.0.1 -p "$PHPORT" -U bench bench >"$WORK/idle.log" 2>&1 &
IDLE=$!
sessions=0
for _ in $(seq 1 250); do
  sessions=$($PSQL -d postgres -Atc "select count(*) from pg_stat_activity where application_name like 'phigate:bench%'")
  [ "$sessions" -ge 1000 ] && break
  kill -0 $IDLE 2>/dev/null || break
  sleep 0.1
done
opened=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')
sleep 1
held=$(rss "$PHPID")
kill $IDLE 2>/dev/null || true
wait $IDLE 2>/dev/null || true
[ "$sessions" -ge 1000 ] || { echo "idle sessions did not open:"; tail -5 "$WORK/idle.log"; }
echo "  1,000 idle sessions: $sessions upstream sessions open after ${opened}s, phigate RSS $((held / 1024)) MiB (before: $((base / 1024)) MiB)"

# Encrypted against plaintext, both through phigate: phigate's CPU per statement.
printf '\\set id random(1, 10000)\nSELECT id, ssn, full_name, birth_date FROM plain_patients WHERE id = :id;\n' >"$WORK/plain.sql"
printf '\\set id random(1, 10000)\nSELECT id, ssn, full_name, birth_date FROM patients WHERE id = :id;\n' >"$WORK/enc.sql"
declare -A ETICKS ETXS
for round in $(seq 1 "$ROUNDS"); do
  for mode in simple prepared; do
    for table in plain enc; do
      measure "$PHPID" "$table" -n -M "$mode" -f "$WORK/$table.sql" -p "$PHPORT"
      ETICKS[$mode,$table]=$(( ${ETICKS[$mode,$table]:-0} + TICKS_OUT ))
      ETXS[$mode,$table]=$(( ${ETXS[$mode,$table]:-0} + TX_OUT ))
    done
  done
done
echo "  SELECT of 4 columns by id through phigate, plaintext table vs 3 encrypted columns:"
for mode in simple prepared; do
  awk -v m="$mode" -v hz="$HZ" -v pt="${ETICKS[$mode,plain]}" -v pn="${ETXS[$mode,plain]}" \
      -v et="${ETICKS[$mode,enc]}" -v en="${ETXS[$mode,enc]}" 'BEGIN {
    p = pt / hz * 1e6 / pn; e = et / hz * 1e6 / en
    printf "    %-8s phigate CPU per statement: plaintext %.1f us, encrypted %.1f us, difference %.1f us (%d vs %d statements)\n", m, p, e, e - p, pn, en }'
done

# The audit log's cost: pgbench -S through phigate with the audit log off, in group mode
# and in fsync mode (three instances, alternating).
declare -A APORT APID
for variant in off group fsync; do
  APORT[$variant]=$(cat "$WORK/phigate-$variant/port")
  RUST_LOG=warn "$PHIGATE" serve --config "$WORK/phigate-$variant/phigate.toml" 2>"$WORK/phigate-$variant.log" &
  APID[$variant]=$!
  PIDS+=($!)
done
for variant in off group fsync; do
  until pg_isready -q -h 127.0.0.1 -p "${APORT[$variant]}" 2>/dev/null; do sleep 0.1; done
done
declare -A ATPS ATICKS ATXS
for round in $(seq 1 "$ROUNDS"); do
  for mode in simple prepared; do
    for variant in off group fsync; do
      measure "${APID[$variant]}" "audit $variant" -S -M "$mode" -p "${APORT[$variant]}"
      ATPS[$mode,$variant]="${ATPS[$mode,$variant]:-} $TPS_OUT"
      ATICKS[$variant]=$(( ${ATICKS[$variant]:-0} + TICKS_OUT ))
      ATXS[$variant]=$(( ${ATXS[$variant]:-0} + TX_OUT ))
    done
  done
done
echo "  audit log: pgbench -S through phigate, medians (TPS) and phigate CPU per statement:"
for mode in simple prepared; do
  read -r o g f <<<"$(medians_of ATPS "$mode" off group fsync)"
  awk -v m="$mode" -v o="$o" -v g="$g" -v f="$f" 'BEGIN {
    printf "    %-8s off %8.0f  group %8.0f (%.2f)  fsync %8.0f (%.2f)\n", m, o, g, g/o, f, f/o }'
done
for variant in off group fsync; do
  per_statement "  audit $variant" "${ATICKS[$variant]}" "${ATXS[$variant]}"
done
