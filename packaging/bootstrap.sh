#!/usr/bin/env bash
# Creates the virtual environment and installs BAE with its test tools; installs the
# Debian packages the tests drive (systemd-analyze, haproxy) when run as root and missing.
set -euo pipefail
venv=${1:-.venv}
need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v haproxy >/dev/null || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "bootstrap: missing Debian packages ${need[*]}; run 'sudo apt-get install ${need[*]}'" >&2
  fi
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel
"$venv/bin/python" -m pip install -q -e ".[test]"
