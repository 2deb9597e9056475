#!/usr/bin/env bash
# One freeDiameter repetition, run by bench/run.sh inside a private network
# namespace (unshare -n): freeDiameter 1.2.1 binds 0.0.0.0 whatever ListenOn
# is set to, and will not start without a non-loopback address, so it gets a
# namespace of its own with lo up and an unconnected veth carrying
# 192.0.2.200/32 (TEST-NET-1, never routed).
#
# usage: fd.sh WORK BIN TEST_APP_FDX DURATION_S WARMUP INFLIGHT REP
# Starts a freeDiameter server with test_app in server mode on 127.0.0.1:3868,
# measures it with loadgen (Test-Requests) and then with a second
# freeDiameter running test_app's benchmark mode, writes JSON results to
# WORK/results, and stops every process it started by PID.
set -euo pipefail
WORK=$1 BIN=$2 TA=$3 DUR=$4 WARM=$5 INFLIGHT=$6 REP=$7
FD=$WORK/fd
RES=$WORK/results
mkdir -p "$FD"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

ip link set lo up
ip link add fdb0 type veth peer name fdb1
ip addr add 192.0.2.200/32 dev fdb0
ip link set fdb0 up

# wait_for FILE REGEX SECONDS: poll a log until REGEX appears.
wait_for() {
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    grep -qE -e "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "fd.sh: timed out after $3 s waiting for /$2/ in $1" >&2
  return 1
}

cat > "$FD/acl.conf" <<'CONF'
ALLOW_IPSEC *.bench.local
CONF
cat > "$FD/ta-server.conf" <<'CONF'
# "benchmark;" stops test_app from printing a line per request.
mode = server;
benchmark;
CONF
cat > "$FD/server.conf" <<CONF
Identity = "fdserver.bench.local";
Realm = "bench.local";
Port = 3868;
SecPort = 0;
No_SCTP;
No_IPv6;
TcTimer = 5;
TwTimer = 30;
LoadExtension = "/usr/lib/freeDiameter/acl_wl.fdx" : "$FD/acl.conf";
LoadExtension = "$TA" : "$FD/ta-server.conf";
CONF
cat > "$FD/ta-client.conf" <<CONF
mode = client;
benchmark ${DUR} ${INFLIGHT};
dest-realm = "bench.local";
dest-host = "fdserver.bench.local";
signal = 10;
CONF
cat > "$FD/client.conf" <<CONF
Identity = "fdclient.bench.local";
Realm = "bench.local";
Port = 30868;
SecPort = 0;
No_SCTP;
No_IPv6;
TcTimer = 5;
TwTimer = 30;
LoadExtension = "$TA" : "$FD/ta-client.conf";
ConnectPeer = "fdserver.bench.local" { ConnectTo = "127.0.0.1"; Port = 3868; No_TLS; };
CONF

freeDiameterd -c "$FD/server.conf" > "$FD/server-$REP.log" 2>&1 &
server=$!
pids+=("$server")
wait_for "$FD/server-$REP.log" 'freeDiameterd daemon initialized' 15
for ((i = 0; i < 100; i++)); do
  ss -Hltn 'sport = :3868' | grep -q . && break
  sleep 0.1
done

# loadgen as the client: the same Test-Requests, measured like the other scenarios.
"$BIN/loadgen" -mode diameter -diameter-app test -target 127.0.0.1:3868 \
  -dest-realm bench.local -inflight "$INFLIGHT" -sockets 1 \
  -duration "${DUR}s" -warmup "$WARM" -pids "fd-server=$server" \
  -scenario freediameter-loadgen -rep "$REP" -out "$RES/freediameter-loadgen-$REP.json" ||
  echo "fd.sh: loadgen against freeDiameter failed (rep $REP)" >&2

# freeDiameter's own benchmark client: one SIGUSR1 runs DUR seconds.
freeDiameterd -c "$FD/client.conf" > "$FD/client-$REP.log" 2>&1 &
client=$!
pids+=("$client")
wait_for "$FD/client-$REP.log" "-> 'STATE_OPEN'" 20
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
s0=$(cpu "$server") c0=$(cpu "$client")
kill -USR1 "$client"
wait_for "$FD/client-$REP.log" 'Test Complete' $((DUR + 30))
s1=$(cpu "$server") c1=$(cpu "$client")
tput=$(grep -m1 -oE 'Throughput: [0-9]+' "$FD/client-$REP.log" | grep -oE '[0-9]+')
avg=$(grep -m1 -oE 'Average: [0-9]+\.[0-9]+' "$FD/client-$REP.log" | grep -oE '[0-9.]+$')
slow=$(grep -m1 -oE 'slowest: [0-9]+\.[0-9]+' "$FD/client-$REP.log" | grep -oE '[0-9.]+$')
errs=$(grep -m1 -oE '[0-9]+ error\(s\) received' "$FD/client-$REP.log" | grep -oE '^[0-9]+')
cat > "$RES/freediameter-bench-$REP.json" <<JSON
{
  "scenario": "freediameter-bench",
  "rep": $REP,
  "mode": "diameter",
  "target": "127.0.0.1:3868",
  "in_flight": $INFLIGHT,
  "sockets": 1,
  "seconds": $DUR,
  "outcomes": {"errors": ${errs:-0}},
  "throughput_rps": ${tput:-0},
  "latency_us": {"mean": $(awk "BEGIN{print ${avg:-0}*1e6}"), "max": $(awk "BEGIN{print ${slow:-0}*1e6}")},
  "cpu_seconds": {"fd-server": $(awk "BEGIN{print ($s1-$s0)/100}"), "fd-client": $(awk "BEGIN{print ($c1-$c0)/100}")},
  "command": "freeDiameterd -c client.conf (test_app: benchmark ${DUR} ${INFLIGHT}), then SIGUSR1"
}
JSON
echo "freediameter-bench rep $REP: ${tput:-0} req/s"
