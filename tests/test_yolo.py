"""YOLO (10b_yolo): batched targets pinned to the per-image loop, v1's loss on a hand example, k-means on known clusters,
the v2 encoding's round trip, a 1-batch overfit, predict in image pixels and the export round trip."""
import warnings, math
import pytest, torch
from pathlib import Path
from fastai_det.boxes import cxcywh2xyxy, xyxy2cxcywh, box_iou
from fastai_det.anchors import make_anchors
from fastai_det.yolo import (wh_iou, yolo_targets_one, yolo_targets, yolo_v1_targets, yolo_v1_loss, n_lost, kmeans_anchors,
                             mean_best_iou, anchor_ratios, yolo_decode, yolo_encode, yolo_learner, dls_wh, dls_boxes, YoloLoss)

warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)
warnings.filterwarnings('ignore', message='load_learner` uses Python', category=UserWarning)

def _rand_batch(g, bs, G):
    c = torch.rand(bs, G, 2, generator=g); wh = torch.rand(bs, G, 2, generator=g)*0.6 + 0.01
    bbs = torch.cat([c - wh/2, c + wh/2], -1).clamp(0, 1)
    lbls = torch.randint(0, 4, (bs, G), generator=g)                   # 0 = padding, about a quarter
    return bbs, lbls

SETUPS = [((7,), ((1.,1.),)),                                          # v1
          ((4,), (torch.tensor([[.1,.1],[.2,.3],[.3,.2],[.4,.4],[.6,.5]]),)),   # v2: one grid, 5 anchors
          ((16,8,4), (torch.tensor([[.05,.06],[.08,.1],[.1,.07]]), torch.tensor([[.15,.2],[.2,.15],[.25,.25]]),
                      torch.tensor([[.3,.45],[.45,.3],[.6,.6]])))]    # v3: three grids, 3 anchors each

@pytest.mark.parametrize('grids,shapes', SETUPS)
def test_targets_batched_equals_loop(grids, shapes):
    g = torch.Generator().manual_seed(0)
    n_collide = 0
    for it in range(40):
        bs,G = 5, int(torch.randint(0, 9, (1,), generator=g))
        bbs,lbls = _rand_batch(g, bs, G)
        if G >= 2:                                                     # two centres in one cell, in every sweep
            bbs[0,1] = bbs[0,0] + torch.tensor([.001, .001, -.001, -.001]); lbls[0,:2] = torch.tensor([1, 2])
        if G: lbls[-1] = 0                                             # an image with padding only
        t_lbl,t_bb = yolo_targets(bbs, lbls, grids, shapes)
        for i in range(bs):
            l1,b1 = yolo_targets_one(bbs[i], lbls[i], grids, shapes)
            assert torch.equal(l1, t_lbl[i]), (it, i)
            torch.testing.assert_close(b1, t_bb[i])
        assert (t_lbl[-1] == 0).all()
        n,k = n_lost(bbs, lbls, grids, shapes)
        assert n - k == int((t_lbl > 0).sum()) and k >= 0
        n_collide += k
    assert n_collide > 0                                               # the sweep did exercise collisions

def test_targets_empty_and_collision():
    t_lbl,t_bb = yolo_targets(torch.zeros(3, 0, 4), torch.zeros(3, 0, dtype=torch.long), (7,), ((1.,1.),))
    assert t_lbl.shape == (3, 49) and not t_lbl.any() and t_bb.shape == (3, 49, 4)
    bbs = torch.tensor([[[.1,.1,.2,.2], [.05,.05,.25,.25], [.6,.6,.9,.9]]])       # the first two share cell (row 1, col 1) at S=7
    t_lbl,t_bb = yolo_v1_targets(bbs, torch.tensor([[1, 2, 3]]), 7)
    assert t_lbl[0, 1*7+1] == 2 and torch.equal(t_bb[0, 1*7+1], bbs[0,1])         # the larger one wins
    assert t_lbl[0, 5*7+5] == 3 and int((t_lbl > 0).sum()) == 2
    assert n_lost(bbs, torch.tensor([[1, 2, 3]]), (7,)) == (3, 1)

