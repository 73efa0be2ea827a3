#!/usr/bin/env bash
# Create the project's virtual environment (first use only) and install hybridsolve into it
# with its dependencies from PyPI wheels. Usage: tools/bootstrap.sh [VENV_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$here/.venv}
if [ ! -x "$venv/bin/python" ]; then
    py=$("$here/tools/find_python.sh")
    echo "hybridsolve: creating $venv with $py ($("$py" --version))"
    "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
echo "hybridsolve: installing the project and its dependencies into $venv (first time: a few minutes)"
"$venv/bin/python" -m pip install --quiet --progress-bar off -e "$here[all]"
"$venv/bin/python" -c "import hybridsolve.stack as s; print('hybridsolve: stack ok:', s.describe())"
touch "$venv/.installed"
