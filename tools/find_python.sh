#!/usr/bin/env bash
# Print the path of a Python >= 3.12 interpreter, or explain what is needed and fail.
# Order: $PYTHON if set, python3.12, python3.13, python3, then pyenv's installed versions.
set -u
ok() { "$1" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
cands=()
[ -n "${PYTHON:-}" ] && cands+=("$PYTHON")
for v in 3.12 3.13 3.14; do
    # pyenv shims answer only when the version is selected, so ask pyenv for the real path.
    cands+=("python$v")
done
cands+=(python3)
if command -v pyenv >/dev/null 2>&1; then
    root=$(pyenv root)
    for d in "$root"/versions/3.12* "$root"/versions/3.13* "$root"/versions/3.14*; do
        [ -x "$d/bin/python" ] && cands+=("$d/bin/python")
    done
fi
for c in "${cands[@]}"; do
    if ok "$c"; then
        command -v "$c" 2>/dev/null || echo "$c"
        exit 0
    fi
done
cat >&2 <<MSG
hybridsolve needs Python >= 3.12 (the dolfinx-solver-real wheel is cp312-abi3) and none was found.
Tried: ${cands[*]}
Install one (e.g. 'pyenv install 3.12', or your distribution's python3.12 with venv),
or point to it explicitly: make PYTHON=/path/to/python3.12 test
MSG
exit 1
