"Single-object and multi-label learners: predict / export / load_learner round trips, boxes in the image's own pixels"
import pytest, torch, torchvision
from pathlib import Path
from PIL import Image
import numpy as np
from fastai.learner import load_learner
from fastai.torch_core import set_seed
from fastai_det.data import make_shapes, read_coco, det_dls, det_dblock, DetItem, ImgAnnot
import torch.nn.functional as F
from fastai_det.single_object import single_object_learner, SingleObjectLoss, _split
from fastai_det.bodies import create_det_body, weights_file, save_body, body_blocks, cut_at_stride
from fastai_det.multilabel import multilabel_learner, best_thresh

ARCH = torchvision.models.mobilenet_v3_small

@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp('l')/'s', n_train=16, n_valid=8, n_test=2, show_progress=False)

def test_single_object_roundtrip(shapes, tmp_path):
    set_seed(0)
    dls = det_dls(read_coco(shapes/'train.json'), read_coco(shapes/'valid.json'), 'largest', size=64, bs=4, show_progress=False)
    learn = single_object_learner(dls, ARCH)
    learn.fit(1, 1e-3)
    fn = dls.valid.items[0].fname
    p = learn.predict(fn)
    w, h = Image.open(fn).size
    assert p['name'] in dls.vocab[1:] and 0 <= p['prob'] <= 1
    assert -1e-3 <= p['box'][0] <= p['box'][2] <= w + 1e-3 and -1e-3 <= p['box'][1] <= p['box'][3] <= h + 1e-3
    learn.export(tmp_path/'s.pkl')
    p2 = load_learner(tmp_path/'s.pkl').predict(fn)
    assert p2['name'] == p['name'] and np.allclose(p2['box'], p['box'], atol=1e-4)

def test_single_object_box_maps_to_original_pixels(tmp_path):
    "Force the head's output to a known batch box: predict must scale it by the image's own w and h"
    img = tmp_path/'wide.png'; Image.new('RGB', (200, 80)).save(img)
    items = [DetItem(img, ImgAnnot([[10, 10, 50, 40]], ['a'], (200, 80)))]*4
    dls = det_dblock('largest', ['a', 'b'], size=64, aug=True, valid_idx=[2, 3]).dataloaders(items, bs=2, num_workers=0)
    learn = single_object_learner(dls, ARCH, head='pyramid')
    last = learn.model[1].out[-1]                                 # PyramidHead's last linear layer
    with torch.no_grad():
        last.weight.zero_(); last.bias.zero_()
        t = torch.tensor([-.5, 0., .5, .5])                      # batch box in [-1,1]
        last.bias[:4] = torch.log((t+1)/2 / (1-(t+1)/2))          # sigmoid^-1 of (t+1)/2
        last.bias[4+1] = 5.                                       # class 'b'
    p = learn.predict(img)
    np.testing.assert_allclose(p['box'], [50., 40., 150., 60.], atol=1e-3)
    assert p['name'] == 'b'

def test_multilabel_roundtrip(shapes, tmp_path):
    set_seed(0)
    dls = det_dls(read_coco(shapes/'train.json'), read_coco(shapes/'valid.json'), 'multilabel', size=64, bs=4, show_progress=False)
    learn = multilabel_learner(dls, ARCH)
    learn.fit(1, 1e-3)
    t, f1s, accs = best_thresh(learn)
    assert 0 < t < 1 and len(f1s) == len(accs) == 19
    fn = dls.valid.items[0].fname
    dec, bools, probs = learn.predict(fn)
    learn.export(tmp_path/'m.pkl')
    dec2, bools2, probs2 = load_learner(tmp_path/'m.pkl').predict(fn)
    assert list(dec) == list(dec2) and torch.allclose(probs, probs2, atol=1e-5) and len(probs) == 6

def test_pretrained_without_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match='never downloads'): create_det_body(torchvision.models.resnet18, pretrained=True)
    assert str(weights_file(torchvision.models.resnet18)[0]).startswith(str(tmp_path))

