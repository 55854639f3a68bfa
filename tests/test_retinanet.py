"RetinaNet: pyramid shapes, anchors per level, and a one-batch overfit"
import pytest, torch, torchvision
from fastai.torch_core import set_seed
from fastai_det.bodies import create_det_body
from fastai_det.anchors import make_anchors
from fastai_det.retinanet import BodyFeatures, FPN, RetinaNet, retina_zooms, RETINA_RATIOS
from fastai_det.ssd import SSDLoss
from fastai_det.focal import focal_cls_loss

@pytest.mark.parametrize('arch,size,n_extra,grids', [('resnet18', 128, 1, [16, 8, 4, 2]), ('resnet18', 256, 2, [32, 16, 8, 4, 2]),
                                                    ('mobilenet_v3_small', 128, 1, [16, 8, 4, 2])])
def test_levels_and_anchor_counts(arch, size, n_extra, grids):
    body = create_det_body(getattr(torchvision.models, arch))
    m = RetinaNet(body, n_cls=5, size=size, nf=32, n_extra=n_extra).eval()
    assert m.grids(size) == grids
    ancs = make_anchors(grids, retina_zooms(), RETINA_RATIOS)
    assert len(ancs) == 9 * sum(g*g for g in grids)
    with torch.no_grad(): c, b = m(torch.zeros(2, 3, size, size))
    assert c.shape == (2, len(ancs), 6) and b.shape == (2, len(ancs), 4)
    assert torch.sigmoid(c[..., 1:]).mean().item() == pytest.approx(.01, rel=.2)      # prior bias
    # level order = anchor order: the first level's anchors are the smallest
    n0 = grids[0]**2 * 9
    assert ancs[:n0, 2:].max() < ancs[n0:, 2:].max()

def test_body_features_strides():
    f = BodyFeatures(create_det_body(torchvision.models.resnet18), size=128)
    with torch.no_grad(): cs = f(torch.zeros(1, 3, 128, 128))
    assert [c.shape[-1] for c in cs] == [16, 8, 4] and f.channels == [128, 256, 512]
    with pytest.raises(ValueError, match='no map at strides'): BodyFeatures(create_det_body(torchvision.models.resnet18), strides=(4, 64), size=32)

@pytest.mark.parametrize('loc_loss', [None, 'giou', 'ciou'])
def test_overfit_one_batch(loc_loss):
    set_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 128, 128, generator=g)
    bbs = torch.tensor([[[-.8, -.8, -.2, -.3], [.1, .2, .9, .8]], [[-.5, -.5, .5, .5], [0, 0, 0, 0]],
                        [[-.9, .5, -.7, .7], [0, 0, 0, 0]], [[0, 0, 0, 0], [0, 0, 0, 0]]])
    lbls = torch.tensor([[1, 2], [3, 0], [1, 0], [0, 0]])
    m = RetinaNet(create_det_body(torchvision.models.resnet18), n_cls=3, nf=32)
    loss_f = SSDLoss(make_anchors(m.grids(128), retina_zooms(), RETINA_RATIOS), focal_cls_loss, encoding='ssd', loc_loss=loc_loss)
    opt = torch.optim.Adam(m.parameters(), 1e-3); losses = []
    for _ in range(60):
        l = loss_f(m(x), bbs, lbls); l.backward(); opt.step(); opt.zero_grad(); losses.append(l.item())
    assert losses[-1] < losses[0] / 10, losses[::10]

def test_separable_head():
    "`sep=True`: the same outputs per anchor from depthwise-separable subnet convs, with fewer weights"
    body = lambda: create_det_body(torchvision.models.mobilenet_v3_small)
    full, sep = RetinaNet(body(), n_cls=5, nf=64), RetinaNet(body(), n_cls=5, nf=64, sep=True)
    n = lambda m: sum(p.numel() for p in m.head.cls_sub.parameters())
    assert n(sep) < n(full) / 5                                       # 9*64+64*64 against 9*64*64 weights per conv
    assert any(c.groups == 64 for c in sep.head.cls_sub.modules() if isinstance(c, torch.nn.Conv2d))
    with torch.no_grad(): (c1, b1), (c2, b2) = full.eval()(torch.zeros(1, 3, 128, 128)), sep.eval()(torch.zeros(1, 3, 128, 128))
    assert c1.shape == c2.shape and b1.shape == b2.shape

def test_softmax_prior():
    "With `softmax` (the 'ce' class loss) every anchor starts at P(background) = 0.99 under a softmax"
    m = RetinaNet(create_det_body(torchvision.models.mobilenet_v3_small), n_cls=5, nf=32, softmax=True).eval()
    with torch.no_grad(): c, _ = m(torch.zeros(2, 3, 128, 128))
    assert c.softmax(-1)[..., 0].mean().item() == pytest.approx(.99, abs=.005)

