"""Matching: `map_to_ground_truth` against the lesson's code and torchvision's `SSDMatcher`; batched `match_anchors`
against the per-image `match_one` on a seeded random sweep (padding anywhere, empty images, duplicates, ties);
encode/decode of the targets; bad input."""
import pytest, torch
from torchvision.models.detection._utils import SSDMatcher
from fastai_det.boxes import box_iou, cxcywh2xyxy, tlbr2xyxy, encode_boxes, decode_boxes
from fastai_det.anchors import make_anchors, ssd300_anchors, ssd_anchors
from fastai_det.matching import map_to_ground_truth, match_one, match_anchors, sparse_overlaps

from fastai_det.anchors import LESSON_ZOOMS, LESSON_RATIOS
ANCHOR_SETS = {'4x4': make_anchors(4), '189': make_anchors((4,2,1), LESSON_ZOOMS, LESSON_RATIOS),
               'rect': make_anchors([(3,5), 2], (0.8, 1.6), ((1.,1.), (1.,2.))),
               'ssd_small': ssd_anchors((8,4,2,1), [0.1, 0.3, 0.55, 0.8, 1.], ((2,),(2,3),(2,),(2,)))}

def lesson_map_to_ground_truth(overlaps):
    "The 2018 lesson's function, as written (pascal-multi.ipynb)"
    prior_overlap, prior_idx = overlaps.max(1)
    gt_overlap, gt_idx = overlaps.max(0)
    gt_overlap[prior_idx] = 1.99
    for i,o in enumerate(prior_idx): gt_idx[o] = i
    return gt_overlap, gt_idx

def rand_boxes(n, g, grid=None):
    "`n` valid xyxy boxes in [0,1]; on a `grid` of 1/grid steps (so IoUs tie exactly) if given"
    p = torch.rand(n, 4, generator=g)
    if grid: p = (p*grid).round()/grid
    b = torch.cat([torch.minimum(p[:,:2], p[:,2:]), torch.maximum(p[:,:2], p[:,2:])], -1)
    step = 1/(grid or 64)
    b[:,:2] = b[:,:2].clamp(max=1-step)
    b[:,2:] = torch.maximum(b[:,2:], b[:,:2] + step)                              # positive area, inside the image
    return b

def rand_batch(g, ancs, B=None, G=None):
    "A padded batch with padding anywhere (junk coordinates), empty images, duplicates, zero-area objects, boxes on a tie grid"
    B = B or int(torch.randint(1, 9, (1,), generator=g))
    G = G if G is not None else int(torch.randint(0, 13, (1,), generator=g))
    grid = [None, 8, 16][int(torch.randint(0, 3, (1,), generator=g))]
    bbs = rand_boxes(B*G, g, grid).view(B, G, 4)
    if G and torch.rand(1, generator=g) < 0.3:                                    # some boxes exactly an anchor
        m = torch.rand(B, G, generator=g) < 0.3
        bbs[m] = cxcywh2xyxy(ancs)[torch.randint(0, len(ancs), (int(m.sum()),), generator=g)]
    if G and torch.rand(1, generator=g) < 0.2:                                    # some zero-area objects
        m = torch.rand(B, G, generator=g) < 0.3
        bbs[m] = bbs[m][:, [0,1,0,1]]
    if G > 1 and torch.rand(1, generator=g) < 0.5:                                # duplicates within images
        bbs[:, -1] = bbs[:, 0]
    lbls = torch.randint(1, 6, (B, G), generator=g)
    lbls[torch.rand(B, G, generator=g) < 0.35] = 0                                # padding anywhere
    if B > 1: lbls[int(torch.randint(0, B, (1,), generator=g))] = 0               # an empty image
    return bbs, lbls

def per_image(bbs, lbls, ancs, thresh=0.5):
    res = [match_one(b, l, ancs, thresh) for b,l in zip(bbs, lbls)]
    return torch.stack([o[0] for o in res]), torch.stack([o[1] for o in res])

def test_lesson_worked_example():
    bbox = tlbr2xyxy(torch.tensor([[152, 109, 222, 140], [159, 19, 222, 123], [115, 186, 150, 203]]) / 224)
    clas = torch.tensor([8, 10, 17]) + 1
    ov = box_iou(bbox, cxcywh2xyxy(make_anchors(4)))
    torch.testing.assert_close(ov[:, 14], torch.tensor([0.3985, 0.0653, 0.]), atol=1e-4, rtol=0)
    go, gi = map_to_ground_truth(ov, thresh=None)
    torch.testing.assert_close(go, torch.tensor([0]*8 + [0.0356, 0.0549, 0.0922, 1.99, 0.2598, 1.99, 1.99, 0]), atol=1e-4, rtol=0)
    assert gi.tolist() == [0]*8 + [1, 1, 0, 2, 1, 1, 0, 0]
    t_lbl, t_bb = match_one(bbox, clas, make_anchors(4))
    assert t_lbl.tolist() == [0]*11 + [18, 0, 11, 9, 0]
    assert torch.equal(t_bb[[11, 13, 14]], bbox[[2, 1, 0]])

