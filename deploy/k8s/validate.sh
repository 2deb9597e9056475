#!/usr/bin/env bash
# Validate the shardgate Kubernetes manifests against a real kube-apiserver.
#
# The script builds etcd, kube-apiserver and kubectl from their Go modules into a
# cache directory outside the repository, starts etcd and the API server on
# 127.0.0.1, and then:
#   1. renders every overlay with `kubectl kustomize`;
#   2. creates each overlay's Namespace for real and dry-runs the whole overlay
#      with client-side and server-side apply (`--dry-run=server`). A rejection or
#      a warning fails the check. The namespaces enforce the "restricted" Pod
#      Security profile, so a pod template that breaks it shows up as a warning;
#   3. applies each file in testdata/broken and expects the server to reject it,
#      printing the server's message.
# It prints `N passed, N failed` and exits non-zero when anything failed.
#
# The monitoring overlay contains a ServiceMonitor (monitoring.coreos.com/v1).
# The script installs testdata/crds/servicemonitor.yaml for real first: a reduced
# CRD written for this check whose schema covers only the fields shardgate uses
# and prunes nothing, so a misspelled field still fails strict field validation.
#
# Usage: validate.sh [build]   ("build" only builds the binaries and exits)
# Environment:
#   SHARDGATE_K8S_CACHE  binaries, build modules and run state
#                        (default $HOME/.cache/shardgate-k8s)
#   K8S_VERSION, ETCD_VERSION  versions to build (default 1.37.2 and 3.7.3)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${SHARDGATE_K8S_CACHE:-$HOME/.cache/shardgate-k8s}
K8S_VERSION=${K8S_VERSION:-1.37.2}
ETCD_VERSION=${ETCD_VERSION:-3.7.3}
BIN=$CACHE/bin
RUN=$CACHE/run.$$
OVERLAYS=(dev production monitoring)
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=${GOTOOLCHAIN:-local}

