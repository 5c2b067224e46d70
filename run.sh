#!/usr/bin/env bash
# Usage: ./run.sh main [reproduce args]   run the paper reproduction (python -m ptqlib reproduce)
#        ./run.sh test [pytest args]      run the tests
# Creates .venv in the repository on first use and installs ptqlib into it (editable, with the dev
# extras). It reinstalls only when pyproject.toml changed. PTQLIB_TORCH_SPEC overrides the torch pins.
set -euo pipefail

cd "$(dirname "$0")"
VENV=.venv
STAMP="$VENV/.ptqlib-installed"
TORCH_SPEC="${PTQLIB_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"

usage() {
    echo "usage: ./run.sh main [reproduce args] | ./run.sh test [pytest args]" >&2
    exit 2
}

setup() {
    if [[ ! -x "$VENV/bin/python" ]]; then
        echo "creating $VENV" >&2
        python3 -m venv "$VENV"
    fi
    local want
    want="$( (sha256sum pyproject.toml; echo "$TORCH_SPEC") | sha256sum | cut -d' ' -f1)"
    if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
        return
    fi
    echo "installing ptqlib and its dependencies into $VENV" >&2
    # shellcheck disable=SC2086  # TORCH_SPEC is a list of requirements
    "$VENV/bin/python" -m pip install -q $TORCH_SPEC
    "$VENV/bin/python" -m pip install -q -e ".[dev]"
    echo "$want" > "$STAMP"
}

[[ $# -ge 1 ]] || usage
command="$1"
shift
case "$command" in
    main) setup; exec "$VENV/bin/python" -m ptqlib reproduce "$@" ;;
    test) setup; exec "$VENV/bin/python" -m pytest -q "$@" ;;
    *) usage ;;
esac
