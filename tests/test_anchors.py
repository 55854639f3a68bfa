"Anchors: counts, order (against a flattened conv map and the 2018 lesson's numpy code), SSD300 against torchvision."
import itertools
import numpy as np, pytest, torch
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from fastai_det.boxes import cxcywh2xyxy
from fastai_det.anchors import (make_anchors, grid_anchors, grid_centers, anchor_shapes, anchors_per_cell, flatten_conv,
                                clip_anchors, ssd_scales, ssd_shapes, ssd_anchors, ssd_anchors_per_cell, ssd300_anchors)

from fastai_det.anchors import LESSON_ZOOMS, LESSON_RATIOS

def lesson_anchors(anc_grids, anc_zooms, anc_ratios):
    "The 2018 lesson's anchor code (pascal-multi.ipynb), unchanged; returns its (row, col, h, w) layout"
    anchor_scales = [(anz*i,anz*j) for anz in anc_zooms for (i,j) in anc_ratios]
    k = len(anchor_scales)
    anc_offsets = [1/(o*2) for o in anc_grids]
    anc_x = np.concatenate([np.repeat(np.linspace(ao, 1-ao, ag), ag) for ao,ag in zip(anc_offsets,anc_grids)])
    anc_y = np.concatenate([np.tile(np.linspace(ao, 1-ao, ag), ag) for ao,ag in zip(anc_offsets,anc_grids)])
    anc_ctrs = np.repeat(np.stack([anc_x,anc_y], axis=1), k, axis=0)
    anc_sizes = np.concatenate([np.array([[o/ag,p/ag] for i in range(ag*ag) for o,p in anchor_scales]) for ag in anc_grids])
    return torch.tensor(np.concatenate([anc_ctrs, anc_sizes], axis=1)).float()

def conv_map_of(grid, sizes, bs=2):
    "A conv map `(bs, k*4, h, w)` whose channels at cell (i,j) hold that cell's anchors, written cell by cell"
    gh,gw = (grid,grid) if isinstance(grid, int) else grid
    k = len(sizes)
    x = torch.zeros(bs, k*4, gh, gw)
    for i in range(gh):
        for j in range(gw):
            for a,(h,w) in enumerate(sizes.tolist()):
                x[:, a*4:(a+1)*4, i, j] = torch.tensor([(j+0.5)/gw, (i+0.5)/gh, w, h])
    return x

def test_counts():
    assert make_anchors(4).shape == (16, 4)
    assert make_anchors((4,2,1), LESSON_ZOOMS, LESSON_RATIOS).shape == (189, 4)
    assert ssd300_anchors().shape == (8732, 4)
    assert ssd_anchors_per_cell() == [4, 6, 6, 6, 4, 4]
    assert sum(g*g*k for g,k in zip((38,19,10,5,3,1), ssd_anchors_per_cell())) == 8732
    assert anchors_per_cell(LESSON_ZOOMS, LESSON_RATIOS) == 9 == len(anchor_shapes(LESSON_ZOOMS, LESSON_RATIOS))

def test_lesson_4x4_printout():
    c = [0.125, 0.375, 0.625, 0.875]
    printed = torch.tensor([[y, x, 0.25, 0.25] for y in c for x in c])   # the lesson's printout, (row, col, h, w)
    torch.testing.assert_close(make_anchors(4), printed[:, [1,0,3,2]])

@pytest.mark.parametrize('grids,zooms,ratios', [
    ((4,2,1), LESSON_ZOOMS, LESSON_RATIOS), ((4,), (1.,), ((1.,1.),)), ((7,3), (0.5, 2.), ((1.,1.), (2.,1.))),
    ((5,), (0.7,1.,1.4,2.), ((1.,1.), (1.,0.5), (0.5,1.), (1.,3.)))])
def test_against_lesson_code(grids, zooms, ratios):
    torch.testing.assert_close(make_anchors(grids, zooms, ratios), lesson_anchors(grids, zooms, ratios)[:, [1,0,3,2]],
                               atol=1e-6, rtol=0)

@pytest.mark.parametrize('grid,k', [(4, 1), ((3,5), 2), ((6,2), 3), (1, 4), (38, 4)])
def test_order_is_conv_flatten(grid, k):
    g = torch.Generator().manual_seed(k)
    sizes = torch.rand(k, 2, generator=g)
    x = conv_map_of(grid, sizes)
    bs = x.shape[0]
    flat = x.permute(0,2,3,1).reshape(bs, -1, 4)        # the contract, written out
    for b in range(bs): torch.testing.assert_close(flat[b], grid_anchors(grid, sizes), atol=0, rtol=0)
    torch.testing.assert_close(flatten_conv(x, k), flat, atol=0, rtol=0)

