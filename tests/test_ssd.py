"SSD head, loss and focal loss: batched loss against the lesson's per-image loop, focal against torchvision, learner round trips"
import pytest, torch, torchvision
import torch.nn.functional as F
from fastai_det.anchors import make_anchors, ssd300_anchors
from fastai_det.ssd import (SSDLoss, ssd_loss_loop, bce_cls_loss, bce_cls_loss_onehot, ce_cls_loss, actn_to_bb, bb_to_actn,
                            head_strides, SSDHead, cls_bias)
from fastai_det.focal import sigmoid_focal, focal_cls_loss

LESSON = make_anchors((4,2,1), (.7,1.,1.3), ((1.,1.),(1.,.5),(.5,1.)))

def rand_batch(seed, bs=8, max_obj=6, n_cls=5, A=189, empty_every=3):
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(0, max_obj+1, (bs,), generator=g); n[::empty_every] = 0          # empty images included
    ctr, wh = torch.rand(bs, max_obj, 2, generator=g), torch.rand(bs, max_obj, 2, generator=g)*.6 + .02
    bbs = torch.cat([ctr-wh/2, ctr+wh/2], -1)*2 - 1                                      # may stick out of [-1,1]
    lbls = torch.randint(1, n_cls+1, (bs, max_obj), generator=g)
    lbls[torch.arange(max_obj)[None] >= n[:, None]] = 0
    bbs[lbls == 0] = 0
    return (torch.randn(bs, A, n_cls+1, generator=g), torch.randn(bs, A, 4, generator=g)), bbs, lbls

@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('ancs', [LESSON, make_anchors(4)], ids=['189', '16'])
def test_batched_loss_equals_loop(seed, ancs):
    pred, bbs, lbls = rand_batch(seed, A=len(ancs))
    p1 = tuple(o.clone().requires_grad_() for o in pred); p2 = tuple(o.clone().requires_grad_() for o in pred)
    l1 = SSDLoss(ancs)(p1, bbs, lbls); l2 = ssd_loss_loop(p2, bbs, lbls, ancs)
    torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-4)
    l1.backward(); l2.backward()
    for a, b in zip(p1, p2): torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)

@pytest.mark.parametrize('cls', [bce_cls_loss, ce_cls_loss], ids=['bce', 'ce'])
@pytest.mark.parametrize('encoding', ['tanh', 'ssd'])
def test_loss_per_image(cls, encoding):
    "`reduction='none'` (what fastai's `get_preds(with_loss=True)` sets): each image's loss is the loss of that image alone"
    pred, bbs, lbls = rand_batch(3)
    loss = SSDLoss(LESSON, cls, encoding)
    loss.reduction = 'none'
    per = loss(pred, bbs, lbls)
    assert per.shape == (8,)
    alone = torch.stack([SSDLoss(LESSON, cls, encoding)(tuple(o[i:i+1] for o in pred), bbs[i:i+1], lbls[i:i+1]) for i in range(8)])
    torch.testing.assert_close(per, alone)

def test_all_empty_batch():
    pred, bbs, lbls = rand_batch(0, empty_every=1)
    loss = SSDLoss(LESSON)
    l = loss(pred, bbs, lbls)
    assert torch.isfinite(l) and loss.parts['n_pos'] == 1 and float(loss.parts['loc']) == 0   # n_pos clamped to 1
    torch.testing.assert_close(l, bce_cls_loss(pred[0], torch.zeros(8, 189, dtype=torch.long)))

def test_ssd300_loss_equals_loop():
    A = ssd300_anchors(); pred, bbs, lbls = rand_batch(1, bs=4, max_obj=20, A=len(A))
    torch.testing.assert_close(SSDLoss(A)(pred, bbs, lbls), ssd_loss_loop(pred, bbs, lbls, A), rtol=1e-5, atol=1e-3)

@pytest.mark.parametrize('seed', range(4))
def test_bce_without_onehot(seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(3, 500, 9, generator=g)*4).requires_grad_(); x2 = x.detach().clone().requires_grad_()
    t = torch.randint(0, 9, (3, 500), generator=g) * (torch.rand(3, 500, generator=g) < .2)
    a, b = bce_cls_loss(x, t), bce_cls_loss_onehot(x2, t)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-3); a.backward(); b.backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-6)
    assert x.grad[..., 0].abs().max() == 0                       # background column gets no gradient

