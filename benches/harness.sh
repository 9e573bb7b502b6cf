# The bench harness both benches/pgbench.sh and benches/k.sh source: a PostgreSQL with
# pgbench's tables (scale 10) and a plaintext and an encrypted patients table; phigate in
# front of it with analysis and the audit log on (group durability), plus three variants
# (audit off, group, fsync) not yet started; PgBouncer in session mode; and the helpers that
# measure a pgbench run. The caller sets ROUNDS, SECS and CLIENTS first.
# needs: PostgreSQL 15 server binaries, pgbench, psql, pgbouncer (Debian: apt-get install
# postgresql pgbouncer). Run from the repository root.
JOBS=2
ROOT=$(pwd)
for tool in pgbench psql pgbouncer openssl; do
  command -v "$tool" >/dev/null || { echo "benches need $tool (Debian: apt-get install postgresql pgbouncer openssl)" >&2; exit 1; }
done
BIN=${PG_BINDIR:-$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort | tail -1)}
WORK=$(mktemp -d /tmp/phigate-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
# Both proxies accept TLS (one self-signed P-256 certificate); clients use it only where a
# workload asks (SSLMODE=require for `measure`), never by libpq's default `prefer`.
export PGSSLMODE=disable

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
  -c unix_socket_directories="$WORK" -c max_connections="${MAX_CONNECTIONS:-1200}" -c shared_buffers=256MB \
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
  -c "INSERT INTO plain_patients SELECT g, g::text, 'Patient number ' || g, date '1950-01-01' + g FROM generate_series(1, 10000) g" \
  -c "CREATE SEQUENCE plain_ids START 100001" -c "ALTER SEQUENCE plain_ids OWNER TO bench" \
  -c "CREATE SEQUENCE patient_ids START 100001" -c "ALTER SEQUENCE patient_ids OWNER TO bench"

# phigate
PHPORT=$(free_port)
mkdir -p "$WORK/phigate/policies" "$WORK/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" 2>/dev/null
chmod 0644 "$WORK/tls/key.pem"
cp "$WORK/tls/cert.pem" "$WORK/tls/key.pem" "$WORK/phigate/"
chmod 0600 "$WORK/phigate/key.pem"
printf '[roles.app]\nstatements = ["read", "write", "copy", "transaction", "session", "prepare", "maintenance"]\nfunctions = ["nextval"]\n' >"$WORK/phigate/policies/roles.toml"
echo bench-pw | "$PHIGATE" user add bench --role app --policies "$WORK/phigate/policies" >/dev/null
echo bench-pw >"$WORK/phigate/upstream.pw"
cat >"$WORK/phigate/phigate.toml" <<TOML
[listen]
address = "127.0.0.1:$PHPORT"
tls_cert = "cert.pem"
tls_key = "key.pem"
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
client_tls_sslmode = allow
client_tls_cert_file = $WORK/tls/cert.pem
client_tls_key_file = $WORK/tls/key.pem
INI
[ "$(id -u)" = 0 ] && chown -R postgres "$WORK/pgbouncer"
"${AS_PG[@]}" pgbouncer -q "$WORK/pgbouncer/pgbouncer.ini" &
PBPID=$!
PIDS+=($PBPID)
for port in "$PHPORT" "$PBPORT"; do
  for _ in $(seq 300); do pg_isready -q -h 127.0.0.1 -p "$port" 2>/dev/null && break; sleep 0.1; done
  pg_isready -q -h 127.0.0.1 -p "$port" || { echo "no proxy answered on port $port in 30 s (see $WORK)" >&2; exit 1; }
done
# The encrypted table is filled through phigate (COPY FROM STDIN is encrypted in flight).
$PSQL -d bench -Atc "COPY plain_patients TO STDOUT" |
  PGPASSWORD=bench-pw psql -X -q -h 127.0.0.1 -p "$PHPORT" -U bench bench -c "\\copy patients FROM pstdin"

# stat_ticks STAT: user and system CPU ticks in a /proc stat file (a process's or a thread's).
stat_ticks() { awk '{print $14 + $15}' "$1"; }
cpu_ticks() { stat_ticks "/proc/$1/stat"; }
# syncer_ticks PID: the CPU ticks of phigate's audit syncer thread (0 for another process).
syncer_ticks() {
  local comm
  for comm in /proc/"$1"/task/*/comm; do
    [ "$(cat "$comm" 2>/dev/null)" = phigate-audit ] && { stat_ticks "${comm%/comm}/stat"; return; }
  done
  echo 0
}
# machine_ticks: the machine's busy, idle (with I/O wait) and steal ticks, from /proc/stat.
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $5 + $6, $9}' /proc/stat; }
# measure PID LABEL PGBENCH-ARGS...: runs pgbench; sets TPS_OUT, TX_OUT, TICKS_OUT (the
# CPU ticks PID used meanwhile), SYNCER_TICKS_OUT (those of them its audit syncer used)
# and STEAL_OUT (the share of the machine's CPU time the hypervisor gave to other guests
# meanwhile, in %: a run with much of it measured a busy host, not the proxy).
measure() {
  local pid=$1 label=$2 before after out synced busy idle steal
  shift 2
  synced=$(syncer_ticks "$pid")
  before=$(cpu_ticks "$pid")
  read -r busy idle steal <<<"$(machine_ticks)"
  out=$(PGPASSWORD=bench-pw PGSSLMODE=${SSLMODE:-disable} pgbench -c "$CLIENTS" -j "$JOBS" -T "$SECS" -h 127.0.0.1 -U bench "$@" bench 2>&1) ||
    { echo "pgbench ($label) failed:"; echo "$out"; exit 1; }
  after=$(cpu_ticks "$pid")
  STEAL_OUT=$(machine_ticks | awk -v b="$busy" -v i="$idle" -v s="$steal" '{
    all = ($1 - b) + ($2 - i) + ($3 - s); printf "%.0f", (all > 0 ? ($3 - s) * 100 / all : 0) }')
  TPS_OUT=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
  TX_OUT=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
  TICKS_OUT=$((after - before))
  SYNCER_TICKS_OUT=$(($(syncer_ticks "$pid") - synced))
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