def test_save_body_roundtrip_and_bad_files(tmp_path):
    "A body saved block by block loads into a new body of the same arch (same outputs); other bodies and missing files are refused"
    set_seed(0)
    b1 = create_det_body(ARCH).eval()
    fn = save_body(b1, tmp_path/'sub'/'b.pth')
    b2 = create_det_body(ARCH, pretrained=fn).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(): assert torch.allclose(b1(x), b2(x), atol=1e-6)
    assert not torch.allclose(create_det_body(ARCH).eval()(x), b1(x))          # a fresh body differs: the load did it
    with pytest.raises(ValueError, match='another body'): create_det_body(torchvision.models.resnet18, pretrained=fn)
    with pytest.raises(ValueError, match='another body'): create_det_body(ARCH, pretrained=fn, n_in=1)
    with pytest.raises(FileNotFoundError, match='save_body'): create_det_body(ARCH, pretrained=tmp_path/'nope.pth')
    assert [p.name for p in (tmp_path/'sub').iterdir()] == ['b.pth']             # no temporary file left behind

def test_a_cut_body_loads_back_cut(tmp_path):
    "A body cut by `cut_at_stride` (as `ssd_learner(body_stride=16)` cuts it) saves only its blocks and loads back cut, with its weights"
    set_seed(0)
    whole = create_det_body(ARCH)
    b1 = cut_at_stride(whole, 16).eval()
    b2 = create_det_body(ARCH, pretrained=save_body(b1, tmp_path/'cut.pth')).eval()
    assert len(body_blocks(b2)) == len(body_blocks(b1)) < len(body_blocks(whole))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(): y1,y2 = b1(x),b2(x)
    assert y2.shape[-2:] == (4, 4) and torch.allclose(y1, y2, atol=1e-6)
    assert len(body_blocks(cut_at_stride(b2, 16))) == len(body_blocks(b2))      # cutting it again at its stride changes nothing
    with pytest.raises(ValueError, match='stride 32'): cut_at_stride(b2, 32)
    from fastai_det.bodies import BodyFeatures
    with pytest.raises(ValueError, match=r"no map at strides \[32\].*cut\.pth, saved cut"): BodyFeatures(b2, (8, 16, 32), 64)   # names the file

def test_learners_take_a_saved_body(shapes, tmp_path):
    set_seed(0)
    fn = save_body(create_det_body(ARCH), tmp_path/'b.pth')
    w0 = torch.load(fn)['0.0.weight']
    for task,mk in [('largest', single_object_learner), ('multilabel', multilabel_learner)]:
        dls = det_dls(read_coco(shapes/'train.json'), read_coco(shapes/'valid.json'), task, size=64, bs=4, show_progress=False)
        learn = mk(dls, ARCH, pretrained=fn)
        assert torch.equal(body_blocks(learn.model[0])[0][0].weight, w0)

def test_precompute_matches_the_body_and_fit_head_trains_only_the_head(shapes):
    "Features equal the frozen body's output on the un-augmented images; targets padded to the longest; only the head moves"
    from fastai_det.bodies import precompute, head_learner, body_and_rest
    from fastai_det.ssd import ssd_learner
    set_seed(0)
    dls = det_dls(read_coco(shapes/'train.json'), read_coco(shapes/'valid.json'), 'boxes', size=64, bs=4, show_progress=False)
    learn = ssd_learner(dls, ARCH, grids=(2,1))
    body,head = body_and_rest(learn.model)
    f = precompute(learn, show_progress=False)
    xb,bb,lb = dls.valid.new(shuffle=False, drop_last=False).one_batch()
    body.eval()
    with torch.no_grad(): torch.testing.assert_close(f.valid.dataset.xs[0][:len(xb)], body(xb))
    n_max = max(len(a[1]) for a in read_coco(shapes/'train.json').annots)
    assert f.train.dataset.ys[0].shape[1:] == (n_max, 4) and f.train.dataset.ys[1].shape[1:] == (n_max,)
    assert len(f.train.dataset) == len(dls.train_ds)
    b0 = {k: v.clone() for k,v in body.state_dict().items()}; h0 = [p.clone() for p in head.parameters()]
    hl = learn.fit_head(2, 1e-2, feats=f)
    assert hl.model is head and len(hl.recorder.values) == 2
    assert all(torch.equal(v, body.state_dict()[k]) for k,v in b0.items())             # weights and BatchNorm statistics
    assert any(not torch.equal(a, b) for a,b in zip(h0, head.parameters()))
    with torch.no_grad(): next(body.parameters()).mul_(2)
    with pytest.raises(ValueError, match='another body'): head_learner(learn, f)

