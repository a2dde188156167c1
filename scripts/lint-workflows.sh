#!/usr/bin/env bash
# Lints the GitHub Actions workflows with actionlint, which also runs ShellCheck on
# every `run:` script. .ci/run installs both: actionlint v1.7.12 from the Go module
# proxy, ShellCheck from Debian. No output and status 0 when every workflow is clean.
set -euo pipefail
cd "$(dirname "$0")/.."
actionlint=$(command -v actionlint || echo "$(go env GOPATH)/bin/actionlint")
"$actionlint" -shellcheck "$(command -v shellcheck)" .github/workflows/*.yml
