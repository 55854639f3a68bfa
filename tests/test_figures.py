"""The notebooks' saved outputs, as the docs site shows them: no figure blank or largely flat black (a show_results whose
images did not decode), no detector output with zero boxes where the prose shows predictions, and no warnings or
progress-bar debris. The idea of ../shared/tools/nb_figures.py, as a test."""
import base64, io, json, re
from pathlib import Path
import numpy as np
import pytest
from PIL import Image

root = Path(__file__).resolve().parents[1]
nbs = sorted((root/'nbs').glob('*.ipynb'))
EMPTY = re.compile(r"tensor\(\[\], size=\(0, 4\)\)|'boxes': tensor\(\[\]")
DEBRIS = re.compile(r"FutureWarning|DeprecationWarning|UserWarning|UndefinedMetricWarning|^\s*\u2588\s*$|\|\u2588+[-\u2588]*\| *\d", re.M)

MACHINE = re.compile(r"(?<![\w.])/(?:root|home|work)/[^\s'\"]*")

def black_share(g:np.ndarray, b:int=16)->float:
    "Share of the figure covered by flat near-black `b`x`b` blocks"
    h, w = (g.shape[0]//b)*b, (g.shape[1]//b)*b
    if not h or not w: return 0.
    t = g[:h, :w].reshape(h//b, b, w//b, b).transpose(0, 2, 1, 3).reshape(h//b, w//b, -1)
    return float(((t.mean(-1) < 25) & (t.std(-1) < 3)).mean())

def figure_faults(g:np.ndarray)->list:
    "Why a grey-level figure `g` looks wrong to a person (empty list: it looks like a figure)"
    if g.std() < 4: return ['blank: one flat colour']
    if g.mean() < 30: return ['mostly black']
    bs = black_share(g)
    return [f'{bs:.0%} of it flat black: images not decoded?'] if bs > .12 else []

def outputs(nb):
    for i, c in enumerate(json.loads(nb.read_text())['cells']):
        for k, o in enumerate(c.get('outputs', [])): yield i, k, o

def test_figure_check_bites():
    "The check itself: a show_results of black squares and a blank figure are caught, a real picture passes"
    rng = np.random.default_rng(0)
    pic = rng.uniform(60, 220, (200, 300)).astype(np.float32)
    black = pic.copy(); black[20:120, 20:120] = 0; black[20:120, 160:260] = 0
    assert figure_faults(pic) == [] and figure_faults(black) and figure_faults(np.full((50, 50), 255.))

@pytest.mark.parametrize('nb', nbs, ids=lambda p: p.stem)
def test_saved_outputs_look_right(nb):
    bad = []
    for i, k, o in outputs(nb):
        data = o.get('data', {})
        text = ''.join(o.get('text', '') or data.get('text/plain', ''))
        if EMPTY.search(text): bad.append(f"cell {i}: a detector returned no boxes")
        if MACHINE.search(text): bad.append(f"cell {i}: a path of this machine in the output: {MACHINE.search(text)[0]!r}")
        if o.get('name') == 'stderr' and DEBRIS.search(text): bad.append(f"cell {i}: warning or progress debris: {text.strip()[:80]!r}")
        for mt in ('image/png', 'image/jpeg'):
            if mt not in data: continue
            g = np.asarray(Image.open(io.BytesIO(base64.b64decode(data[mt]))).convert('L'), dtype=np.float32)
            bad += [f"cell {i} figure {k}: {w}" for w in figure_faults(g)]
    assert not bad, f"{nb.name}:\n" + "\n".join(bad)
