#!/usr/bin/env bash
# Checks the deployment files without a container runtime or a cluster (CI runs this):
#   * the Kubernetes manifests against the Kubernetes schemas (kubernetes-validate,
#     pinned, with its bundled offline schemas), strictly;
#   * the agent-sandbox example against the Sandbox CRD's fields, its pod template as a
#     strict PodSpec (check_sandbox.py);
#   * the systemd units with `systemd-analyze verify`, the unit's ExecStart pointed at
#     the binary under test (any warning fails).
# The Dockerfile is checked by `cargo test` (cli/tests/deploy_files.rs).
# Usage: deploy/check.sh PATH/TO/exec-server
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:?usage: deploy/check.sh PATH/TO/exec-server}")

KUBERNETES_VALIDATE=kubernetes-validate==1.37.0
venv=target/deploy-venv
if ! "$venv/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$KUBERNETES_VALIDATE"
fi

echo "--- Kubernetes manifests (kubernetes-validate --strict)"
"$venv/bin/kubernetes-validate" --strict \
    deploy/kubernetes/exec-server.yaml deploy/kubernetes/ingress.yaml
echo "--- agent-sandbox Sandbox"
"$venv/bin/python" deploy/kubernetes/check_sandbox.py deploy/kubernetes/sandbox.yaml

echo "--- systemd units (systemd-analyze verify)"
units=$(mktemp -d)
trap 'rm -rf "$units"' EXIT
sed "s|/usr/local/bin/exec-server|$bin|" deploy/systemd/exec-server.service \
    > "$units/exec-server.service"
cp deploy/systemd/exec-server.socket "$units/"
out=$(systemd-analyze verify "$units/exec-server.socket" "$units/exec-server.service" 2>&1)
if [ -n "$out" ]; then
    printf '%s\n' "$out"
    echo "systemd-analyze verify: the units have problems" >&2
    exit 1
fi
echo "INFO deploy/systemd: exec-server.socket and exec-server.service verified"
