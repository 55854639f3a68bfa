#!/usr/bin/env bash
# The library at the lower end of the torch range pyproject.toml claims: a fresh venv with the oldest torch and
# torchvision it allows, the package installed as a user installs it (no extras), the plain-install smoke test
# (command, shipped weights, two processes) and the library's pytest files (not the notebooks, docs, structure and
# export tests, which need the dev tools or the export extra: onnxscript 0.7 breaks `import torchvision` on torch 2.4,
# whose ONNX code imports it when it is there). Not part of CI: PyPI's torch 2.4 wheel brings 2.7 GB of CUDA libraries.
# LOWER_WHEELS=DIR: a folder of already downloaded wheels to install from first.
#   bash tools/lower_bound.sh [VENV]        # default /tmp/fastai_det_lower; log in tools/lower_bound.log
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-/tmp/fastai_det_lower}
torch_min=$(sed -n 's/^ *"torch>=\([0-9.]*\),.*/\1/p' "$repo/pyproject.toml")
tv_min=$(sed -n 's/^ *"torchvision>=\([0-9.]*\)".*/\1/p' "$repo/pyproject.toml")
[ -n "$torch_min" ] && [ -n "$tv_min" ] || { echo "could not read the torch/torchvision lower bounds from pyproject.toml"; exit 1; }
exec > >(tee "$repo/tools/lower_bound.log") 2>&1
echo "== $(date '+%F %T') lower bounds from pyproject.toml: torch $torch_min, torchvision $tv_min"
unset PIP_CONSTRAINT
rm -rf "$venv"; python3 -m venv "$venv"
"$venv/bin/pip" install -q ${LOWER_WHEELS:+--find-links "$LOWER_WHEELS"} "torch==$torch_min.*" "torchvision==$tv_min.*"
"$venv/bin/pip" install -q "$repo" pytest pytest-xdist
"$venv/bin/python" -c "import torch, torchvision, fastai; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'fastai', fastai.__version__)"
echo "== $(date +%T) plain-install smoke"
bash "$repo/tools/plain_smoke.sh" "$venv/bin"
echo "== $(date +%T) pytest"
cd "$repo"                             # the tests of the source tree, on this venv's torch (the smoke test above tried the installed package)
files=$(ls tests/test_*.py | grep -v -e test_docs -e test_notebooks -e test_structure -e test_figures -e test_export)
set +e
OMP_NUM_THREADS=1 PATH="$venv/bin:$PATH" "$venv/bin/python" -m pytest $files -q -p no:cacheprovider -n 2 --dist loadfile -k "not export"
rc=$?
set -e
echo "== $(date +%T) pytest exit $rc"
[ $rc = 5 ] && echo "pytest collected no tests: that is a failure here"
exit $rc
