#!/usr/bin/env bash
# End to end on a real cluster: create a kind cluster, run the integration suite against it,
# build and load the images, install the chart with Helm, test through the facade and kubectl,
# and tear everything down (also on failure or Ctrl-C).
#
#   tests/e2e/run.sh            (or: make e2e)
#
# Needs docker (a running daemon), kind, helm and kubectl on PATH. Without them it says which
# are missing and exits 0: nothing is faked. Set GPUFLEET_E2E_REQUIRED=1 (CI does) to make a
# missing tool an error instead. Other knobs: KIND_NODE_IMAGE (the Kubernetes version),
# GPUFLEET_E2E_KEEP=1 (keep the cluster for debugging), PYTHON (default .venv/bin/python).
set -euo pipefail

cd "$(dirname "$0")/../.."
REPO=$(pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
CLUSTER=${GPUFLEET_E2E_CLUSTER:-gpufleet-e2e}
NAMESPACE=gpufleet-system
RELEASE=gpufleet
TAG=e2e
# A kind node image of a supported Kubernetes version (CI runs the oldest and newest); override to test another.
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.31.9}
VALUES=charts/gpufleet/ci/kind-values.yaml

say() { printf '\n==> %s\n' "$*"; }

missing=()
for tool in docker kind helm kubectl; do
    command -v "$tool" > /dev/null 2>&1 || missing+=("$tool")
done
if [[ ${#missing[@]} -eq 0 ]] && ! docker info > /dev/null 2>&1; then
    missing+=("a running docker daemon")
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    message="e2e SKIPPED: needs docker, kind, helm and kubectl; missing: ${missing[*]}. Nothing was run."
    if [[ ${GPUFLEET_E2E_REQUIRED:-0} == 1 ]]; then
        echo "${message/SKIPPED/FAILED} (GPUFLEET_E2E_REQUIRED=1)" >&2
        exit 1
    fi
    echo "$message"
    exit 0
fi

WORK=$(mktemp -d -t gpufleet-e2e.XXXXXX)
export KUBECONFIG=$WORK/kubeconfig
PORT_FORWARD_PID=

diagnose() {
    say "diagnostics"
    kubectl get nodes,hosts,gpus -o wide || true
    kubectl -n "$NAMESPACE" get all,leases,secrets -o wide || true
    kubectl -n "$NAMESPACE" describe pods || true
    kubectl -n "$NAMESPACE" logs -l app.kubernetes.io/instance=$RELEASE --all-containers --prefix --tail=200 || true
    kubectl get events -A --sort-by=.lastTimestamp | tail -50 || true
}

teardown() {
    status=$?
    if [[ -n $PORT_FORWARD_PID ]]; then kill "$PORT_FORWARD_PID" 2> /dev/null || true; fi
    if [[ $status -ne 0 ]]; then diagnose; fi
    if [[ ${GPUFLEET_E2E_KEEP:-0} == 1 ]]; then
        say "keeping cluster $CLUSTER (KUBECONFIG=$KUBECONFIG); delete it with: kind delete cluster --name $CLUSTER"
    else
        say "teardown"
        helm uninstall "$RELEASE" -n "$NAMESPACE" --wait --timeout 2m > /dev/null 2>&1 || true
        kind delete cluster --name "$CLUSTER" || true
        rm -rf "$WORK"
    fi
    exit $status
}
trap teardown EXIT
trap 'exit 130' INT TERM

say "kind cluster $CLUSTER ($KIND_NODE_IMAGE)"
kind delete cluster --name "$CLUSTER" > /dev/null 2>&1 || true
kind create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" --kubeconfig "$KUBECONFIG" --wait 180s

# The integration suite runs before the chart is installed: its tests start their own operator
# and facade in-process, which must not race the chart's. Tests that need the emulator's extras
# (marker `emulator`) skip themselves on a real cluster. tests/admission runs here too: it applies
# the chart's node-restriction policies for a release of its own and runs the agent with a token
# from the TokenRequest API bound to a pod on a kind node (the API server adds the node-name claim).
say "integration suite against the bare cluster (its CRDs applied by the test fixtures)"
if [[ -d tests/integration ]]; then SUITE=(tests/integration); else SUITE=(tests -m "not e2e"); fi
"$PYTHON" -m pytest "${SUITE[@]}" --kubeconfig "$KUBECONFIG" -p no:cacheprovider

say "images"
make images IMAGE=gpufleet AGENT_IMAGE=gpufleet-agent IMAGE_TAG=$TAG
kind load docker-image --name "$CLUSTER" gpufleet:$TAG gpufleet-agent:$TAG

say "helm install"
helm install "$RELEASE" charts/gpufleet --namespace "$NAMESPACE" --create-namespace \
    --values "$VALUES" --wait --timeout 5m
kubectl -n "$NAMESPACE" rollout status deployment/$RELEASE-controlplane --timeout 3m
kubectl -n "$NAMESPACE" rollout status daemonset/$RELEASE-agent --timeout 3m

say "facade through port-forward"
LOCAL_PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
kubectl -n "$NAMESPACE" port-forward "svc/$RELEASE-facade" "$LOCAL_PORT:80" > "$WORK/port-forward.log" 2>&1 &
PORT_FORWARD_PID=$!
for _ in $(seq 50); do
    curl -fsS "http://127.0.0.1:$LOCAL_PORT/healthz" > /dev/null 2>&1 && break
    sleep 0.2
done

say "end-to-end tests"
GPUFLEET_E2E=1 \
GPUFLEET_E2E_KUBECONFIG=$KUBECONFIG \
GPUFLEET_E2E_NAMESPACE=$NAMESPACE \
GPUFLEET_E2E_RELEASE=$RELEASE \
GPUFLEET_E2E_VALUES=$REPO/$VALUES \
GPUFLEET_E2E_FACADE_URL=http://127.0.0.1:$LOCAL_PORT \
    "$PYTHON" -m pytest tests/e2e -m e2e --kubeconfig "$KUBECONFIG" -p no:cacheprovider

say "upgrade in place (CRDs first, as docs/operations.md says), then uninstall"
kubectl apply --server-side --force-conflicts -f charts/gpufleet/crds/
helm upgrade "$RELEASE" charts/gpufleet --namespace "$NAMESPACE" --values "$VALUES" \
    --set operator.gracePeriodSeconds=30 --wait --timeout 5m
helm uninstall "$RELEASE" -n "$NAMESPACE" --wait --timeout 2m
say "e2e PASSED"
