"The two-stage lesson (10a): anchors and labelling pinned to torchvision, RoI pooling's arithmetic, the learner end to end."
import warnings
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)
warnings.filterwarnings('ignore', message='load_learner` uses Python', category=UserWarning)
import math, pytest, torch
from torchvision.ops import roi_pool, nms
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection._utils import Matcher, BalancedPositiveNegativeSampler
from fastai.learner import load_learner
from fastai_det.boxes import box_iou, clip_boxes, decode_boxes, xyxy2cxcywh, box_valid
from fastai_det.two_stage import (anchor_templates, feature_size, grid_anchors, rpn_match, sample_pos_neg, rpn_proposals,
                                  roi_quantize, faster_rcnn_learner, RPN_VARIANCES)

@pytest.mark.parametrize('scales,ratios', [((64,128,256), (0.5,1.,2.)), ((128,256,512), (0.5,1.,2.)), ((16,32,64), (0.5,1.,2.)),
                                           ((32,), (1.,)), ((10,23,50,77), (0.25,0.6,1.,3.))])
def test_anchors_equal_torchvision(scales, ratios):
    ag = AnchorGenerator((tuple(scales),), (tuple(ratios),))
    t = anchor_templates(scales, ratios)
    assert torch.equal(t, ag.generate_anchors(list(scales), list(ratios)))
    for size in [128, (446,650), (300,517), (64,96), (600,800)]:
        for stride in (8, 16, 32):
            fs = feature_size(size, stride)
            h,w = (size,size) if isinstance(size, int) else size
            ref = ag(ImageList(torch.zeros(1,3,h,w), [(h,w)]), [torch.zeros(1,1,*fs)])[0]
            mine = grid_anchors(size, stride, t)
            assert mine.shape == (fs[0]*fs[1]*len(t), 4)
            assert torch.equal(mine, ref), (scales, ratios, size, stride)

def test_course_numbers():
    t = anchor_templates((64,128,256), (0.5,1,2))
    assert t[0].tolist() == [-45,-23,45,23] and t[2].tolist() == [-181,-91,181,91] and t[8].tolist() == [-91,-181,91,181]
    assert feature_size((446,650), 32) == (14,21)
    assert len(grid_anchors((446,650), 32, t)) == 2646
    assert len(grid_anchors((600,800), 16, anchor_templates((128,256,512), (0.5,1,2)), grid_size=(38,50))) == 17100

def _rand_boxes(n, sz=100., min_wh=4., gen=None):
    xy = torch.rand(n, 2, generator=gen)*sz*0.8
    wh = torch.rand(n, 2, generator=gen)*sz*0.5 + min_wh
    return torch.cat([xy, xy+wh], 1)

@pytest.mark.parametrize('seed', range(6))
def test_rpn_match_equals_torchvision_matcher(seed):
    g = torch.Generator().manual_seed(seed)
    gts, ancs = _rand_boxes(int(torch.randint(1, 8, (1,), generator=g)), gen=g), _rand_boxes(300, gen=g)
    ancs = torch.cat([ancs, ancs[:20]])                            # duplicate anchors: ties in each object's best IoU
    iou = box_iou(gts, ancs)
    assert (iou.amax(1) > 0).all()
    for hi,lo,lq in [(0.7,0.3,True), (0.5,0.4,True), (0.7,0.3,False), (0.5,0.5,False)]:
        ref = Matcher(hi, lo, allow_low_quality_matches=lq)(iou)
        assert torch.equal(rpn_match(iou, hi, lo, lq), ref), (hi, lo, lq)

def test_rpn_match_batched_with_padding():
    g = torch.Generator().manual_seed(0)
    ancs = _rand_boxes(200, gen=g)
    gts = [_rand_boxes(n, gen=g) for n in (3, 1, 5, 0)]
    G = 5
    slots = [[0, 2, 4], [0], [0, 1, 2, 3, 4], []]                  # padding rows between objects too (`bb_pad` after augmentation)
    pad = torch.zeros(len(gts), G, 4); valid = torch.zeros(len(gts), G, dtype=torch.bool)
    for i,(o,r) in enumerate(zip(gts, slots)): pad[i,r] = o; valid[i,r] = True
    iou = box_iou(pad, ancs).masked_fill(~valid[...,None], -1.)
    m = rpn_match(iou)
    m_ref = Matcher(0.7, 0.3, allow_low_quality_matches=True)
    for i,(o,r) in enumerate(zip(gts, slots)):
        if len(o):
            ref = m_ref(box_iou(o, ancs))
            assert torch.equal(m[i], torch.where(ref >= 0, torch.tensor(r)[ref.clamp(min=0)], ref))
        else: assert (m[i] == -1).all()                            # no objects: every anchor negative