def test_fit_head_scores_map_in_pixels_and_follows_no_bar(shapes):
    "`MAP` on precomputed features (several maps, no image in the batch) equals `MAP` on the images; inside `no_bar()`/`no_logging()` so is the head's training"
    from fastai.callback.progress import ProgressCallback
    from fastai_det.bodies import precompute, head_learner
    from fastai_det.retinanet import retinanet_learner
    from fastai_det.metrics import MAP
    set_seed(0)
    dls = det_dls(read_coco(shapes/'train.json'), read_coco(shapes/'valid.json'), 'boxes', size=64, bs=4, aug=False, show_progress=False)
    learn = retinanet_learner(dls, ARCH, metrics=[MAP(iou_thresholds=[0.5])])
    f = precompute(learn, show_progress=False)
    assert f.img_size == (64, 64)
    learn.model.eval()
    with learn.no_bar(), learn.no_logging():
        hl = learn.fit_head(1, 1e-2, feats=f)
        assert not any(isinstance(cb, ProgressCallback) for cb in hl.cbs)
        on_images = learn.validate()[-1]
        on_feats = head_learner(learn, f).validate()[-1]
    assert on_images == pytest.approx(on_feats, abs=1e-6)

def test_get_preds_with_loss_gives_a_loss_per_image(shapes):
    "fastai's `get_preds(with_loss=True)` (and so `Interpretation`'s top losses) works on a detector: one loss per validation image"
    from fastai_det.ssd import ssd_learner
    set_seed(0)
    dls = det_dls(read_coco(shapes/'train.json'), read_coco(shapes/'valid.json'), 'boxes', size=64, bs=4, show_progress=False)
    learn = ssd_learner(dls, ARCH, grids=(2,1))
    with learn.no_bar(): preds, targs, losses = learn.get_preds(with_loss=True)
    assert losses.shape == (len(dls.valid_ds),) and torch.isfinite(losses).all()
    assert learn.loss_func.reduction == 'mean'                    # put back after
    import matplotlib; matplotlib.use('Agg')
    from fastai.interpret import Interpretation
    with learn.no_bar():
        interp = Interpretation.from_learner(learn)
        interp.plot_top_losses(2)                                 # our method for (TensorImage, tuple) of `fastai_det.ssd`
    import matplotlib.pyplot as plt
    titles = [a.get_title() for a in plt.gcf().axes]
    assert len(titles) == 4 and sum(t.startswith('truth; loss') for t in titles) == 2

@pytest.mark.parametrize('model', ['ssd-multi', 'retinanet', 'faster-rcnn', 'yolo'])
def test_fastai_tools_work_on_every_detector(shapes, model):
    "`get_preds(with_loss=True)`, `get_preds(with_decoded=True)`, `Interpretation.plot_top_losses` and `show_results` on each detector the CLI trains"
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from fastai.interpret import Interpretation
    from fastai_det.engine import build_learner
    set_seed(0)
    dls = det_dls(read_coco(shapes/'train.json'), read_coco(shapes/'valid.json'), 'boxes', size=128, bs=4, show_progress=False)
    learn = build_learner(model, dls, 'ce', 'mobilenet_v3_small', None, 'none')
    n = len(dls.valid_ds)
    with learn.no_bar():
        _, _, losses = learn.get_preds(with_loss=True)
        _, _, (bb, lb) = learn.get_preds(with_decoded=True)
    assert losses.shape == (n,) and torch.isfinite(losses).all() and learn.loss_func.reduction == 'mean'
    assert bb.shape[0] == lb.shape[0] == n and bb.shape[-1] == 4 and lb.dtype == torch.long     # padded detections, xyxy in [-1,1]
    assert bb.abs().max() <= 1 + 1e-4 and ((lb >= 0) & (lb < len(dls.vocab))).all()
    with learn.no_bar():
        Interpretation.from_learner(learn).plot_top_losses(2)
    titles = [a.get_title() for a in plt.gcf().axes]
    assert sum(t.startswith('truth; loss') for t in titles) == 2, titles
    plt.close('all')
    axs = learn.show_results(max_n=2)
    assert sum(a.get_title() == 'prediction' for a in axs.flatten()) == 2
    plt.close('all')