def test_v1_loss_hand_example():
    pred = torch.zeros(1, 2, 2, 12)
    pred[0,0,1] = torch.tensor([0.3, 0.5, 0.25, 0.5, 0.8, 0., 0., 0.5, 0.5, 0.3, 0.2, 0.7])
    pred[0,0,0,4] = 0.4
    t_lbl,t_bb = yolo_v1_targets(cxcywh2xyxy(torch.tensor([[[0.75, 0.25, 0.5, 0.5]]])), torch.tensor([[2]]), 2)
    total,parts = yolo_v1_loss(pred, t_lbl, t_bb, B=2)
    assert math.isclose(parts['coord'], 5*(0.2**2 + (0.5 - 0.5**.5)**2), rel_tol=1e-5)
    assert math.isclose(parts['obj'], 0.3**2, rel_tol=1e-5)
    assert math.isclose(parts['noobj'], 0.5*(0.3**2 + 0.4**2), rel_tol=1e-5)
    assert math.isclose(parts['cls'], 0.2**2 + 0.3**2, rel_tol=1e-5)
    # swap the two boxes: the responsible one follows the IoU, so the loss is the same
    p2 = pred.clone(); p2[0,0,1,:5], p2[0,0,1,5:10] = pred[0,0,1,5:10], pred[0,0,1,:5]
    assert math.isclose(float(yolo_v1_loss(p2, t_lbl, t_bb, B=2)[0]), float(total), rel_tol=1e-6)
    # a perfect prediction costs only the no-object term of the other boxes
    p3 = torch.zeros(1, 2, 2, 12); p3[0,0,1,:5] = torch.tensor([.5, .5, .5, .5, 1.]); p3[0,0,1,11] = 1.
    assert float(yolo_v1_loss(p3, t_lbl, t_bb, B=2)[0]) < 1e-6

def test_wh_iou():
    a = torch.tensor([[2., 2.], [1., 4.]]); b = torch.tensor([[2., 2.], [4., 1.]])
    c = lambda wh: cxcywh2xyxy(torch.cat([torch.zeros(len(wh), 2), wh], -1))
    torch.testing.assert_close(wh_iou(a, b), box_iou(c(a), c(b)))

@pytest.mark.parametrize('stat', ['mean', 'median'])
def test_kmeans_recovers_known_clusters(stat):
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[.08, .1], [.3, .15], [.2, .5]])
    wh = torch.cat([c*(1 + 0.05*torch.randn(300, 2, generator=g)) for c in centres])
    anc = kmeans_anchors(wh, 3, stat=stat, seed=3)
    torch.testing.assert_close(anc, centres[centres.prod(-1).argsort()], atol=0.01, rtol=0.05)
    assert mean_best_iou(wh, anc) > 0.85 > mean_best_iou(wh, anc[:1])
    with pytest.raises(ValueError): kmeans_anchors(wh[:2], 3)

def test_anchor_ratios_give_make_anchors_the_shapes():
    anc = torch.tensor([[.1, .2], [.3, .15]])
    a = make_anchors(4, ratios=anchor_ratios(anc, 4))
    torch.testing.assert_close(a[:2, 2:], anc)

def test_encoding_round_trip_and_bounds():
    torch.manual_seed(0)
    grids = (13, 4)
    ancs = make_anchors(grids); cell = torch.cat([torch.full((g*g,), 1/g) for g in grids])
    t = torch.randn(3, len(ancs), 4)
    torch.testing.assert_close(yolo_encode(yolo_decode(t, ancs, cell), ancs, cell), t, atol=1e-3, rtol=1e-3)
    ctr = xyxy2cxcywh(yolo_decode(torch.full((1, len(ancs), 4), 20.), ancs, cell))[0,:,:2]
    assert ((ctr - ancs[:,:2]).abs() <= cell[:,None]/2 + 1e-6).all()    # the centre never leaves its cell

@pytest.fixture(scope='module')
def dls():
    from fastai_det.data import shapes_dls
    return shapes_dls(task='boxes', size=128, bs=8, show_progress=False)

def test_dls_boxes(dls):
    bb,lb = dls_boxes(dls)
    assert len(bb) == len(dls.train.items) and bb.min() >= 0 and bb.max() <= 1
    it = dls.train.items[0]; w,h = it.annot.size
    torch.testing.assert_close(bb[0, :len(it.annot[1])] * torch.tensor([w,h,w,h]), torch.tensor(it.annot[0], dtype=torch.float32).view(-1,4))
    assert dls_wh(dls).shape == (int((lb > 0).sum()), 2)