def test_map_against_lesson_code():
    "thresh=None is the lesson's function, duplicates and exact ties included"
    g = torch.Generator().manual_seed(1)
    for i in range(300):
        ancs = list(ANCHOR_SETS.values())[i % len(ANCHOR_SETS)]
        G = int(torch.randint(1, 10, (1,), generator=g))
        bbs = rand_boxes(G, g, grid=[None, 8, 16][i % 3])
        if G > 2: bbs[-1] = bbs[0]
        ov = box_iou(bbs, cxcywh2xyxy(ancs))
        ref_o, ref_i = lesson_map_to_ground_truth(ov.clone())
        go, gi = map_to_ground_truth(ov, thresh=None)
        assert torch.equal(go, ref_o) and torch.equal(gi, ref_i)
        go5, gi5 = map_to_ground_truth(ov, thresh=0.5)
        assert torch.equal(go5, ref_o) and torch.equal(gi5, torch.where(ref_o > 0.5, ref_i, -1))

def test_map_against_torchvision():
    "torchvision's SSDMatcher, where its two differences (IoU == thresh, zero-IoU objects) and index_put races cannot occur"
    g = torch.Generator().manual_seed(2)
    n = 0
    for i in range(300):
        ancs = list(ANCHOR_SETS.values())[i % len(ANCHOR_SETS)]
        G = int(torch.randint(1, 10, (1,), generator=g))
        ov = box_iou(rand_boxes(G, g), cxcywh2xyxy(ancs))
        thresh = [0.3, 0.4, 0.5, 0.6][i % 4]
        if len(set(ov.argmax(1).tolist())) < G or (ov == thresh).any(): continue
        assert torch.equal(map_to_ground_truth(ov, thresh)[1], SSDMatcher(thresh)(ov))
        n += 1
    assert n > 200

def test_map_corner_cases():
    ancs = cxcywh2xyxy(make_anchors(4))
    crowd = torch.tensor([[0.27, 0.27, 0.48, 0.48], [0.30, 0.30, 0.45, 0.45]])   # same best anchor: later wins
    gi = map_to_ground_truth(box_iou(crowd, ancs))[1]
    assert gi[5] == 1 and (gi == 0).sum() == 0
    straddle = torch.tensor([[0.375, 0.25, 0.625, 0.5]])                          # tied anchors: first wins
    assert map_to_ground_truth(box_iou(straddle, ancs))[1][[5, 6]].tolist() == [0, -1]
    empty = torch.tensor([[0.3, 0.3, 0.3, 0.3]])                                  # zero IoU: never forced
    assert (map_to_ground_truth(box_iou(empty, ancs))[1] == -1).all()
    go, gi = map_to_ground_truth(torch.zeros(0, 16))
    assert go.shape == (16,) and (gi == -1).all()

@pytest.mark.parametrize('block', [1, 5, None])
def test_sparse_overlaps_exact(block):
    g = torch.Generator().manual_seed(3)
    for name,ancs in ANCHOR_SETS.items():
        bbs, a = rand_boxes(37, g, grid=8), cxcywh2xyxy(ancs)
        full = box_iou(bbs, a)
        best_iou, best_anc, obj, anc, iou = sparse_overlaps(bbs, a, 0.45, block=block)
        assert torch.equal(best_iou, full.max(1).values) and torch.equal(best_anc, full.max(1).indices)
        assert torch.equal(torch.stack([obj, anc]), (full > 0.45).nonzero().T)
        assert torch.equal(iou, full[full > 0.45])
    out = sparse_overlaps(torch.zeros(0, 4), a, 0.5)
    assert [len(o) for o in out] == [0]*5

def test_batched_matches_per_image_sweep():
    g = torch.Generator().manual_seed(4)
    n_pos = n_empty = 0
    for i in range(400):
        ancs = list(ANCHOR_SETS.values())[i % len(ANCHOR_SETS)]
        thresh = [0.5, 0.4, 0.3, 0.6, 0.][i % 5]
        bbs, lbls = rand_batch(g, ancs)
        t_lbl, t_bb = match_anchors(bbs, lbls, ancs, thresh)
        r_lbl, r_bb = per_image(bbs, lbls, ancs, thresh)
        assert torch.equal(t_lbl, r_lbl), i
        assert torch.equal(t_bb, r_bb), i
        empty = (lbls == 0).all(1)
        assert (t_lbl[empty] == 0).all() and torch.equal(t_bb[empty], cxcywh2xyxy(ancs).expand(int(empty.sum()), -1, -1))
        n_pos += int((t_lbl > 0).sum()); n_empty += int(empty.sum())
    assert n_pos > 1000 and n_empty > 100

def test_batched_ssd300():
    g = torch.Generator().manual_seed(5)
    ancs = ssd300_anchors()
    for _ in range(3):
        bbs, lbls = rand_batch(g, ancs, B=6, G=20)
        t = match_anchors(bbs, lbls, ancs)
        r = per_image(bbs, lbls, ancs)
        assert torch.equal(t[0], r[0]) and torch.equal(t[1], r[1])

