#!/usr/bin/env bash
# Build the docs site from the notebooks: nbdev-proc-nbs (show_doc API reference, directives) into _proc/, then
# smalldocs renders _proc/ with the same _quarto.yml into _proc/_docs/. (nbdev-docs needs Quarto, which cannot be
# installed here; nbdev-proc-nbs tries to install it, says so, and goes on.)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin; [ -x "$bin/python" ] || bin=$(dirname "$(command -v python3)")
rm -rf _proc
"$bin/nbdev-proc-nbs" > /tmp/fastai_det_proc.log 2>&1 || { cat /tmp/fastai_det_proc.log; exit 1; }
"$bin/smalldocs" render _proc
"$bin/python" tools/fix_site.py        # nbdev's page names and local show_doc links (smalldocs ignores output-file)
echo "site: $(pwd)/_proc/_docs/index.html"
