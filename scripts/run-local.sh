#!/usr/bin/env bash
# Start 1 gateway and 2 workers on loopback and stop them on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
logs=${SHARDGATE_LOGS:-$(mktemp -d /tmp/shardgate-run.XXXXXX)}
common=(--serf-profile local --log-format console)
pids=()

stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping ${pids[*]}"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  echo "logs are in $logs"
}
trap stop INT TERM EXIT

bin/gateway --name gateway-1 --coap-addr 127.0.0.1:5683 --diameter-addr 127.0.0.1:3868 \
  --serf-addr 127.0.0.1:7946 --admin-addr 127.0.0.1:8080 "${common[@]}" >"$logs/gateway-1.log" 2>&1 &
pids+=($!)
for i in 1 2; do
  bin/worker --name "worker-$i" --link-addr "127.0.0.1:900$i" --serf-addr "127.0.0.1:794$((6 + i))" \
    --admin-addr "127.0.0.1:808$i" --join 127.0.0.1:7946 --drain-timeout 1s "${common[@]}" \
    >"$logs/worker-$i.log" 2>&1 &
  pids+=($!)
done

for _ in $(seq 1 100); do
  curl -fsS http://127.0.0.1:8080/readyz >/dev/null 2>&1 && break
  sleep 0.1
done
cat <<TEXT
shardgate is running: gateway-1 (CoAP udp 127.0.0.1:5683, Diameter tcp 127.0.0.1:3868,
admin http://127.0.0.1:8080), worker-1 and worker-2 (admin :8081, :8082). Logs: $logs

Try:
  coap-client-notls -m post -e 21 coap://127.0.0.1/d/dev1/telemetry
  coap-client-notls -m get coap://127.0.0.1/d/dev1/state
  curl -s 'http://127.0.0.1:8080/debug/owner?key=dev1'

Ctrl-C stops all three.
TEXT
wait -n "${pids[@]}" || true
echo "a process exited; see $logs"