def test_multi_grid_order_and_shapes():
    "Grids in the order given, cells row-major, shapes zoom-outer ratio-inner; sizes zoom*ratio/grid per axis"
    grids, zooms, ratios = [(2,3), 4], (0.5, 1.5), ((1.,1.), (2.,1.), (1.,2.))
    ancs = make_anchors(grids, zooms, ratios)
    k = anchors_per_cell(zooms, ratios)
    assert len(ancs) == (6 + 16) * k
    i = 0
    for gh,gw in [(2,3), (4,4)]:
        for r,c in itertools.product(range(gh), range(gw)):
            for z in zooms:
                for rh,rw in ratios:
                    torch.testing.assert_close(ancs[i], torch.tensor([(c+.5)/gw, (r+.5)/gh, z*rw/gw, z*rh/gh]))
                    i += 1
    assert i == len(ancs)

def test_grid_forms():
    assert torch.equal(make_anchors(3), make_anchors([3])) and torch.equal(make_anchors(3), make_anchors([(3,3)]))
    assert len(make_anchors((4,2))) == 20 and len(make_anchors([(4,2)])) == 8
    ctr = grid_centers((2,4))
    torch.testing.assert_close(ctr[:4, 1], torch.full((4,), 0.25))           # first row: y = 1/4
    torch.testing.assert_close(ctr[:4, 0], torch.tensor([1/8, 3/8, 5/8, 7/8]))

def test_clip():
    ancs = make_anchors((4,2,1), LESSON_ZOOMS, LESSON_RATIOS)
    clipped = make_anchors((4,2,1), LESSON_ZOOMS, LESSON_RATIOS, clip=True)
    xy, cxy = cxcywh2xyxy(ancs), cxcywh2xyxy(clipped)
    assert (cxy >= -1e-6).all() and (cxy <= 1+1e-6).all()
    inside = ((xy >= 0) & (xy <= 1)).all(1)
    assert 0 < int((~inside).sum()) < len(ancs)
    torch.testing.assert_close(clipped[inside], ancs[inside])
    torch.testing.assert_close(cxy, xy.clamp(0, 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(clip_anchors(ancs), clipped)

def test_ssd_scales():
    torch.testing.assert_close(torch.tensor(ssd_scales()), torch.tensor([0.1, 0.2, 0.375, 0.55, 0.725, 0.9, 1.075]))
    torch.testing.assert_close(torch.tensor(ssd_scales(first=None)), torch.tensor([0.2, 0.34, 0.48, 0.62, 0.76, 0.9, 1.04]))
    hw = ssd_shapes(0.2, 0.375, (2,3))
    assert hw.shape == (6, 2)
    torch.testing.assert_close(hw[:, 1] / hw[:, 0], torch.tensor([1., 1., 2., 0.5, 3., 1/3]))   # w/h
    torch.testing.assert_close(hw[1], torch.tensor([(0.2*0.375)**0.5]*2))

@pytest.mark.parametrize('grids,ars,scales', [
    ((38,19,10,5,3,1), [[2],[2,3],[2,3],[2,3],[2],[2]], None),
    ((38,19,10,5,3,1), [[2],[2,3],[2,3],[2,3],[2],[2]], [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]),
    ((8,4,2), [[2,3],[2],[]], [0.2, 0.5, 0.8, 0.95]),
    ((5,), [[2,3,4]], [0.3, 0.6])])
def test_ssd_against_torchvision(grids, ars, scales):
    s = ssd_scales(len(grids)) if scales is None else scales
    tv = DefaultBoxGenerator(ars, scales=s, clip=False)._grid_default_boxes([[g,g] for g in grids], [300,300])
    ours = ssd_anchors(grids, s, [tuple(o) for o in ars])
    torch.testing.assert_close(ours, tv, atol=1e-6, rtol=0)
    if scales is None: torch.testing.assert_close(ssd300_anchors(), tv, atol=1e-6, rtol=0)

def test_ssd_bad_args():
    with pytest.raises(ValueError, match='scales'): ssd_anchors((4,2), scales=[0.2, 0.5])
    with pytest.raises(ValueError, match='aspect_ratios'): ssd_anchors((4,2), scales=[0.2, 0.5, 0.8], aspect_ratios=((2,),))

def test_show_anchors_from_module():
    import matplotlib; matplotlib.use('Agg')
    from fastai_det.anchors import show_anchors
    ax = show_anchors(make_anchors(2), labels=range(4))                     # no image: a blank square
    assert len(ax.patches) == 4 and len(ax.texts) == 4
    import numpy as np
    ax = show_anchors(make_anchors(2), np.zeros((100, 200, 3)))
    assert ax.patches[0].get_width() == 100 and ax.patches[0].get_height() == 50