def test_dense_head_answers_from_the_cell_where_points_at(tmp_path):
    "Force `DenseHead`'s output: `where` picks one cell, and predict gives that cell's class and its box, from the cell's centre, in the image's pixels"
    img = tmp_path/'wide.png'; Image.new('RGB', (200, 80)).save(img)
    items = [DetItem(img, ImgAnnot([[10, 10, 50, 40]], ['a'], (200, 80)))]*4
    dls = det_dblock('largest', ['a', 'b'], size=64, aug=True, valid_idx=[2, 3]).dataloaders(items, bs=2, num_workers=0)
    learn = single_object_learner(dls, ARCH)
    out = learn.model[1].out
    with torch.no_grad(): out.weight.zero_(); out.bias.zero_(); out.bias[5+1] = 5.      # every cell alike: class 'b', distances softplus(0)/2
    x = learn.model.eval()(dls.one_batch()[0])
    assert x.shape[-2:] == (4, 4)                                 # the stride-16 map of a 64 px input
    x[:, 0, 2, 1] = 10.                                           # `where` points at row 2, column 1
    d = F.softplus(torch.zeros(())).item()/2
    cx, cy = (1 + 0.5)/4*2 - 1, (2 + 0.5)/4*2 - 1                 # that cell's centre in [-1,1]
    bb, logits = _split(x)
    torch.testing.assert_close(bb[0], torch.tensor([cx-d, cy-d, cx+d, cy+d]).clamp(-1, 1))
    assert int(logits[0].argmax()) == 1
    with torch.no_grad(): out.bias[0] = 0.; out.bias[1:5] = torch.tensor([0.5413]*4)       # softplus(0.5413)/2 = 0.5: a box of half the image around each centre
    def point(m, i, o): o = o.clone(); o[:, 0, 2, 1] = 10.; return o   # through predict too, `where` points at row 2, column 1
    h = out.register_forward_hook(point)
    try: p = learn.predict(img)
    finally: h.remove()
    # that cell's centre (-0.25, 0.25) +- 0.5: box (-0.75, -0.25, 0.25, 0.75) in [-1,1], (0.125, 0.375, 0.625, 0.875) of the
    # image: (25, 30, 125, 70) px of the 200 x 80 one (the first cell, where a `where` ignored would land, gives (0, 0, 75, 30))
    np.testing.assert_allclose(p['box'], [25, 30, 125, 70], atol=0.05)
    assert p['name'] == 'b'

def test_single_object_heads_predict_in_image_pixels(shapes):
    "The three heads (`DenseHead` the default, `PyramidHead`, the lesson's) train, predict and name classes"
    set_seed(0)
    dls = det_dls(read_coco(shapes/'train.json'), read_coco(shapes/'valid.json'), 'largest', size=64, bs=4, show_progress=False)
    with pytest.raises(ValueError, match="head must be one of"): single_object_learner(dls, ARCH, head='flat')
    for head in ('dense', 'pyramid', 'lesson'):
        learn = single_object_learner(dls, ARCH, head=head)
        learn.fit(1, 1e-3)
        p = learn.predict(dls.valid.items[0].fname)
        assert p['name'] in dls.vocab[1:]
    dls = det_dls(read_coco(shapes/'train.json'), read_coco(shapes/'valid.json'), 'multilabel', size=64, bs=4, show_progress=False)
    learn = multilabel_learner(dls, ARCH)
    learn.fit(1, 1e-3)
    assert learn.get_preds()[0].shape == (len(dls.valid_ds), dls.c)

