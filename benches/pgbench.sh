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
JOBS=2
ROOT=$(pwd)
BIN=${PG_BINDIR:-$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort | tail -1)}
WORK=$(mktemp -d /tmp/phigate-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Servers run as the postgres user when we are root, and die with this script.
AS_PG=(setpriv --pdeathsig=KILL)
[ "$(id -u)" = 0 ] && AS_PG+=(--reuid=postgres --regid=postgres --init-groups)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cargo build --release --quiet
PHIGATE=$ROOT/target/release/phigate

# PostgreSQL
PGPORT=$(free_port)
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
"${AS_PG[@]}" "$BIN/initdb" -D "$WORK/data" -N -A trust -U postgres >/dev/null
cat >"$WORK/data/pg_hba.conf" <<HBA
local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
HBA
"${AS_PG[@]}" "$BIN/postgres" -D "$WORK/data" -p "$PGPORT" -c listen_addresses=127.0.0.1 \
  -c unix_socket_directories="$WORK" -c max_connections=1200 -c shared_buffers=256MB \
  >"$WORK/postgres.log" 2>&1 &
PIDS+=($!)
until pg_isready -q -h 127.0.0.1 -p "$PGPORT"; do sleep 0.1; done
PSQL="psql -X -q -h 127.0.0.1 -p $PGPORT -U postgres"
$PSQL -d postgres -c "CREATE ROLE bench LOGIN PASSWORD 'bench-pw'" -c "CREATE DATABASE bench OWNER bench"
PGPASSWORD=bench-pw pgbench -i -q -s 10 -h 127.0.0.1 -p "$PGPORT" -U bench bench >/dev/null 2>&1
"$PHIGATE" schema | $PSQL -d bench >/dev/null
$PSQL -d bench -c "CREATE TABLE patients (id int PRIMARY KEY, ssn phigate_encrypted, full_name phigate_encrypted, birth_date phigate_encrypted)" \
  -c "CREATE TABLE plain_patients (id int PRIMARY KEY, ssn text, full_name text, birth_date date)" \
  -c "ALTER TABLE patients OWNER TO bench" -c "ALTER TABLE plain_patients OWNER TO bench" \
  -c "INSERT INTO plain_patients SELECT g, 'S-' || lpad(g::text, 9, '0'), 'Patient number ' || g, date '1950-01-01' + g FROM generate_series(1, 10000) g"

# phigate
PHPORT=$(free_port)
mkdir -p "$WORK/phigate/policies"
printf '[roles.app]\nstatements = ["read", "write", "copy", "transaction", "session", "prepare", "maintenance"]\n' >"$WORK/phigate/policies/roles.toml"
echo bench-pw | "$PHIGATE" user add bench --role app --policies "$WORK/phigate/policies" >/dev/null
echo bench-pw >"$WORK/phigate/upstream.pw"
cat >"$WORK/phigate/phigate.toml" <<TOML
[listen]
address = "127.0.0.1:$PHPORT"
[upstream]
address = "127.0.0.1:$PGPORT"
database = "bench"
user = "bench"
password_file = "upstream.pw"
tls = "disable"
TOML
cat >"$WORK/phigate/policies/patients.toml" <<TOML
[table]
name = "public.patients"
[columns.ssn]
type = "text"
encrypt = "deterministic"
read = { app = "plaintext" }
[columns.full_name]
type = "text"
encrypt = "randomized"
read = { app = "plaintext" }
[columns.birth_date]
type = "date"
encrypt = "randomized"
read = { app = "plaintext" }
TOML
"$PHIGATE" keys generate --config "$WORK/phigate/phigate.toml" >/dev/null
# Variants for the audit comparison, each in its own directory (own audit log).
for variant in off group fsync; do
  cp -a "$WORK/phigate" "$WORK/phigate-$variant"
  port=$(free_port)
  sed -i "s/^address = \"127.0.0.1:$PHPORT\"/address = \"127.0.0.1:$port\"/" "$WORK/phigate-$variant/phigate.toml"
  case $variant in
    off) printf '[audit]\nenabled = false\n' ;;
    *) printf '[audit]\ndurability = "%s"\n' "$variant" ;;
  esac >>"$WORK/phigate-$variant/phigate.toml"
  echo "$port" >"$WORK/phigate-$variant/port"
done
RUST_LOG=warn "$PHIGATE" serve --config "$WORK/phigate/phigate.toml" 2>"$WORK/phigate.log" &
PHPID=$!
PIDS+=($PHPID)

# PgBouncer, session mode
PBPORT=$(free_port)
mkdir -p "$WORK/pgbouncer"
SCRAM=$($PSQL -d postgres -Atc "select rolpassword from pg_authid where rolname = 'bench'")
echo "\"bench\" \"$SCRAM\"" >"$WORK/pgbouncer/users.txt"
cat >"$WORK/pgbouncer/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PGPORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PBPORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/pgbouncer/users.txt
pool_mode = session
max_client_conn = 2000
default_pool_size = 1100
logfile = $WORK/pgbouncer/pgbouncer.log
INI
[ "$(id -u)" = 0 ] && chown -R postgres "$WORK/pgbouncer"
"${AS_PG[@]}" pgbouncer -q "$WORK/pgbouncer/pgbouncer.ini" &
PBPID=$!
PIDS+=($PBPID)
for port in "$PHPORT" "$PBPORT"; do
  until pg_isready -q -h 127.0.0.1 -p "$port" 2>/dev/null; do sleep 0.1; done
done
# The encrypted table is filled through phigate (COPY FROM STDIN is encrypted in flight).
$PSQL -d bench -Atc "COPY plain_patients TO STDOUT" |
  PGPASSWORD=bench-pw psql -X -q -h 127.0.0.1 -p "$PHPORT" -U bench bench -c "\\copy patients FROM pstdin"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# measure PID LABEL PGBENCH-ARGS...: runs pgbench; sets TPS_OUT, TX_OUT and TICKS_OUT (the
# CPU ticks PID used meanwhile).
measure() {
  local pid=$1 label=$2 before after out
  shift 2
  before=$(cpu_ticks "$pid")
  out=$(PGPASSWORD=bench-pw pgbench -c "$CLIENTS" -j "$JOBS" -T "$SECS" -h 127.0.0.1 -U bench "$@" bench 2>&1) ||
    { echo "pgbench ($label) failed:"; echo "$out"; exit 1; }
  after=$(cpu_ticks "$pid")
  TPS_OUT=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
  TX_OUT=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
  TICKS_OUT=$((after - before))
}
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# medians_of ARRAY MODE NAME...: the median TPS of each NAME (ARRAY[MODE,NAME] holds a run's
# TPS per round), on one line.
medians_of() {
  local -n runs=$1
  local mode=$2 name
  shift 2
  for name in "$@"; do echo "${runs[$mode,$name]}" | median; done | xargs
}
# per_statement LABEL TICKS STATEMENTS: prints CPU microseconds per statement.
per_statement() {
  awk -v w="$1" -v t="$2" -v hz="$(getconf CLK_TCK)" -v n="$3" 'BEGIN {
    printf "  %s CPU per statement: %.1f us\n", w, t / hz * 1e6 / n }'
}
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
