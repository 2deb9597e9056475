#!/usr/bin/env bash
# Benchmark shardgate against an L4 proxy and single-process CoAP and
# Diameter servers on this machine, in one invocation, and write
# bench/RESULTS.md and bench/latency.png.
#
# usage: bench/run.sh [--quick]
#   --quick   short runs and one repetition, for smoke testing; the report
#             goes to the work directory instead of bench/.
# Environment:
#   FD_TEST_APP   path to a built freeDiameter test_app.fdx; by default it is
#                 built with test/peers/diameter/setup.sh when that exists.
#   BENCH_WORK    work directory (default: a new /tmp/shardgate-bench.*).
#   PEERS_DIR     where the test_app build is kept between runs
#                 (default /tmp/shardgate-bench-peers).
#
# Everything listens on 127.0.0.1 on ports of its own (2xxxx), so the bench
# does not collide with `make run`. Every process started here is stopped by
# its PID on exit; every wait is bounded.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=0
[[ ${1:-} == --quick ]] && QUICK=1
if ((QUICK)); then
  DUR=2 WARM=500ms REPS=1 SWEEP="0.25 0.5 0.9" SWEEP_OTHERS="0.5"
else
  DUR=8 WARM=2s REPS=3 SWEEP="0.1 0.25 0.5 0.75 0.9" SWEEP_OTHERS="0.25 0.5 0.9"
fi
WORK=${BENCH_WORK:-$(mktemp -d /tmp/shardgate-bench.XXXXXX)}
BIN=$WORK/bin
PEERS_DIR=${PEERS_DIR:-/tmp/shardgate-bench-peers}
RES=$WORK/results
mkdir -p "$BIN" "$RES" "$WORK/logs"
INFLIGHT=256    # CoAP and UDP requests outstanding over SOCKETS sockets
SOCKETS=16
DIAM_INFLIGHT=256
DIAM_CONNS=4

pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT
log() { echo "bench: $*" >&2; }

# start NAME CMD...: start a process in the background, remember its PID.
start() {
  local name=$1
  shift
  "$@" > "$WORK/logs/$name.log" 2>&1 &
  pids+=($!)
  eval "PID_${name//-/_}=$!"
}

# wait_udp PORT / wait_http URL: poll for up to 20 s.
wait_udp() {
  for _ in $(seq 200); do ss -Hlun "sport = :$1" | grep -q . && return 0; sleep 0.1; done
  log "nothing listens on UDP port $1 after 20 s"
  return 1
}
wait_http() {
  for _ in $(seq 200); do curl -fsS -o /dev/null --max-time 1 "$1" 2> /dev/null && return 0; sleep 0.1; done
  log "$1 not ready after 20 s"
  return 1
}

# check_ports: stop early, naming the owner, when a bench port is taken.
check_ports() {
  local port busy=0
  for port in 21000 21010 21011 21012 21683 25683; do
    if ss -Hlun "sport = :$port" | grep -q .; then
      log "UDP port $port is in use: $(ss -Hlunp "sport = :$port" | awk '{print $NF}')"
      busy=1
    fi
  done
  for port in 23868 27946 27947 27948 28080 28081 28082 29001 29002; do
    if ss -Hltn "sport = :$port" | grep -q .; then
      log "TCP port $port is in use: $(ss -Hltnp "sport = :$port" | awk '{print $NF}')"
      busy=1
    fi
  done
  ((busy == 0)) || { log "stop what holds these ports (another bench run?) and retry"; exit 1; }
}