def test_one_batch_overfit(dls):
    torch.manual_seed(0)
    learn = yolo_learner(dls, pretrained='shapes')
    xb,bb,lb = dls.one_batch()
    body,head = learn.model.body.eval(),learn.model.head.train()
    with torch.no_grad(): cs = body(xb)
    opt = torch.optim.Adam(head.parameters(), 3e-3)
    losses = []
    for _ in range(40):
        loss = learn.loss_func(head(cs), bb, lb); loss.backward(); opt.step(); opt.zero_grad(); losses.append(loss.item())
    assert losses[-1] < losses[0]/10, losses[::10]

def test_scales_and_default_anchors(dls):
    learn = yolo_learner(dls, scales=1)
    lf = learn.loss_func
    assert lf.grids == [4] and len(lf.shapes[0]) == 5 and len(lf.ancs) == 4*4*5
    torch.testing.assert_close(lf.shapes[0], kmeans_anchors(dls_wh(dls), 5))
    with torch.no_grad(): out = learn.model.eval()(dls.one_batch()[0])
    assert out.shape == (8, 80, 5 + len(dls.vocab) - 1)
    learn3 = yolo_learner(dls)
    assert learn3.loss_func.grids == [16, 8, 4] and len(learn3.loss_func.ancs) == (256+64+16)*3
    with pytest.raises(ValueError): yolo_learner(dls, scales=2)

def test_predict_in_pixels_and_export(dls, tmp_path):
    from fastai.learner import load_learner
    from fastai.vision.core import PILImage
    from fastai_det.data import DetImage
    torch.manual_seed(0)
    learn = yolo_learner(dls, pretrained='shapes')
    fn = next(o.fname for o in dls.valid.items if PILImage.create(o.fname).size[0] != PILImage.create(o.fname).size[1])
    img = PILImage.create(fn); w,h = img.size
    d = learn.predict(fn, score_thresh=1e-6)
    assert set(d) == {'boxes', 'scores', 'labels', 'names'} and len(d['boxes'])
    assert d['names'] == [dls.vocab[int(o)] for o in d['labels']]
    assert (d['boxes'][:,0::2] <= w + 1e-3).all() and (d['boxes'][:,1::2] <= h + 1e-3).all() and (d['boxes'] >= 0).all()
    # the same detections as the activations in [-1,1], mapped to this image's own (non-square) pixels
    with learn.no_bar(): probs,boxes = learn.get_preds(dl=dls.test_dl([DetImage.create(fn)]))[0]
    ref = learn.loss_func.detect_activated(probs, boxes, score_thresh=1e-6)[0]
    px = ((ref['boxes'] + 1)/2 * torch.tensor([w,h,w,h])).clamp(min=0)
    px = torch.minimum(px, torch.tensor([w,h,w,h], dtype=torch.float32))
    torch.testing.assert_close(d['boxes'], px)
    learn.export(tmp_path/'yolo.pkl')
    learn2 = load_learner(tmp_path/'yolo.pkl')
    d2 = learn2.predict(fn, score_thresh=1e-6)
    torch.testing.assert_close(d2['boxes'], d['boxes']); assert d2['names'] == d['names']

def test_fastai_training_loop_and_other_body(dls):
    "fine_tune (freeze via `det_splitter`, then unfreeze) runs a few batches of each phase, on a ResNet body too"
    from fastai.callback.training import ShortEpochCallback
    from fastai_det.metrics import MAP50
    from torchvision.models import resnet18
    torch.manual_seed(0)
    learn = yolo_learner(dls, resnet18, metrics=[MAP50()])
    body_ps = {id(p) for p in learn.model.body.parameters()}
    assert [all(id(p) in body_ps for p in g) for g in learn.splitter(learn.model)] == [True, False]
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(1, 1e-3, cbs=ShortEpochCallback(pct=0.02))
    assert len(learn.recorder.values) == 1 and all(math.isfinite(float(v)) for v in learn.recorder.values[-1][:2])

def test_export_model_torchscript(dls, tmp_path):
    "10c's `export_model` takes the YOLO learner as it takes the others: the traced file gives `DetectorExport`'s scores and pixel boxes"
    from fastai_det.export import export_model, load_exported, DetectorExport
    torch.manual_seed(0)
    learn = yolo_learner(dls, pretrained='shapes')
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad(): ref = DetectorExport.from_learner(learn)(x)
    out = load_exported(export_model(learn, tmp_path/'yolo.torchscript', 'torchscript'))(x.numpy())
    for o,r in zip(out, ref): torch.testing.assert_close(torch.as_tensor(o), r, atol=1e-4, rtol=1e-4)
    assert out[0].shape == (2, len(learn.loss_func.ancs), len(dls.vocab)-1) and out[1].max() > 1      # pixels, not [-1,1]