def test_padding_never_matches():
    "The same objects with padding of zeros, junk, copies of real boxes or anchors, or no padding, give the same targets"
    g = torch.Generator().manual_seed(6)
    ancs = ANCHOR_SETS['189']
    bbs = torch.stack([rand_boxes(4, g) for _ in range(3)])
    lbls = torch.randint(1, 5, (3, 4), generator=g)
    lbls[2] = 0
    ref = match_anchors(bbs, lbls, ancs)
    for fill in (torch.zeros(3, 3, 4), torch.stack([rand_boxes(3, g) for _ in range(3)]), bbs[:, :3].clone(),
                 cxcywh2xyxy(ancs)[:9].view(3, 3, 4)):
        pb, pl = torch.cat([fill[:, :1], bbs, fill[:, 1:]], 1), torch.cat([torch.zeros(3, 1, dtype=torch.long), lbls, torch.zeros(3, 2, dtype=torch.long)], 1)
        out = match_anchors(pb, pl, ancs)
        assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])
        out1 = per_image(pb, pl, ancs)
        assert torch.equal(out1[0], ref[0]) and torch.equal(out1[1], ref[1])

def test_no_objects_at_all():
    ancs = ANCHOR_SETS['4x4']
    for G in (0, 3):
        t_lbl, t_bb = match_anchors(torch.rand(2, G, 4), torch.zeros(2, G, dtype=torch.long), ancs)
        assert t_lbl.shape == (2, 16) and (t_lbl == 0).all()
        assert torch.equal(t_bb, cxcywh2xyxy(ancs).expand(2, 16, 4))

def test_every_object_gets_an_anchor():
    "Every real object of positive area gets an anchor, unless a later object takes its best one"
    g = torch.Generator().manual_seed(7)
    for name,ancs in ANCHOR_SETS.items():
        bbs, lbls = rand_batch(g, ancs, B=8, G=10)
        t_lbl, t_bb = match_anchors(bbs, lbls, ancs)
        a = cxcywh2xyxy(ancs)
        for b in range(8):
            real = lbls[b] > 0
            best_iou, best = box_iou(bbs[b][real], a).max(1)
            for j,(box,k) in enumerate(zip(bbs[b][real], best)):
                matched = ((t_bb[b] == box).all(1) & (t_lbl[b] > 0)).any()
                if best_iou[j] == 0: assert not matched, (name, b, j)      # zero-area objects match nothing
                elif not (best[j+1:] == k).any(): assert matched, (name, b, j)   # unless lost to a later object

def test_encode_decode_targets():
    g = torch.Generator().manual_seed(8)
    for name,ancs in list(ANCHOR_SETS.items()) + [('ssd300', ssd300_anchors())]:
        bbs, lbls = rand_batch(g, ancs, B=4, G=8)
        t_lbl, t_bb = match_anchors(bbs, lbls, ancs)
        offs = encode_boxes(t_bb, ancs)
        assert torch.isfinite(offs).all()
        assert offs[t_lbl == 0].abs().max() < 1e-5                              # background encodes to zero
        torch.testing.assert_close(decode_boxes(offs, ancs), t_bb, atol=1e-5, rtol=0)

def test_dtypes_devices_grad():
    g = torch.Generator().manual_seed(9)
    ancs = ANCHOR_SETS['189']
    bbs, lbls = rand_batch(g, ancs, B=4, G=6)
    t64 = match_anchors(bbs.double(), lbls, ancs)
    r64 = per_image(bbs.double(), lbls, ancs)
    assert t64[1].dtype == torch.float64 and torch.equal(t64[0], r64[0]) and torch.equal(t64[1], r64[1])
    bg = bbs.clone().requires_grad_()
    t = match_anchors(bg, lbls, ancs)
    assert not t[1].requires_grad and torch.equal(t[1], match_anchors(bbs, lbls, ancs)[1])
    assert torch.equal(match_anchors(bbs, lbls, ancs)[0], match_anchors(bbs, lbls, ancs)[0])     # deterministic

def test_bad_input():
    ancs = ANCHOR_SETS['4x4']
    with pytest.raises(ValueError, match=r'gt_boxes must be \(B,G,4\)'): match_anchors(torch.rand(3, 4), torch.ones(3, dtype=torch.long), ancs)
    with pytest.raises(ValueError, match='gt_labels must be'): match_anchors(torch.rand(2, 3, 4), torch.ones(2, 4, dtype=torch.long), ancs)
    with pytest.raises(ValueError, match='anchors must be'): match_anchors(torch.rand(2, 3, 4), torch.ones(2, 3, dtype=torch.long), ancs[None])
    with pytest.raises(ValueError, match='thresh'): match_anchors(torch.rand(2, 3, 4), torch.ones(2, 3, dtype=torch.long), ancs, thresh=1.5)