def test_sampler_counts_equal_torchvision():
    torch.manual_seed(0)
    lab = torch.randint(-1, 2, (5, 700))
    lab[0] = torch.where(lab[0] == 1, 0, lab[0]); lab[1,:650] = 1            # no positives; too many positives
    for n,f in [(256, 0.5), (64, 0.25), (1000, 0.5)]:
        pos,neg = sample_pos_neg(lab, n, f)
        tp,tn = BalancedPositiveNegativeSampler(n, f)(list(lab))
        assert torch.equal(pos.sum(1), torch.stack([o.sum() for o in tp])) and torch.equal(neg.sum(1), torch.stack([o.sum() for o in tn]))
        assert (lab[pos] == 1).all() and (lab[neg] == 0).all()

def test_proposals_equal_per_image_loop():
    torch.manual_seed(1)
    ancs = grid_anchors(128, 16, anchor_templates((16,32,64), (0.5,1,2)))
    obj, dlt = torch.randn(3, len(ancs)), torch.randn(3, len(ancs), 4)*0.3
    props, scores, valid = rpn_proposals(obj, dlt, ancs, 128, pre_nms=200, post_nms=20)
    for o,d,p,s,v in zip(obj, dlt, props, scores, valid):
        b = clip_boxes(decode_boxes(d, xyxy2cxcywh(ancs), RPN_VARIANCES), 128, 128)
        sc,i = o.topk(200); b = b[i]; ok = box_valid(b, 1.)
        k = nms(b[ok], sc[ok], 0.7)[:20]
        assert torch.allclose(p[v], b[ok][k]) and torch.allclose(s[v], sc[ok][k])
        assert (p[~v] == 0).all() and int(v.sum()) == min(20, len(nms(b[ok], sc[ok], 0.7)))

def test_roi_quantize_course_example():
    q, b = roi_quantize([0., 0., 665., 665.], 1/32, 7)
    assert q.tolist() == [0, 0, 20, 20] and b.tolist() == [2., 2.]
    assert round(665/32, 2) == 20.78 and round(665/32/7, 2) == 2.97
    q, b = roi_quantize([0., 100., 198., 224.], 1/32, 2, 'torchvision')
    assert q.tolist() == [0, 3, 6, 7] and b.tolist() == [2.5, 3.5]
    with pytest.raises(ValueError, match='mode'): roi_quantize([0., 0., 1., 1.], 1., 2, 'nearest')

def test_roi_quantize_is_what_roi_pool_pools():
    "With one bin, `roi_pool` is the max over the quantised RoI: on a map of increasing values, its bottom-right cell"
    H = W = 25
    fmap = torch.arange(H*W, dtype=torch.float32).view(1, 1, H, W)
    g = torch.Generator().manual_seed(0)
    for roi in _rand_boxes(200, sz=800., min_wh=1., gen=g).tolist():
        q,_ = roi_quantize(roi, 1/32, 1, 'torchvision')
        y2, x2 = min(int(q[3]), H-1), min(int(q[2]), W-1)
        assert roi_pool(fmap, torch.tensor([[0.] + roi]), 1, 1/32).item() == y2*W + x2, roi

@pytest.fixture(scope='module')
def dls():
    from fastai_det.data import shapes_dls
    return shapes_dls(task='boxes', size=128, bs=8, show_progress=False)

@pytest.fixture(scope='module')
def trained(dls):
    "A learner whose head memorised 4 images (body frozen), and the losses on the way"
    from fastai.torch_core import set_seed
    set_seed(0)
    learn = faster_rcnn_learner(dls, pretrained='shapes')
    b = [o[:4] for o in dls.valid.one_batch()]                     # the first 4 validation images: the same batch in any test order
    with torch.no_grad(): cs = learn.model.body.eval()(b[0])
    head = learn.model.head.train()
    opt = torch.optim.Adam(head.parameters(), 3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=150)
    losses = []
    for _ in range(150):
        loss = learn.loss_func(head(cs), *b[1:]); loss.backward(); opt.step(); opt.zero_grad(); sched.step(); losses.append(loss.item())
    learn.model.eval()
    return learn, b, losses

