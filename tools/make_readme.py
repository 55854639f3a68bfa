"""Write README.md from nbs/index.ipynb (nbdev-readme needs Quarto, which cannot be installed here).

Hidden cells (`#| hide`) are dropped and nbdev directive lines stripped; the rest goes through nbconvert's markdown
exporter. `python tools/make_readme.py --check` exits 1 if README.md is out of date."""
import sys, re, copy
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter

root = Path(__file__).resolve().parents[1]
_dir = re.compile(r'^\s*#\|.*$\n?', re.M)

def readme_text(nb_path=root/'nbs'/'index.ipynb'):
    nb = nbformat.read(nb_path, as_version=4)
    nb = copy.deepcopy(nb)
    cells = []
    for c in nb.cells:
        if c.cell_type=='code' and re.search(r'^\s*#\|\s*(hide|include:\s*false)', c.source, re.M): continue
        if c.cell_type=='code':
            c.source = _dir.sub('', c.source)
            if re.search(r'^\s*#\|\s*(hide_input|echo:\s*false)', c.source, re.M): c.source=''
        cells.append(c)
    nb.cells = cells
    body,_ = MarkdownExporter().from_notebook_node(nb)
    header = "<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file -->\n\n"
    return header + re.sub(r'\n{3,}', '\n\n', body).strip() + '\n'

if __name__=='__main__':
    txt, dest = readme_text(), root/'README.md'
    if '--check' in sys.argv:
        ok = dest.exists() and dest.read_text()==txt
        if not ok: print("README.md is out of date: run `python tools/make_readme.py`")
        sys.exit(0 if ok else 1)
    dest.write_text(txt); print(f"wrote {dest}")
