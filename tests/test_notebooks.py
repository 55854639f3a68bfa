"Notebook hygiene that nbdev relies on but does not enforce."
import ast, json, re
from pathlib import Path
import pytest

root = Path(__file__).resolve().parents[1]
nbs = sorted((root/'nbs').glob('*.ipynb'))

def _code_cells(p):
    for i,c in enumerate(json.loads(p.read_text())['cells']):
        if c['cell_type'] == 'code': yield i, ''.join(c['source'])

@pytest.mark.parametrize('nb', nbs, ids=lambda p: p.stem)
def test_imports_in_cells_of_their_own(nb):
    """`nbdev-proc-nbs` executes every cell that contains an import to render `show_doc`: a cell mixing an import with
    other code runs out of context when the docs are built (a training cell would train, a name defined earlier is
    missing). Imports go in cells of their own, as nbdev's FAQ says."""
    bad = []
    for i,src in _code_cells(nb):
        if re.search(r'^#\|\s*(export|exporti|exports|exec_doc)\b', src, re.M): continue
        if re.search(r'^#\|\s*eval:\s*false', src, re.M): continue
        tree = ast.parse('\n'.join(l for l in src.splitlines() if not l.lstrip().startswith(('%', '!'))))
        has_imp = any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree))
        if has_imp and not all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in tree.body): bad.append(i)
    assert not bad, f"{nb.name}: cells {bad} mix imports with other code; move the imports to an import cell"

@pytest.mark.parametrize('nb', nbs, ids=lambda p: p.stem)
def test_has_title_and_runs_on_cpu(nb):
    cells = json.loads(nb.read_text())['cells']
    assert cells and cells[0]['cell_type'] == 'markdown' and ''.join(cells[0]['source']).startswith('# '), \
        f"{nb.name}: the first cell must be the '# Title' markdown cell nbdev uses for the page title"
    for i,src in _code_cells(nb):
        assert '.cuda()' not in src, f"{nb.name} cell {i}: calls .cuda(); notebooks run on CPU in CI"

def _flakes(kind, skip=lambda m: False)->list:
    "pyflakes' messages of class `kind` in the generated modules (`_modidx.py` left out), unless `skip(message)`"
    from pyflakes.api import checkPath
    from pyflakes.reporter import Reporter
    import io
    bad = []
    class R(Reporter):
        def flake(self, m):
            if isinstance(m, kind) and not skip(m): bad.append(str(m))
    for f in sorted((root/'fastai_det').glob('*.py')):
        if f.name != '_modidx.py': checkPath(str(f), R(io.StringIO(), io.StringIO()))
    return bad

def test_library_names_are_defined():
    """A name a notebook imports in a non-exported cell works in the notebook and fails in the library: pyflakes
    finds every undefined name in the generated modules."""
    from pyflakes.messages import UndefinedName
    bad = _flakes(UndefinedName)
    assert not bad, "\n".join(bad)

def test_library_has_no_unused_imports():
    """An import a module does not use is dead weight in the library (often a name only the notebook's other cells
    need: it belongs in the notebook's hidden import cell). Imports kept for what they do when imported say `noqa`."""
    from pyflakes.messages import UnusedImport
    bad = _flakes(UnusedImport, skip=lambda m: 'noqa' in Path(m.filename).read_text().splitlines()[m.lineno-1])
    assert not bad, "\n".join(bad)