def test_learner_shapes(dls):
    learn = faster_rcnn_learner(dls)
    xb,bb,lb = dls.one_batch()
    pred = learn.model.eval()(xb)
    n_cls = len(dls.vocab) - 1
    assert [tuple(o.shape) for o in pred] == [(8,576), (8,576,4), (8,32,4), (8,32), (8,32,n_cls+1), (8,32,4)]
    loss = learn.loss_func(pred, bb, lb)
    assert loss.ndim == 0 and torch.isfinite(loss)
    learn.loss_func.reduction = 'none'
    assert learn.loss_func(pred, bb, lb).shape == (8,)
    learn.loss_func.reduction = 'mean'
    probs, boxes = learn.loss_func.activation(pred)
    assert probs.shape == (8,32,n_cls) and boxes.shape == (8,32,4)
    assert (probs[~pred[3]] == 0).all() and boxes.min() >= -1 and boxes.max() <= 1
    assert len(learn.opt_func(learn.splitter(learn.model), lr=1e-3).param_groups) == 2     # body / rest: freeze and fine_tune work
    empty = learn.loss_func(pred, bb[:, :0], lb[:, :0])                                      # no objects at all
    assert torch.isfinite(empty)

def test_one_batch_overfit(trained):
    _, _, losses = trained
    assert losses[-1] < losses[0]/10, (losses[0], losses[-1])

def test_predict_in_image_pixels(trained, dls, tmp_path):
    learn, _, _ = trained
    from PIL import Image
    fn = dls.train.items[0].fname
    big = tmp_path/'big.jpg'
    Image.open(fn).resize((300, 200)).save(big)                  # not square, not the input size
    d = learn.predict(big, score_thresh=0.05)
    assert set(d) == {'boxes', 'scores', 'labels', 'names'}
    assert len(d['boxes']) > 0
    b = d['boxes']
    assert (b >= 0).all() and (b[:,[0,2]] <= 300).all() and (b[:,[1,3]] <= 200).all() and (b[:,[0,2]] > 128).any()
    assert all(n == dls.vocab[int(l)] for n,l in zip(d['names'], d['labels']))
    learn.export(tmp_path/'frcnn.pkl')
    l2 = load_learner(tmp_path/'frcnn.pkl')
    d2 = l2.predict(big, score_thresh=0.05)
    assert torch.allclose(d2['boxes'], d['boxes'], atol=1e-3) and torch.equal(d2['labels'], d['labels'])

def test_fit_head_timed_trains_for_its_budget(tmp_path):
    "`fit_head_timed` trains the head for about its minutes and returns the last epoch's mAP; it refuses a learner without MAP metrics before training"
    from fastai.torch_core import set_seed
    from fastai_det.data import make_shapes, read_coco, det_dls
    from fastai_det.metrics import MAP, MAP50
    from fastai_det.two_stage import fit_head_timed, img_per_s
    from fastai_det.bodies import precompute
    set_seed(0)
    p = make_shapes(tmp_path/'s', n_train=32, n_valid=16, show_progress=False)
    dls = det_dls(read_coco(p/'train.json'), read_coco(p/'valid.json'), size=64, bs=8, show_progress=False)
    with pytest.raises(ValueError, match='needs MAP'): fit_head_timed(faster_rcnn_learner(dls, pretrained='shapes'), 0.05, 3e-3)
    learn = faster_rcnn_learner(dls, pretrained='shapes', metrics=[MAP(), MAP50()])
    r = fit_head_timed(learn, 0.05, 3e-3)                                      # 3 seconds
    assert r['feat_s'] > 0 and len(r['head'].recorder.values) == r['epochs'] >= 2
    assert r['train_s'] >= 0.05*60*0.9, r['train_s']                            # the budget is used (an upper bound would time the machine)
    last = dict(zip(r['head'].recorder.metric_names[1:-1], r['head'].recorder.values[-1]))
    assert (r['map'], r['map50']) == (last['map'], last['map_50']) and r['map'] <= r['map50']
    r2 = fit_head_timed(learn, 0.02, 3e-3, feats=precompute(learn, show_progress=False))
    assert r2['feat_s'] is None                                                 # features given: not timed here
    tr, inf = img_per_s(learn, n=2)
    assert 0 < tr < inf                                                         # a training step (forward, loss, backward) costs more than inference
