#!/usr/bin/env bash
# What a user gets from `pip install fastai_det` (no extras, not editable), tried from another folder: the command,
# the import, the shipped shapes weights in the wheel, and training on two processes with torchrun (fastai's
# distrib_ctx needs `accelerate`, a dependency). .ci/run calls this between the plain and the dev install.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$repo/.venv/bin}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cd "$work"
"$bin/fastai-det" --version
"$bin/fastai-det" --help >/dev/null
"$bin/python" - "$repo" <<'PY'
import sys, fastai_det, fastai_det.engine, fastai_det.bodies as b
from pathlib import Path
f = Path(fastai_det.__file__).resolve()
assert 'site-packages' in f.parts and f.parent != Path(sys.argv[1]).resolve()/'fastai_det', f"imported the source tree ({f}), not the installed package"
w = b.shapes_weights()
assert w.is_file(), f"the wheel has no shipped weights ({w})"
print(f"import fastai_det from {f.parent}; shipped weights {w.name} ({w.stat().st_size/1e6:.1f} MB)")
PY
"$bin/fastai-det" make-data --out d --n-train 32 --n-valid 8 --n-test 0 --quiet
OMP_NUM_THREADS=1 "$bin/torchrun" --nproc_per_node 2 --master_port 29541 -m fastai_det.cli train --data d --epochs 1 --bs 8 \
  --arch mobilenet_v3_small --pretrained none --out run --quiet
"$bin/python" -c "
import json; m = json.load(open('run/metrics.json'))
assert m['settings']['world_size'] == 2 and len(m['epochs']) == 1, m['settings']
print('two processes from a plain install: world_size 2, mAP@0.5', round(m['map_50'], 3))"
test -s run/model.pkl
echo "plain install: ok"