log() { printf '[k8s-validate %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# write_kube_module writes a module that requires k8s.io/kubernetes. Kubernetes
# requires its staging modules (k8s.io/api, k8s.io/client-go, ...) at v0.0.0 and
# replaces them with local directories, so a module importing it must replace
# each one with the published v0.X.Y that matches v1.X.Y.
write_kube_module() {
  local dir=$1 staging="v0.${K8S_VERSION#1.}" modfile
  go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" >/dev/null
  modfile=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/v$K8S_VERSION.mod
  {
    printf 'module shardgate.local/k8stools\n\ngo 1.26.0\n\n'
    printf 'require k8s.io/kubernetes v%s\n\nreplace (\n' "$K8S_VERSION"
    awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$modfile" |
      while read -r mod; do printf '\t%s => %s %s\n' "$mod" "$mod" "$staging"; done
    printf ')\n'
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF
  (cd "$dir" && go mod tidy)
}

write_etcd_module() {
  local dir=$1
  printf 'module shardgate.local/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 v%s\n' \
    "$ETCD_VERSION" >"$dir/go.mod"
  cat >"$dir/main.go" <<'EOF'
// Command etcd runs the etcd server; built here only to back a test API server.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  (cd "$dir" && go mod tidy)
}

build_tools() {
  local kube=$CACHE/src/kubernetes-$K8S_VERSION etcd=$CACHE/src/etcd-$ETCD_VERSION
  local minor version_flags
  mkdir -p "$BIN" "$kube" "$etcd"
  [[ -f $kube/go.mod ]] || write_kube_module "$kube"
  [[ -f $etcd/go.mod ]] || write_etcd_module "$etcd"

  if [[ ! -x $BIN/etcd-$ETCD_VERSION ]]; then
    log "building etcd v$ETCD_VERSION"
    (cd "$etcd" && go build -trimpath -ldflags '-s -w' -o "$BIN/etcd-$ETCD_VERSION" .)
  fi
  # Without these stamps `kubectl version` and the server's /version report
  # v0.0.0 instead of the release.
  minor=$(cut -d. -f2 <<<"$K8S_VERSION")
  version_flags="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION"
  version_flags+=" -X k8s.io/component-base/version.gitMajor=1"
  version_flags+=" -X k8s.io/component-base/version.gitMinor=$minor"
  version_flags+=" -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION"
  local cmd
  for cmd in kube-apiserver kubectl; do
    [[ -x $BIN/$cmd-$K8S_VERSION ]] && continue
    log "building $cmd v$K8S_VERSION"
    (cd "$kube" && go build -trimpath -ldflags "$version_flags" \
      -o "$BIN/$cmd-$K8S_VERSION" "k8s.io/kubernetes/cmd/$cmd")
  done
}

# free_port prints a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

PIDS=()
stop_servers() {
  local i pid
  # Stop the API server before etcd, and only the processes this script started.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid=${PIDS[i]}
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$RUN"
}

# wait_for runs a command every 0.5 s until it succeeds, for at most $1 seconds,
# and fails early when the process $2 has exited.
wait_for() {
  local seconds=$1 pid=$2 i
  shift 2
  for ((i = 0; i < seconds * 2; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}

start_servers() {
  local etcd_port peer_port api_port
  etcd_port=$(free_port) peer_port=$(free_port) api_port=$(free_port)
  mkdir -p "$RUN/pki"
  TOKEN=validate-$$-$RANDOM
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=kube-apiserver \
    -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$RUN/pki/serving.key" -out "$RUN/pki/serving.crt" 2>/dev/null
  openssl genrsa -out "$RUN/pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$RUN/pki/sa.key" -pubout -out "$RUN/pki/sa.pub" 2>/dev/null
  printf '%s,validate,validate,"system:masters"\n' "$TOKEN" >"$RUN/pki/tokens.csv"

  log "starting etcd on 127.0.0.1:$etcd_port"
  "$BIN/etcd-$ETCD_VERSION" --name validate --data-dir "$RUN/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "validate=http://127.0.0.1:$peer_port" \
    --unsafe-no-fsync --log-level=warn >"$RUN/etcd.log" 2>&1 &
  PIDS+=($!)
  if ! wait_for 30 "${PIDS[0]}" curl -fsS "http://127.0.0.1:$etcd_port/health"; then
    tail -20 "$RUN/etcd.log"
    log "etcd did not become healthy within 30 s"
    return 1
  fi

  # --endpoint-reconciler-type=none: the default reconciler rejects 127.0.0.1 as
  # the address of the "kubernetes" Service.
  log "starting kube-apiserver on 127.0.0.1:$api_port"
  "$BIN/kube-apiserver-$K8S_VERSION" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --tls-cert-file="$RUN/pki/serving.crt" --tls-private-key-file="$RUN/pki/serving.key" \
    --cert-dir="$RUN/pki" --token-auth-file="$RUN/pki/tokens.csv" --anonymous-auth=false \
    --authorization-mode=AlwaysAllow \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$RUN/pki/sa.pub" \
    --service-account-signing-key-file="$RUN/pki/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 --endpoint-reconciler-type=none \
    --enable-priority-and-fairness=false --profiling=false \
    >"$RUN/kube-apiserver.log" 2>&1 &
  PIDS+=($!)
  if ! wait_for 120 "${PIDS[1]}" curl -ksfS -H "Authorization: Bearer $TOKEN" \
    "https://127.0.0.1:$api_port/readyz"; then
    tail -30 "$RUN/kube-apiserver.log"
    log "kube-apiserver did not become ready within 120 s"
    return 1
  fi
  KUBECTL=("$BIN/kubectl-$K8S_VERSION" --server "https://127.0.0.1:$api_port"
    --insecure-skip-tls-verify --token "$TOKEN" --request-timeout=30s)
  # The API server's bootstrap controller creates the default namespace.
  wait_for 30 "${PIDS[1]}" "${KUBECTL[@]}" get namespace default
}

passed=0 failed=0
pass() { passed=$((passed + 1)); log "PASS: $*"; }
fail() { failed=$((failed + 1)); log "FAIL: $*"; }

# dry_run applies rendered manifests from $2 with the extra apply flags in $3...
# and counts a pass only when the server accepts all of them without a warning.
dry_run() {
  local name=$1 file=$2 out
  shift 2
  if out=$("${KUBECTL[@]}" apply "$@" --dry-run=server -f "$file" 2>&1); then
    printf '%s\n' "$out"
    if grep -qi '^warning' <<<"$out"; then
      fail "$name: accepted with warnings"
    else
      pass "$name"
    fi
  else
    printf '%s\n' "$out"
    fail "$name: rejected"
  fi
}

validate_overlay() {
  local overlay=$1 dir=$HERE/overlays/$1 rendered=$RUN/$1.yaml
  if ! "$BIN/kubectl-$K8S_VERSION" kustomize "$dir" >"$rendered" 2>"$RUN/kustomize.err"; then
    cat "$RUN/kustomize.err"
    fail "$overlay: kustomize build failed"
    return
  fi
  # A Namespace and the objects inside it cannot be dry-run together, so the
  # overlay's namespace is created for real first.
  if [[ -f $dir/namespace.yaml ]]; then
    "${KUBECTL[@]}" apply -f "$dir/namespace.yaml" >/dev/null
  fi
  dry_run "$overlay (client-side apply)" "$rendered"
  dry_run "$overlay (server-side apply)" "$rendered" --server-side --field-manager=validate
}

validate_broken() {
  local file out
  "${KUBECTL[@]}" create namespace broken >/dev/null
  for file in "$HERE"/testdata/broken/*.yaml; do
    if out=$("${KUBECTL[@]}" apply --namespace broken --dry-run=server -f "$file" 2>&1); then
      printf '%s\n' "$out"
      fail "$(basename "$file"): accepted, but it must be rejected"
    else
      printf '  server: %s\n' "$out"
      pass "$(basename "$file") rejected"
    fi
  done
}

main() {
  build_tools
  [[ ${1:-} == build ]] && return 0

  trap stop_servers EXIT
  trap 'exit 130' INT TERM
  start_servers

  log "installing the reduced ServiceMonitor CRD"
  "${KUBECTL[@]}" apply -f "$HERE/testdata/crds/servicemonitor.yaml" >/dev/null
  "${KUBECTL[@]}" wait --for=condition=Established --timeout=30s \
    crd/servicemonitors.monitoring.coreos.com >/dev/null

  local overlay
  for overlay in "${OVERLAYS[@]}"; do
    log "overlay $overlay"
    validate_overlay "$overlay"
  done
  log "broken fixtures"
  validate_broken

  echo "$passed passed, $failed failed"
  [[ $failed -eq 0 ]]
}

main "$@"
