#!/usr/bin/env bash
# Create (or bring up to date) the virtual environment that runs ncbench and its tests.
#   bash scripts/setup-venv.sh            -> ./.venv
#   NCBENCH_VENV=/some/dir bash scripts/setup-venv.sh
# Idempotent: a second run only re-installs ncbench itself.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${NCBENCH_VENV:-.venv}"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv" >&2
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
fi
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)

# torch and torchvision must be a matching pair (a mismatched torchvision fails to import with
# "operator torchvision::nms does not exist"); this pair is the one ncbench is tested with.
if ! "$venv/bin/python" -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "setup: installing torch and torchvision (a few minutes the first time)" >&2
  "${pip[@]}" "torch==2.14.1" "torchvision==0.29.1"
fi
# torchattacks 3.5.1 pins requests~=2.25.1, which it never imports: pip installs that old requests into this
# venv (one reason to keep ncbench in its own venv). Its wheel also ships a stale top-level `robustbench`
# package; ncbench never imports it.
echo "setup: installing ncbench and its test extra" >&2
"${pip[@]}" -e ".[test]"
"$venv/bin/python" -c "import ncbench, torch, torchattacks; print('setup: ncbench', ncbench.__version__, '| torch', torch.__version__)" >&2