install_missing() {
  local need=()
  command -v nginx > /dev/null || need+=(nginx)
  [[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || need+=(libnginx-mod-stream)
  command -v coap-server-notls > /dev/null || need+=(libcoap3-bin)
  command -v freeDiameterd > /dev/null || need+=(freediameter)
  command -v curl > /dev/null || need+=(curl)
  ((${#need[@]} == 0)) && return 0
  if [[ $(id -u) != 0 ]]; then
    log "missing ${need[*]}: install them (apt-get install ${need[*]}) or run as root"
    return 0
  fi
  log "installing ${need[*]}"
  apt-get update -qq > /dev/null || log "apt-get update failed; trying the install with the current lists"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" > /dev/null ||
    log "apt-get install ${need[*]} failed; the scenarios that need them are skipped"
}

build() {
  log "building loadgen, udpecho and report into $BIN"
  (cd "$ROOT" && go build -o "$BIN/" ./bench/cmd/loadgen ./bench/cmd/udpecho ./bench/cmd/sessionmem ./bench/report)
  HAVE_SG=0
  if (cd "$ROOT" && CGO_ENABLED=0 go build -o "$BIN/" ./cmd/gateway ./cmd/worker) 2> "$WORK/logs/build.log"; then
    HAVE_SG=1
  else
    log "shardgate does not build yet (see $WORK/logs/build.log); its scenarios are skipped"
  fi
  FD_TA=${FD_TEST_APP:-}
  # The test_app build is kept between runs in PEERS_DIR.
  if [[ -z $FD_TA && -f $PEERS_DIR/test_app.fdx ]]; then
    FD_TA=$PEERS_DIR/test_app.fdx
  elif [[ -z $FD_TA && -f $ROOT/test/peers/diameter/setup.sh ]]; then
    log "building freeDiameter test_app into $PEERS_DIR"
    if bash "$ROOT/test/peers/diameter/setup.sh" "$PEERS_DIR" > "$WORK/logs/fd-setup.log" 2>&1; then
      FD_TA=$PEERS_DIR/test_app.fdx
    else
      log "test/peers/diameter/setup.sh failed (see $WORK/logs/fd-setup.log)"
    fi
  fi
  if [[ -z $FD_TA || ! -f $FD_TA ]] || ! command -v freeDiameterd > /dev/null || [[ $(id -u) != 0 ]]; then
    log "freeDiameter test_app not available (set FD_TEST_APP or add test/peers/diameter/setup.sh; needs root for a network namespace); freeDiameter scenarios are skipped"
    FD_TA=
  fi
}

start_echo_floor() {
  start udpecho "$BIN/udpecho" -addr 127.0.0.1:21000
  wait_udp 21000
}

start_nginx() {
  command -v nginx > /dev/null || return 1
  start echo-a "$BIN/udpecho" -addr 127.0.0.1:21011 -readers 1
  start echo-b "$BIN/udpecho" -addr 127.0.0.1:21012 -readers 1
  mkdir -p "$WORK/nginx"
  cat > "$WORK/nginx/nginx.conf" << CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
master_process on;
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/logs/nginx-error.log warn;
events { worker_connections 65536; }
stream {
  upstream echo {
    hash \$remote_addr:\$remote_port consistent;
    server 127.0.0.1:21011;
    server 127.0.0.1:21012;
  }
  server {
    listen 127.0.0.1:21010 udp reuseport;
    proxy_pass echo;
    proxy_responses 1;
    proxy_timeout 10s;
  }
}
CONF
  start nginx nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/logs/nginx-error.log"
  wait_udp 21010
  sleep 0.2
  NGINX_WORKERS=$(pgrep -P "$PID_nginx" | awk '{printf "%snginx-w%d=%s", sep, NR, $1; sep = ","}')
}

start_libcoap() {
  command -v coap-server-notls > /dev/null || return 1
  start libcoap coap-server-notls -A 127.0.0.1 -p 21683 -v 0
  wait_udp 21683
}

start_shardgate() {
  ((HAVE_SG)) || return 1
  local common=(--serf-profile local --log-level warn --log-format json)
  start gateway "$BIN/gateway" --name bench-gw --coap-addr 127.0.0.1:25683 \
    --diameter-addr 127.0.0.1:23868 --serf-addr 127.0.0.1:27946 \
    --admin-addr 127.0.0.1:28080 "${common[@]}"
  wait_http http://127.0.0.1:28080/healthz || return 1
  start worker1 "$BIN/worker" --name bench-w1 --link-addr 127.0.0.1:29001 \
    --serf-addr 127.0.0.1:27947 --join 127.0.0.1:27946 --admin-addr 127.0.0.1:28081 \
    --drain-timeout 1s "${common[@]}"
  start worker2 "$BIN/worker" --name bench-w2 --link-addr 127.0.0.1:29002 \
    --serf-addr 127.0.0.1:27948 --join 127.0.0.1:27946 --admin-addr 127.0.0.1:28082 \
    --drain-timeout 1s "${common[@]}"
  # The cluster is ready when the gateway's /debug/cluster lists both workers.
  for _ in $(seq 200); do
    if curl -fsS --max-time 1 http://127.0.0.1:28080/debug/cluster 2> /dev/null |
      grep -q '"bench-w1"' && curl -fsS --max-time 1 http://127.0.0.1:28080/debug/cluster |
      grep -q '"bench-w2"' && curl -fsS -o /dev/null --max-time 1 http://127.0.0.1:28080/readyz; then
      SG_PIDS="gateway=$PID_gateway,worker1=$PID_worker1,worker2=$PID_worker2"
      return 0
    fi
    sleep 0.1
  done
  log "shardgate gateway did not report both workers in /debug/cluster within 20 s"
  return 1
}

# load SCENARIO REP PIDS LOADGEN-ARGS...: one measured loadgen run.
load() {
  local sc=$1 rep=$2 pids=$3
  shift 3
  "$BIN/loadgen" -scenario "$sc" -rep "$rep" -duration "${DUR}s" -warmup "$WARM" \
    -pids "$pids" -out "$RES/$sc-$rep.json" "$@" || log "$sc rep $rep failed"
}

run_rep() {
  local r=$1
  ((ECHO_OK)) && load echo-floor "$r" "udpecho=$PID_udpecho" \
    -mode echo -target 127.0.0.1:21000 -inflight $INFLIGHT -sockets $SOCKETS
  ((NGINX_OK)) && load nginx-udp "$r" "$NGINX_WORKERS,echo-a=$PID_echo_a,echo-b=$PID_echo_b" \
    -mode echo -target 127.0.0.1:21010 -inflight $INFLIGHT -sockets $SOCKETS
  ((LIBCOAP_OK)) && load libcoap "$r" "libcoap=$PID_libcoap" \
    -mode coap -target 127.0.0.1:21683 -inflight $INFLIGHT -sockets $SOCKETS \
    -coap-method get -get-path /time -keys 1
  if ((SG_OK)); then
    load shardgate-coap "$r" "$SG_PIDS" -mode coap -target 127.0.0.1:25683 \
      -inflight $INFLIGHT -sockets $SOCKETS -keys 1024 -coap-method mix
    load shardgate-coap-non "$r" "$SG_PIDS" -mode coap -target 127.0.0.1:25683 \
      -inflight $INFLIGHT -sockets $SOCKETS -keys 1024 -coap-method mix -con=false
    load shardgate-diameter-cc "$r" "$SG_PIDS" -mode diameter -target 127.0.0.1:23868 \
      -diameter-app cc -inflight $DIAM_INFLIGHT -sockets $DIAM_CONNS
    load shardgate-diameter-test "$r" "$SG_PIDS" -mode diameter -target 127.0.0.1:23868 \
      -diameter-app test -inflight $DIAM_INFLIGHT -sockets $DIAM_CONNS
  fi
  if [[ -n $FD_TA ]]; then
    timeout $((DUR * 2 + 90)) unshare -n bash "$ROOT/bench/fd.sh" "$WORK" "$BIN" "$FD_TA" \
      "$DUR" "$WARM" "$DIAM_INFLIGHT" "$r" 2>> "$WORK/logs/fd.log" || log "freeDiameter rep $r failed"
  fi
}

# median_rps SCENARIO: the median closed-loop throughput of a scenario.
median_rps() {
  cat "$RES/$1"-[0-9]*.json 2> /dev/null | grep -oE '"throughput_rps": [0-9.]+' | awk '{print $2}' |
    sort -n | awk '{a[NR] = $1} END {if (NR) printf "%d", a[int((NR + 1) / 2)]; else print 0}'
}

# sweep SCENARIO FRACTIONS PIDS LOADGEN-ARGS...: open-loop runs of a scenario
# at fractions of its median closed-loop rate. The 0.5 point gets every
# repetition because a target is read from it.
sweep() {
  local sc=$1 fractions=$2 pids=$3
  shift 3
  local max f rep reps
  max=$(median_rps "$sc")
  if ((max < 1000)); then
    log "$sc closed-loop rate $max req/s is too low for an open-loop sweep"
    return 0
  fi
  for f in $fractions; do
    reps=1
    [[ $f == 0.5 ]] && reps=$REPS
    for rep in $(seq "$reps"); do
      load "$sc-open-$f" "$rep" "$pids" -rate "$(awk "BEGIN {printf \"%d\", $max * $f}")" \
        -inflight 4096 "$@"
    done
  done
}

sweeps() {
  if ((SG_OK)); then
    sweep shardgate-coap "$SWEEP" "$SG_PIDS" -mode coap -target 127.0.0.1:25683 \
      -sockets $SOCKETS -keys 1024 -coap-method mix
  fi
  # The echo floor at the rate of shardgate's 0.5 point: what this machine and
  # generator reach at that offered load with no work behind the socket.
  local half rep
  half=$(($(median_rps shardgate-coap) / 2))
  if ((ECHO_OK && half >= 500)); then
    for rep in $(seq "$REPS"); do
      load echo-floor-open-ref "$rep" "udpecho=$PID_udpecho" -mode echo -target 127.0.0.1:21000 \
        -rate "$half" -inflight 4096 -sockets $SOCKETS
    done
  fi
  if ((NGINX_OK)); then
    sweep nginx-udp "$SWEEP_OTHERS" "$NGINX_WORKERS,echo-a=$PID_echo_a,echo-b=$PID_echo_b" \
      -mode echo -target 127.0.0.1:21010 -sockets $SOCKETS
  fi
  if ((LIBCOAP_OK)); then
    sweep libcoap "$SWEEP_OTHERS" "libcoap=$PID_libcoap" -mode coap -target 127.0.0.1:21683 \
      -sockets $SOCKETS -coap-method get -get-path /time -keys 1
  fi
}

# session_memory stores 1,000,000 idle devices in the worker's reference
# application and appends the heap bytes per session to the report.
session_memory() {
  local report=$1 json=$RES/session-memory.json
  local n=1000000
  ((QUICK)) && n=100000
  log "measuring the heap of $n idle device sessions"
  "$BIN/sessionmem" -sessions "$n" > "$json" || { log "session memory measurement failed"; return 0; }
  python3 - "$json" >> "$report" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print()
print("## Idle sessions in a worker")
print()
print("`bench/cmd/sessionmem -sessions %d`: the worker's reference application stores %d devices, "
      "each after one telemetry POST of a 6-byte payload, with a 1 h idle expiry." % (r["sessions"], r["sessions"]))
print()
print("| sessions | heap | bytes per session | target: 1,000,000 sessions under 1 GiB |")
print("|---|---|---|---|")
mib = r["heap_bytes"] / 2**20
ok = "yes" if r["bytes_per_session"] * 1_000_000 < 2**30 else "**no**"
print("| %d | %.0f MiB | %.0f | %s |" % (r["sessions"], mib, r["bytes_per_session"], ok))
PY
}

main() {
  local load_before
  load_before=$(cat /proc/loadavg)
  check_ports
  install_missing
  build
  ECHO_OK=0 NGINX_OK=0 LIBCOAP_OK=0 SG_OK=0
  start_echo_floor && ECHO_OK=1
  start_nginx && NGINX_OK=1 || log "nginx scenario skipped"
  start_libcoap && LIBCOAP_OK=1 || log "libcoap scenario skipped"
  start_shardgate && SG_OK=1 || log "shardgate scenarios skipped"
  log "work directory $WORK; $REPS repetition(s) of ${DUR}s after ${WARM} warmup"
  for r in $(seq "$REPS"); do run_rep "$r"; done
  sweeps
  local out=$ROOT/bench
  ((QUICK)) && out=$WORK
  "$BIN/report" -results "$RES" -out "$out" -quick="$QUICK" \
    -command "$(echo "bash bench/run.sh $*" | sed 's/ *$//')" -work "$WORK" -load-before "$load_before" || log "report failed"
  session_memory "$out/RESULTS.md"
  log "results: $out/RESULTS.md, $out/latency.png, raw JSON in $RES"
}

main "$@"
