#!/usr/bin/env bash
# The whole test suite, as the README shows it: every notebook top to bottom (nbdev-test), then pytest
# (cross-checks against torchvision/pycocotools, file formats, bad input, CLI, docs site in headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin; [ -x "$bin/python" ] || bin=$(dirname "$(command -v python3)")

# The docs-site test drives Debian's headless Chromium; install it when missing (needs root or sudo).
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
fi

echo "== $(date +%T) library matches notebooks, README matches index.ipynb"
"$bin/nbdev-export"
[ -z "$(git status --porcelain -- fastai_det)" ] || { git status --short -- fastai_det; echo "fastai_det/ differs from what nbdev-export makes of nbs/: export and commit"; exit 1; }
"$bin/python" tools/make_readme.py --check

echo "== $(date +%T) notebooks (nbdev-test)"
# Two notebooks at a time, one torch thread each: with torch's default (a thread per core) in both, 2 cores run 4
# busy threads, and 02_single_object took 1475 s against 308 s alone (one thread each: 413 s).
OMP_NUM_THREADS=1 "$bin/nbdev-test" --n-workers 2 --timing

echo "== $(date +%T) pytest"
# Two workers of one torch thread each (pytest-xdist), each test file on one worker so its module fixtures are made once
set +e
OMP_NUM_THREADS=1 "$bin/python" -m pytest tests -q -p no:cacheprovider -n 2 --dist loadfile "$@"
rc=$?
set -e
[ $rc = 5 ] && echo "pytest collected no tests: that is a failure here"
exit $rc