@pytest.mark.parametrize('alpha,gamma', [(.25, 2.), (.5, 1.), (-1, 2.), (.25, 0.)])
def test_focal_equals_torchvision(alpha, gamma):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, generator=g)*5; t = (torch.rand(2000, generator=g) < .1).float()
    torch.testing.assert_close(sigmoid_focal(x, t, alpha, gamma), torchvision.ops.sigmoid_focal_loss(x, t, alpha, gamma, 'none'))
    logits = torch.randn(4, 189, 7, generator=g); targ = torch.randint(0, 7, (4, 189), generator=g)
    ref = torchvision.ops.sigmoid_focal_loss(logits[..., 1:], F.one_hot(targ, 7)[..., 1:].float(), alpha, gamma, 'sum')
    torch.testing.assert_close(focal_cls_loss(logits, targ, alpha, gamma), ref)

def test_focal_through_ssdloss():
    pred, bbs, lbls = rand_batch(2)
    l = SSDLoss(LESSON, focal_cls_loss, gamma=0., alpha=-1)(pred, bbs, lbls)        # gamma 0, no alpha: BCE
    torch.testing.assert_close(l, SSDLoss(LESSON, bce_cls_loss)(pred, bbs, lbls))
    with pytest.raises(TypeError, match="pass the function"): SSDLoss(LESSON, 'bce')
    from fastai_det.focal import cls_loss_fn
    assert cls_loss_fn('focal') is focal_cls_loss and cls_loss_fn('ce') is ce_cls_loss and cls_loss_fn(bce_cls_loss) is bce_cls_loss
    with pytest.raises(ValueError, match="loss 'x'"): cls_loss_fn('x')

def test_ce_hard_negatives():
    logits = torch.randn(2, 50, 4); targ = torch.zeros(2, 50, dtype=torch.long); targ[0, :3] = 2
    ce = F.cross_entropy(logits.flatten(0, 1), targ.flatten(), reduction='none').view(2, 50)
    exp = ce[0, :3].sum() + ce[0, 3:].topk(9).values.sum()          # image 1 has no positive: no negatives kept
    torch.testing.assert_close(ce_cls_loss(logits, targ), exp)
    torch.testing.assert_close(ce_cls_loss(logits, targ, None), ce.sum())

def test_decode_encode_roundtrip():
    g = torch.Generator().manual_seed(0)
    bb = actn_to_bb(torch.randn(189, 4, generator=g), LESSON)
    torch.testing.assert_close(actn_to_bb(bb_to_actn(bb, LESSON), LESSON), bb, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(actn_to_bb(torch.zeros(189, 4), LESSON), torchvision.ops.box_convert(LESSON, 'cxcywh', 'xyxy'))

def test_head_shapes_and_prior():
    for sz, strides in [(4, [[1],[2],[2]]), (7, [[2],[2],[2]]), (8, [[2],[2],[2]]), (16, [[2,2],[2],[2]])]:
        assert head_strides(sz) == strides
        h = SSDHead(32, 5, k=9, strides=strides).eval()
        c, b = h(torch.randn(2, 32, sz, sz))
        assert c.shape == (2, 189, 6) and b.shape == (2, 189, 4)
        assert torch.sigmoid(c[..., 1:]).mean().item() == pytest.approx(.01, abs=.005)
    with pytest.raises(ValueError, match='change the image size'): head_strides(3, (4, 2))
    torch.testing.assert_close(torch.softmax(cls_bias(5, softmax=True), 0)[0], torch.tensor(.99))

def test_time_budget_fits_the_schedule_to_the_clock(tmp_path):
    "A run with TimeBudget stops near its budget, records whole epochs, and ends with the learning rate annealed"
    import time
    from fastai_det.data import make_shapes, read_coco, det_dls
    from fastai_det.ssd import ssd_learner, TimeBudget
    p = make_shapes(tmp_path/'s', n_train=16, n_valid=4, n_test=0, show_progress=False)
    dls = det_dls(read_coco(p/'train.json'), read_coco(p/'valid.json'), size=64, bs=4, show_progress=False)
    learn = ssd_learner(dls, torchvision.models.mobilenet_v3_small, grids=2, zooms=(1.,), ratios=((1.,1.),))
    t0 = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1000, 1e-3, cbs=TimeBudget(0.2))
    assert time.perf_counter() - t0 < 60 and 2 <= len(learn.recorder.values) < 1000
    assert all(len(v) == len(learn.recorder.values[0]) for v in learn.recorder.values)
    assert learn.opt.hypers[-1]['lr'] < 1e-5      # annealed to under 1% of the peak (the last batch starts a little before the end)
    with pytest.raises(ValueError, match='minutes must be > 0'): TimeBudget(0)