def test_dense_loss_by_hand():
    "`_dense_loss` on a 2x2 map of zeros, one box around the first cell's centre: log 4, the L1 of that cell's box, log 2"
    from fastai_det.single_object import _dense_loss
    pred = torch.zeros(1, 5 + 2, 2, 2)
    t_bb, t_c = torch.tensor([[-0.9, -0.9, 0.1, 0.1]]), torch.tensor([1])
    where, l1, ce = _dense_loss(pred, t_bb, t_c)
    d = F.softplus(torch.zeros(())).item()/2                          # every cell's box: its centre +- 0.347
    box0 = torch.tensor([-0.5 - d, -0.5 - d, -0.5 + d, -0.5 + d])     # the only cell whose centre is inside the box
    torch.testing.assert_close(where, torch.tensor(4.).log())
    torch.testing.assert_close(l1, (box0 - t_bb[0]).abs().mean())
    torch.testing.assert_close(ce, torch.tensor(2.).log())
    pred[0, 0, 0, 0] = 3.; pred[0, 5 + 1, 0, 0] = 2.                  # `where` and the class right at that cell: both terms fall
    where2, _, ce2 = _dense_loss(pred, t_bb, t_c)
    assert where2 < where and ce2 < ce
    small = torch.tensor([[0.4, 0.4, 0.45, 0.45]])                    # inside no cell's centre: the centre's cell still learns it
    _, l1s, _ = _dense_loss(torch.zeros(1, 7, 2, 2), small, t_c)
    box3 = torch.tensor([0.5 - d, 0.5 - d, 0.5 + d, 0.5 + d])
    torch.testing.assert_close(l1s, (box3 - small[0]).abs().mean())

@pytest.mark.parametrize('model', ['retinanet', 'yolo'])
def test_predict_in_channels_last_equals_the_plain_forward(shapes, model):
    "`predict_batch` runs the model channels-last on a CPU (`ChannelsLastPreds`): the same outputs as the default format, and the model is left as it was"
    from fastai_det.engine import build_learner
    from fastai_det.bodies import ChannelsLastPreds
    set_seed(0)
    dls = det_dls(read_coco(shapes/'train.json'), read_coco(shapes/'valid.json'), 'boxes', size=128, bs=4, show_progress=False)
    learn = build_learner(model, dls, 'ce', 'mobilenet_v3_small', None, 'none')
    files = list(read_coco(shapes/'valid.json').fnames)
    seen = []
    learn.add_cb(type('Spy', (ChannelsLastPreds.__base__,), dict(order=0, before_batch=lambda self: seen.append(self.xb[0].is_contiguous(memory_format=torch.channels_last)))))
    dets = learn.predict_batch(files, score_thresh=0., bs=4)                       # untrained: every candidate, up to max_det
    assert seen and all(seen)                                                       # the model saw channels-last batches
    conv = next(m for m in learn.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1))
    assert conv.weight.is_contiguous()                                             # put back: save and export see the default format
    dl = dls.test_dl(files, bs=4)
    with learn.no_bar():
        (p0, b0), (p1, b1) = learn.get_preds(dl=dl, reorder=False)[0], learn.get_preds(dl=dl, reorder=False, cbs=[ChannelsLastPreds()])[0]
    torch.testing.assert_close(p1, p0, atol=1e-4, rtol=1e-3); torch.testing.assert_close(b1, b0, atol=1e-4, rtol=1e-3)
    ref = learn.loss_func.detect_activated(p0, b0, score_thresh=0.)
    for d, r in zip(dets, ref):                                                    # near-equal scores may swap places: compare sorted
        torch.testing.assert_close(d['scores'].sort().values, r['scores'].sort().values, atol=1e-4, rtol=1e-3)
