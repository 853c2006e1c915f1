#!/usr/bin/env bash
# Validates the deploy files against real schemas:
#   - deploy/kubernetes/*.yaml with kubernetes-validate, strict (unknown fields rejected),
#     against each Kubernetes version in KUBERNETES_VERSIONS;
#   - deploy/docker-compose.yml against the compose-spec JSON schema (the copy shipped in the
#     docker-compose 1.29.2 package on PyPI), with jsonschema.
# The tools are pinned in requirements.txt and installed into a venv in a cache outside the
# clone, created on first use. It never skips: if the tools cannot be installed it fails.
#
#   deploy/validate/validate.sh                         the repository's files
#   deploy/validate/validate.sh kubernetes FILE...      these manifests only
#   deploy/validate/validate.sh compose FILE            this compose file only
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
deploy="$(dirname "$here")"
KUBERNETES_VERSIONS="${KUBERNETES_VERSIONS:-1.31.0 1.37.0}"
COMPOSE_PACKAGE="docker-compose==1.29.2"

# One venv per set of pins: a change of requirements.txt makes a new one.
pins="$(cat "$here/requirements.txt" <(echo "$COMPOSE_PACKAGE") | sha256sum | cut -c1-12)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/vexil-ci"
venv="$cache/deploy-venv-$pins"
mkdir -p "$cache"

install() {
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    # Only for its compose-spec schema file: none of its dependencies are needed.
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "$COMPOSE_PACKAGE"
    touch "$venv/.complete"
}

# Tests run this concurrently: one installer at a time, the others wait for it.
exec 9>"$cache/deploy-venv.lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
    echo "validate.sh: installing the pinned validators into $venv" >&2
    if ! install >&2; then
        echo "validate.sh: FAILED to install the validators (python3 -m venv, PyPI)" >&2
        exit 2
    fi
fi
flock -u 9

kubernetes() {
    for version in $KUBERNETES_VERSIONS; do
        "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "$@"
    done
}

compose() {
    "$venv/bin/python" "$here/compose_schema.py" "$@"
}

case "${1:-all}" in
    all)
        kubernetes "$deploy"/kubernetes/*.yaml
        compose "$deploy/docker-compose.yml"
        echo "validate.sh: kubernetes ($KUBERNETES_VERSIONS, strict) and compose-spec: all valid"
        ;;
    kubernetes) shift; kubernetes "$@" ;;
    compose) shift; compose "$@" ;;
    *) echo "usage: $0 [all | kubernetes FILE... | compose FILE...]" >&2; exit 64 ;;
esac