def test_flip_tta_is_mirror_equivariant(tmp_path):
    "predict_batch(tta=True) joins the mirrored run's boxes, mirrored back: so a mirrored image gets the mirrored detections"
    from PIL import Image, ImageOps
    from fastai_det.data import make_shapes, read_coco, det_dls
    from fastai_det.ssd import ssd_learner, flip_boxes
    b = torch.rand(5, 4)*2 - 1
    assert torch.equal(flip_boxes(flip_boxes(b)), b)
    assert torch.equal(flip_boxes(torch.tensor([[-1., -.5, .2, .5]])), torch.tensor([[-.2, -.5, 1., .5]]))
    p = make_shapes(tmp_path/'s', n_train=8, n_valid=2, n_test=0, size=64, show_progress=False)
    dls = det_dls(read_coco(p/'train.json'), read_coco(p/'valid.json'), size=64, bs=4, aug=False, show_progress=False)
    torch.manual_seed(0)
    learn = ssd_learner(dls, torchvision.models.mobilenet_v3_small, grids=(2,1))
    img = Image.open(read_coco(p/'valid.json').fnames[0]).convert('RGB').resize((64, 64))
    kw = dict(score_thresh=0.0, iou_thresh=1.0, max_det=100000)   # no suppression: untrained scores tie, and NMS would pick among ties
    a, = learn.predict_batch([img], tta=True, **kw)
    m, = learn.predict_batch([ImageOps.mirror(img)], tta=True, **kw)
    plain = learn.predict_batch([img], **kw)[0]
    assert len(a['boxes']) and len(plain['boxes'])          # (one NMS over both runs may keep fewer boxes than one run alone)
    mirrored = torch.stack([64 - a['boxes'][:,2], a['boxes'][:,1], 64 - a['boxes'][:,0], a['boxes'][:,3]], 1)
    assert len(a['boxes']) == len(m['boxes'])
    row = lambda b, d: torch.cat([b, d['scores'][:,None]*1e3, d['labels'][:,None]*1e3], 1).double()
    d = torch.cdist(row(mirrored, a), row(m['boxes'], m), compute_mode='donot_use_mm_for_euclid_dist')
    assert d.min(1).values.max() < 1e-2 and d.min(0).values.max() < 1e-2     # the same boxes, scores and labels, as sets (ties may reorder them)


def test_body_stride_cuts_the_body_where_asked():
    "`ssd_learner(body_stride=16)` hands the head the body's 8x8 map at 128 px; the grids and anchors stay the lesson's"
    from fastai_det.bodies import cut_at_stride
    from fastai_det.bodies import create_det_body, body_out, block_strides
    body = create_det_body(torchvision.models.resnet18)
    assert body_out(cut_at_stride(body, 16), (128, 128)) == (256, 8, 8)
    assert body_out(cut_at_stride(body, 32), (128, 128)) == body_out(body, (128, 128))
    assert max(block_strides(cut_at_stride(body, 8))) == 8
    with pytest.raises(ValueError, match='no block with output stride 64'): cut_at_stride(body, 64)
    h = SSDHead(256, 5, k=9, strides=head_strides(8)).eval()
    c, b = h(cut_at_stride(body, 16).eval()(torch.randn(2, 3, 128, 128)))
    assert c.shape == (2, 189, 6) and b.shape == (2, 189, 4)