def test_learner_ce_sep(tmp_path):
    from fastai_det.data import make_shapes, read_coco, det_dls
    from fastai_det.retinanet import retinanet_learner
    d = make_shapes(tmp_path/'s', n_train=8, n_valid=4, n_test=1, show_progress=False)
    dls = det_dls(read_coco(d/'train.json'), read_coco(d/'valid.json'), size=128, bs=4, show_progress=False)
    learn = retinanet_learner(dls, torchvision.models.mobilenet_v3_small, loss='ce', sep=True)
    assert learn.loss_func.softmax and any(c.groups > 1 for c in learn.model.head.modules() if isinstance(c, torch.nn.Conv2d))
    with torch.no_grad(): c, _ = learn.model.eval()(dls.one_batch()[0])
    assert c.softmax(-1)[..., 0].mean().item() > .95

def test_fpn_equals_torchvision():
    """Our FPN is torchvision's FeaturePyramidNetwork with LastLevelP6P7 on C5 (RetinaNet's extra levels), given the same
    weights: 1x1 laterals, nearest top-down upsampling to the lateral's size, 3x3 smoothing, P6 from C5, P7 from relu(P6)"""
    from collections import OrderedDict
    from torchvision.ops import FeaturePyramidNetwork
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    torch.manual_seed(0)
    chs, nf = [24, 40, 96], 32
    ours = FPN(chs, nf, n_extra=2)
    tv = FeaturePyramidNetwork(chs, nf, extra_blocks=LastLevelP6P7(chs[-1], nf))
    pairs = [(tv.inner_blocks[i][0], ours.lat[i]) for i in range(3)] + [(tv.layer_blocks[i][0], ours.smooth[i]) for i in range(3)]
    pairs += [(tv.extra_blocks.p6, ours.extra[0]), (tv.extra_blocks.p7, ours.extra[1])]
    with torch.no_grad():
        for t,o in pairs: t.weight.copy_(o.weight); t.bias.copy_(o.bias)
    for sizes in ((16, 8, 4), (15, 8, 4), (20, 10, 5)):             # odd sizes: upsampling goes to the lateral's size, not x2
        cs = [torch.randn(2, c, s, s + 1) for c,s in zip(chs, sizes)]
        want = list(tv(OrderedDict((str(i), c) for i,c in enumerate(cs))).values())
        got = ours(cs)
        assert len(got) == len(want) == 5
        for a,b in zip(got, want): torch.testing.assert_close(a, b)

def test_ssd_loss_iou_kinds_equal_box_loss():
    "`SSDLoss(loc_loss=kind)`'s box term is `box_loss(kind)` of the decoded positive anchors, summed over the positives"
    from fastai_det.boxes import box_loss, decode_boxes
    from fastai_det.matching import match_anchors
    from fastai_det.ssd import targets01
    g = torch.Generator().manual_seed(0)
    ancs = make_anchors([4, 2], retina_zooms(), RETINA_RATIOS)
    bbs = torch.tensor([[[-.8, -.8, -.2, -.3], [.1, .2, .9, .8]], [[-.5, -.5, .5, .5], [0, 0, 0, 0]]])
    lbls = torch.tensor([[1, 2], [3, 0]])
    box_p = torch.randn(2, len(ancs), 4, generator=g)*.1
    cls_p = torch.randn(2, len(ancs), 4, generator=g)
    b, l = targets01(bbs, lbls)
    t_lbl, t_bb = match_anchors(b, l, ancs, 0.5)
    i, a = (t_lbl > 0).nonzero(as_tuple=True)
    for kind in ('iou', 'giou', 'diou', 'ciou'):
        f = SSDLoss(ancs, focal_cls_loss, encoding='ssd', loc_loss=kind)
        f((cls_p, box_p), bbs, lbls)
        want = box_loss(decode_boxes(box_p[i, a], ancs[a]), t_bb[i, a], kind).sum() / len(i)
        torch.testing.assert_close(f.parts['loc'], want)
    with pytest.raises(ValueError, match="loc_loss 'l2'"): SSDLoss(ancs, focal_cls_loss, loc_loss='l2')

def test_retinanet_learner_takes_kmeans_aspect_ratios(tmp_path):
    "`ratios=anchor_aspects(k-means shapes)`: 3 sizes x k shapes per cell, a head output per anchor, the shapes' aspect ratios kept"
    from fastai_det.data import make_shapes, read_coco, det_dls
    from fastai_det.retinanet import retinanet_learner
    from fastai_det.yolo import anchor_aspects
    p = make_shapes(tmp_path/'s', n_train=8, n_valid=4, show_progress=False)
    dls = det_dls(read_coco(p/'train.json'), read_coco(p/'valid.json'), size=64, bs=4, show_progress=False)
    wh = torch.tensor([[0.1, 0.2], [0.3, 0.15], [0.2, 0.2], [0.05, 0.4]])
    learn = retinanet_learner(dls, torchvision.models.mobilenet_v3_small, ratios=anchor_aspects(wh))
    ancs = learn.loss_func.ancs
    n_cells = sum(g*g for g in learn.model.grids(64))
    assert len(ancs) == n_cells*3*4 and learn.model(dls.one_batch()[0])[0].shape[1] == len(ancs)
    torch.testing.assert_close(ancs[:4, 3]/ancs[:4, 2], wh[:, 1]/wh[:, 0])
    torch.testing.assert_close(ancs[:4, 2]*ancs[:4, 3], torch.full((4,), float(ancs[0, 2]*ancs[0, 3])))   # unit-area stretches: one size
