"""mAP: `evaluate_detections` against pycocotools' COCOeval on seeded random sets (misses, duplicates, crowd regions,
empty images, classes without gts, score and IoU ties, more than 100 detections per image and class); the VOC rules
against the devkit's `voc_eval` loop (py-faster-rcnn) on hand-built cases with `difficult` objects and random sweeps;
the readable `evaluate_class` against the vectorised version; COCO result files through pycocotools' `loadRes`; the
fastai `MAP` metric; bad input."""
import contextlib, io, json
from types import SimpleNamespace
import numpy as np, pytest, torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from fastai_det.metrics import (evaluate_detections, evaluate_class, voc_ap, coco_ap, to_coco_results,
                                save_coco_results, ap_table, MAP, MAP50, COCO_IOUS, COCO_AREAS)

STATS = ['map', 'map_50', 'map_75', 'map_small', 'map_medium', 'map_large',
         'mar_1', 'mar_10', 'mar_100', 'mar_small', 'mar_medium', 'mar_large']

def rand_set(seed, n_img=120, n_cls=12, W=640, H=480, grid=False, p_crowd=0.1, p_difficult=0., crowded=False):
    """Seeded random targets/preds: 0-10 gts per image (10% of images have none; class `n_cls` never has a gt), 0-3
    jittered detections per gt (duplicates; 15% with a wrong class), 0-7 false alarms, 10% of images without
    detections, duplicated gts. `grid`: coordinates on an 8-pixel grid and scores in tenths, so IoUs and scores tie.
    `crowded`: one image with 150 detections of one class (maxDets)"""
    rng = np.random.default_rng(seed)
    preds, targs = [], []
    for i in range(n_img):
        ng = int(rng.integers(0, 11)) if rng.random() > 0.1 else 0
        sz = np.exp(rng.uniform(np.log(4), np.log(300), (ng,2)))
        xy = rng.uniform(0, 1, (ng,2)) * ([W,H] - sz)
        gb = np.concatenate([xy, xy+sz], 1)
        if grid: gb = np.round(gb/8)*8; gb[:,2:] = np.maximum(gb[:,2:], gb[:,:2]+8)
        if ng > 1 and rng.random() < 0.3: gb[-1] = gb[0]                           # a duplicated gt
        gl = rng.integers(1, n_cls, ng)
        t = {'boxes': torch.tensor(gb), 'labels': torch.tensor(gl), 'iscrowd': torch.tensor(rng.random(ng) < p_crowd)}
        if p_difficult: t['difficult'] = torch.tensor(rng.random(ng) < p_difficult)
        targs.append(t)
        db, dl = np.zeros((0,4)), np.zeros(0, dtype=np.int64)
        if rng.random() > 0.1:
            src = np.repeat(np.arange(ng), rng.integers(0, 4, ng))
            wh = np.tile(gb[src,2:] - gb[src,:2], 2)
            nf = int(rng.integers(0, 8))
            fsz = np.exp(rng.uniform(np.log(4), np.log(300), (nf,2))); fxy = rng.uniform(0, 1, (nf,2)) * ([W,H] - fsz)
            db = np.concatenate([gb[src] + rng.normal(0, 0.15, (len(src),4))*wh, np.concatenate([fxy, fxy+fsz], 1)])
            if grid: db = np.round(db/8)*8
            db[:,2:] = np.maximum(db[:,2:], db[:,:2]+1)
            dl = np.concatenate([np.where(rng.random(len(src)) < 0.85, gl[src], rng.integers(1, n_cls+1, len(src))),
                                 rng.integers(1, n_cls+1, nf)]).astype(np.int64)
        if crowded and i == 0 and ng:
            j = rng.integers(0, 4, (150,4)) + np.repeat(gb[:1], 150, 0)
            db, dl = np.concatenate([db, j]), np.concatenate([dl, np.full(150, gl[0])])
        sc = rng.random(len(db))
        if grid: sc = np.round(sc*10)/10
        preds.append({'boxes': torch.tensor(db), 'scores': torch.tensor(sc), 'labels': torch.tensor(dl)})
    return preds, targs

def coco_gt(targs, n_cls):
    "A pycocotools COCO object for `targs`: image ids 1..n, category ids = labels 1..n_cls, area = box w*h"
    anns = []
    for i,t in enumerate(targs):
        for b,l,c in zip(t['boxes'].tolist(), t['labels'].tolist(), t['iscrowd'].tolist()):
            w, h = b[2]-b[0], b[3]-b[1]
            anns.append({'id': len(anns)+1, 'image_id': i+1, 'category_id': l, 'bbox': [b[0], b[1], w, h],
                         'area': w*h, 'iscrowd': int(c)})
    gt = COCO()
    gt.dataset = {'images': [{'id': i+1} for i in range(len(targs))], 'annotations': anns,
                  'categories': [{'id': c} for c in range(1, n_cls+1)]}
    with contextlib.redirect_stdout(io.StringIO()): gt.createIndex()
    return gt

def coco_dets(preds):
    "Results list in input order (pycocotools breaks score ties by it)"
    return [{'image_id': i+1, 'category_id': l, 'bbox': [b[0], b[1], b[2]-b[0], b[3]-b[1]], 'score': s}
            for i,p in enumerate(preds) for b,l,s in zip(p['boxes'].tolist(), p['labels'].tolist(), p['scores'].tolist())]

def run_cocoeval(gt, dets):
    with contextlib.redirect_stdout(io.StringIO()):
        E = COCOeval(gt, gt.loadRes(dets), 'bbox'); E.evaluate(); E.accumulate(); E.summarize()
    return E

@pytest.mark.parametrize('seed,grid,crowded', [(0, False, False), (1, True, False), (2, False, True), (3, True, True),
                                               (4, False, False), (5, True, False)])
def test_equals_pycocotools(seed, grid, crowded):
    preds, targs = rand_set(seed, grid=grid, crowded=crowded)
    E = run_cocoeval(coco_gt(targs, 12), coco_dets(preds))
    res = evaluate_detections(preds, targs)
    np.testing.assert_allclose([res[k] for k in STATS], E.stats, atol=1e-6, rtol=0)
    # per class at 0.5:0.95 and at 0.5 (pycocotools' precision is [T,R,K,A,M]; -1 for classes without gts)
    prec = E.eval['precision'][:,:,:,0,-1]
    valid = (prec > -1).all((0,1))
    for c,v in res['per_class'].items():
        k = c - 1
        assert v['ap'] == pytest.approx(prec[:,:,k].mean() if valid[k] else -1, abs=1e-9)
        assert v['ap_50'] == pytest.approx(prec[0,:,k].mean() if valid[k] else -1, abs=1e-9)
    assert res['per_class'][12]['ap'] == -1                                           # no gt of class 12
    np.testing.assert_allclose(res['precision'][:,:,:,0].numpy(), prec[:,:,res['classes'].numpy()-1], atol=1e-9)

def test_many_classes_images():
    preds, targs = rand_set(10, n_img=400, n_cls=40)
    E = run_cocoeval(coco_gt(targs, 40), coco_dets(preds))
    res = evaluate_detections(preds, targs, budget=2**10)                             # many small matching chunks
    np.testing.assert_allclose([res[k] for k in STATS], E.stats, atol=1e-6, rtol=0)
    res2 = evaluate_detections(preds, targs, threads=None)
    np.testing.assert_allclose(res['ap'], res2['ap'], atol=0)

def test_custom_thresholds_areas():
    "iouThrs and areaRng changed in pycocotools' params: compare its precision/recall arrays"
    preds, targs = rand_set(6, grid=True)
    gt = coco_gt(targs, 12)
    thrs, areas = np.array([0.3, 0.5, 0.7]), {'all': (0., 1e10), 'tiny': (0., 16.**2), 'rest': (16.**2, 1e10)}
    with contextlib.redirect_stdout(io.StringIO()):
        E = COCOeval(gt, gt.loadRes(coco_dets(preds)), 'bbox')
        E.params.iouThrs, E.params.areaRng, E.params.areaRngLbl = thrs, list(map(list, areas.values())), list(areas)
        E.params.maxDets = [5]
        E.evaluate(); E.accumulate()
    res = evaluate_detections(preds, targs, iou_thresholds=thrs, areas=areas, max_dets=5)
    k = res['classes'].numpy() - 1
    np.testing.assert_allclose(res['precision'].numpy(), E.eval['precision'][...,0][:,:,k], atol=1e-9)
    np.testing.assert_allclose(res['recall'].numpy(), E.eval['recall'][...,0][:,k], atol=1e-9)

def test_empty():
    e = {'boxes': torch.zeros(0,4), 'labels': torch.zeros(0, dtype=torch.long), 'scores': torch.zeros(0)}
    preds, targs = rand_set(7, n_img=20)
    assert evaluate_detections([e]*20, targs)['map'] == 0.                            # gts, no detections
    assert evaluate_detections(preds, [e]*20)['map'] == -1                            # detections, no gts
    assert evaluate_detections([], [])['map'] == -1
    assert evaluate_detections([e], [e], rule='voc')['map'] == -1
    # boxes given as empty lists / numpy arrays
    r = evaluate_detections([{'boxes': [], 'labels': [], 'scores': []}], [{'boxes': np.array([[0., 0., 10., 10.]]), 'labels': [1]}])
    assert r['map'] == 0. and r['per_class'][1]['n_gt'] == 1

def test_perfect_and_shuffled():
    "Exact detections give 1; the order of images and detections does not matter (distinct scores)"
    preds, targs = rand_set(8, p_crowd=0)
    perfect = [{'boxes': t['boxes'], 'labels': t['labels'], 'scores': torch.rand(len(t['labels']), dtype=torch.float64)} for t in targs]
    assert evaluate_detections(perfect, targs)['map'] == pytest.approx(1.)
    res = evaluate_detections(preds, targs)
    g = torch.Generator().manual_seed(0)
    o = torch.randperm(len(preds), generator=g).tolist()
    sh = []
    for i in o:
        q = torch.randperm(len(preds[i]['labels']), generator=g)
        sh.append({k: v[q] for k,v in preds[i].items()})
    res2 = evaluate_detections(sh, [targs[i] for i in o])
    assert res2['map'] == pytest.approx(res['map'], abs=1e-12)

@pytest.mark.parametrize('rule', ['coco', 'voc', 'voc07'])
def test_readable_equals_vectorised(rule):
    preds, targs = rand_set(9, n_img=40, n_cls=5, grid=True, p_difficult=0.15, p_crowd=0.1 if rule == 'coco' else 0)
    res = evaluate_detections(preds, targs, rule=rule)
    thrs = COCO_IOUS if rule == 'coco' else [0.5]
    areas = list(COCO_AREAS.values()) if rule == 'coco' else [(0., 1e10)]
    for k,c in enumerate(res['classes'].tolist()):
        for t,th in enumerate(thrs):
            for a,area in enumerate(areas):
                assert res['ap'][t,k,a].item() == pytest.approx(evaluate_class(preds, targs, c, th, area, rule), abs=1e-12)

# The VOC devkit, as py-faster-rcnn's `voc_eval.py` writes it (reading from memory instead of XML/txt files). The
# only change: a stable argsort of the scores, so that equal scores keep their input order.
def devkit_voc_ap(rec, prec, use_07_metric=False):
    if use_07_metric:
        ap = 0.
        for t in np.arange(0., 1.1, 0.1):
            if np.sum(rec >= t) == 0: p = 0
            else: p = np.max(prec[rec >= t])
            ap = ap + p / 11.
    else:
        mrec = np.concatenate(([0.], rec, [1.]))
        mpre = np.concatenate(([0.], prec, [0.]))
        for i in range(mpre.size - 1, 0, -1): mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
        i = np.where(mrec[1:] != mrec[:-1])[0]
        ap = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
    return ap

def devkit_voc_eval(preds, targets, classname, ovthresh=0.5, use_07_metric=False):
    class_recs, npos = {}, 0
    for i,t in enumerate(targets):
        m = np.asarray(t['labels']) == classname
        bbox = np.asarray(t['boxes'], dtype=float).reshape(-1,4)[m]
        difficult = np.asarray(t.get('difficult', np.zeros(len(m))), dtype=bool)[m]
        det = [False] * len(bbox)
        npos = npos + sum(~difficult)
        class_recs[i] = {'bbox': bbox, 'difficult': difficult, 'det': det}
    image_ids, confidence, BB = [], [], []
    for i,p in enumerate(preds):
        m = np.asarray(p['labels']) == classname
        image_ids += [i] * int(m.sum())
        confidence += np.asarray(p['scores'], dtype=float)[m].tolist()
        BB += np.asarray(p['boxes'], dtype=float).reshape(-1,4)[m].tolist()
    confidence, BB = np.array(confidence), np.array(BB).reshape(-1,4)
    sorted_ind = np.argsort(-confidence, kind='stable')
    BB = BB[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]
    nd = len(image_ids)
    tp, fp = np.zeros(nd), np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d, :].astype(float)
        ovmax = -np.inf
        BBGT = R['bbox'].astype(float)
        if BBGT.size > 0:
            ixmin = np.maximum(BBGT[:, 0], bb[0]); iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2]); iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + 1., 0.); ih = np.maximum(iymax - iymin + 1., 0.)
            inters = iw * ih
            uni = ((bb[2] - bb[0] + 1.) * (bb[3] - bb[1] + 1.) +
                   (BBGT[:, 2] - BBGT[:, 0] + 1.) * (BBGT[:, 3] - BBGT[:, 1] + 1.) - inters)
            overlaps = inters / uni
            ovmax = np.max(overlaps); jmax = np.argmax(overlaps)
        if ovmax > ovthresh:
            if not R['difficult'][jmax]:
                if not R['det'][jmax]: tp[d] = 1.; R['det'][jmax] = 1
                else: fp[d] = 1.
        else: fp[d] = 1.
    if npos == 0: return -1.                                                           # the devkit divides by zero here
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return devkit_voc_ap(rec, prec, use_07_metric)

def T(*rows): return torch.tensor(rows, dtype=torch.float64)

VOC_CASES = {
    # a detection on a difficult object is ignored; a duplicate is an FP; a miss is an FP
    'difficult_dup_miss': ([{'boxes': T([0,0,99,99], [200,0,299,99], [0,0,99,90], [500,0,599,99], [400,0,499,99]),
                             'scores': torch.tensor([.9, .8, .7, .6, .5]), 'labels': torch.tensor([1,1,1,1,1])}],
                           [{'boxes': T([0,0,99,99], [200,0,299,99], [400,0,499,99]), 'labels': torch.tensor([1,1,1]),
                             'difficult': torch.tensor([False, True, False])}]),
    # the best gt is difficult although a regular gt also overlaps > 0.5: the devkit ignores the detection
    'best_is_difficult': ([{'boxes': T([10,0,109,99], [0,0,99,99]), 'scores': torch.tensor([.9, .4]), 'labels': torch.tensor([1,1])}],
                          [{'boxes': T([0,0,99,99], [12,0,111,99]), 'labels': torch.tensor([1,1]),
                            'difficult': torch.tensor([False, True])}]),
    # the best gt is taken, another free gt overlaps > 0.5: the devkit calls it an FP (COCO would match the free one)
    'best_taken': ([{'boxes': T([0,0,99,99], [6,0,105,99]), 'scores': torch.tensor([.9, .8]), 'labels': torch.tensor([1,1])}],
                   [{'boxes': T([0,0,99,99], [20,0,119,99]), 'labels': torch.tensor([1,1]), 'difficult': torch.tensor([False, False])}]),
    # IoU exactly 0.5 with the devkit's +1 pixels: not a hit (strict '>'); two classes, two images, one all difficult
    'iou_half': ([{'boxes': T([0,0,99,49], [0,0,99,99]), 'scores': torch.tensor([.9, .3]), 'labels': torch.tensor([1,2])},
                  {'boxes': T([0,0,9,9]), 'scores': torch.tensor([.5]), 'labels': torch.tensor([2])}],
                 [{'boxes': T([0,0,99,99], [0,0,99,99]), 'labels': torch.tensor([1,2]), 'difficult': torch.tensor([False, False])},
                  {'boxes': T([0,0,9,9]), 'labels': torch.tensor([2]), 'difficult': torch.tensor([True])}]),
}

@pytest.mark.parametrize('case', list(VOC_CASES))
@pytest.mark.parametrize('rule', ['voc', 'voc07'])
def test_voc_hand_cases(case, rule):
    preds, targs = VOC_CASES[case]
    res = evaluate_detections(preds, targs, rule=rule)
    for k,c in enumerate(res['classes'].tolist()):
        assert res['ap'][0,k,0].item() == pytest.approx(devkit_voc_eval(preds, targs, c, 0.5, rule == 'voc07'), abs=1e-12)

def test_voc_hand_values():
    "The hand cases' numbers, worked out by hand"
    r = lambda case, rule='voc': evaluate_detections(*VOC_CASES[case], rule=rule)
    assert r('difficult_dup_miss')['map'] == pytest.approx(0.5*1 + 0.5*0.5)                  # TP, ign, FP, FP, TP of 2
    assert r('difficult_dup_miss', 'voc07')['map'] == pytest.approx((6 + 5*0.5)/11)
    assert r('best_is_difficult')['map'] == pytest.approx(1.)                                # ignored, then TP
    assert r('best_taken')['map'] == pytest.approx(0.5)                                      # TP, FP of 2
    assert evaluate_detections(*VOC_CASES['best_taken'])['map_50'] == pytest.approx(1.)      # COCO matches the free gt
    assert r('iou_half')['per_class'][1]['ap'] == 0. and r('iou_half')['per_class'][2]['ap'] == pytest.approx(1.)

@pytest.mark.parametrize('seed', range(4))
def test_voc_random(seed):
    preds, targs = rand_set(20+seed, n_img=80, n_cls=6, grid=seed % 2 == 1, p_crowd=0, p_difficult=0.2)
    for rule in ('voc', 'voc07'):
        res = evaluate_detections(preds, targs, rule=rule)
        ref = np.array([devkit_voc_eval(preds, targs, c, 0.5, rule == 'voc07') for c in res['classes'].tolist()])
        np.testing.assert_allclose(res['ap'][0,:,0].numpy(), ref, atol=1e-12)
        assert res['map'] == pytest.approx(ref[ref > -1].mean(), abs=1e-12)
    res = evaluate_detections(preds, targs, rule='voc', iou_thresholds=[0.3, 0.7])
    for t,th in enumerate([0.3, 0.7]):
        ref = [devkit_voc_eval(preds, targs, c, th) for c in res['classes'].tolist()]
        np.testing.assert_allclose(res['ap'][t,:,0].numpy(), ref, atol=1e-12)

def test_voc_ap_devkit():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 30)); npos = int(rng.integers(1, 20))
        tp = np.cumsum(rng.random(n) < 0.5).clip(max=npos); fp = np.arange(1, n+1) - tp
        rec, prec = tp/npos, tp/np.maximum(tp+fp, np.finfo(np.float64).eps)
        for u in (False, True): assert voc_ap(rec, prec, u) == pytest.approx(devkit_voc_ap(rec, prec, u), abs=1e-12)
    assert voc_ap([0.6], [1.], use_07_metric=True) == pytest.approx(6/11)       # the devkit's 0.6000000000000001
    assert coco_ap([0.5, 1.], [1., 0.5]) == pytest.approx((51 + 50*0.5)/101)

def test_coco_results_roundtrip(tmp_path):
    preds, targs = rand_set(11, n_img=50)
    gt = coco_gt(targs, 12)
    ids = [i+1 for i in range(len(preds))]
    fn = save_coco_results(tmp_path/'out'/'dets.json', preds, ids)
    assert sorted(p.name for p in fn.parent.iterdir()) == ['dets.json']                       # no temporary left
    with contextlib.redirect_stdout(io.StringIO()): dt = gt.loadRes(str(fn))
    loaded = json.loads(fn.read_text())
    assert len(dt.getAnnIds()) == sum(len(p['labels']) for p in preds) == len(loaded)
    np.testing.assert_allclose([a['bbox'] for a in loaded], [a['bbox'] for a in coco_dets(preds)])
    E = run_cocoeval(gt, str(fn))
    np.testing.assert_allclose([evaluate_detections(preds, targs)[k] for k in STATS], E.stats, atol=1e-6)
    # category ids mapped, numpy image ids
    r = to_coco_results(preds[:3], np.array([10, 20, 30]), cat_ids={c: c*100 for c in range(13)})
    assert {o['image_id'] for o in r} <= {10, 20, 30} and all(o['category_id'] % 100 == 0 for o in r)
    json.dumps(r)
    with pytest.raises(ValueError, match='3 preds for 2 image ids'): to_coco_results(preds[:3], [1, 2])

def test_bad_input():
    e = {'boxes': torch.zeros(0,4), 'labels': torch.zeros(0, dtype=torch.long), 'scores': torch.zeros(0)}
    with pytest.raises(ValueError, match='2 preds for 1 targets'): evaluate_detections([e, e], [e])
    with pytest.raises(KeyError, match=r"preds\[1\] has no 'scores'"): evaluate_detections([e, {'boxes': [], 'labels': []}], [e, e])
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\] should be \(n,4\)"):
        evaluate_detections([e], [{'boxes': torch.zeros(2,5), 'labels': [1, 1]}])
    with pytest.raises(ValueError, match=r"targets\[0\]\['labels'\] has 1 values for 2 boxes"):
        evaluate_detections([e], [{'boxes': torch.zeros(2,4), 'labels': [1]}])
    with pytest.raises(TypeError, match=r'preds\[0\] should be a dict'): evaluate_detections([[1, 2]], [e])
    with pytest.raises(ValueError, match='rule should be one of'): evaluate_detections([e], [e], rule='voc12')
    with pytest.raises(ValueError, match='area ranges are a COCO rule'): evaluate_detections([e], [e], rule='voc', areas=COCO_AREAS)

class PaintedLoss:
    "`detect` returns fixed per-image dicts in [-1,1]"
    def __init__(self, dets): self.dets = dets
    def detect(self, pred): return self.dets

def test_map_metric():
    preds, targs = rand_set(12, n_img=8, W=128, H=96, p_crowd=0)
    scale = torch.tensor([128, 96, 128, 96]) / 2
    to_m1 = lambda b: (b / scale - 1).float()
    G = max(len(t['labels']) for t in targs)
    bbs, lbls = torch.zeros(8, G, 4), torch.zeros(8, G, dtype=torch.long)
    for i,t in enumerate(targs):                                                        # bb_pad-style: padding label 0
        n = len(t['labels']); bbs[i,:n], lbls[i,:n] = to_m1(t['boxes']), t['labels']
    dets = [{**p, 'boxes': to_m1(p['boxes'])} for p in preds]
    m = MAP()
    m.reset()
    for s in (slice(0, 5), slice(5, 8)):                                               # two batches
        m.accumulate(SimpleNamespace(pred=None, xb=(torch.zeros(s.stop-s.start, 3, 96, 128),), yb=(bbs[s], lbls[s]),
                                     loss_func=PaintedLoss(dets[s])))
    ref = evaluate_detections(preds, [{'boxes': t['boxes'], 'labels': t['labels']} for t in targs])
    assert m.name == 'map' and m.value == pytest.approx(ref['map'], abs=1e-5)
    assert [i for i,_,_ in m.records] == list(range(8))
    # records gathered twice (a DDP sampler's padding) count each image once
    class Twice(MAP):
        def _gather(self, records): return records + records[:3]
    m2 = Twice(); m2.records, m2.n_seen = m.records, m.n_seen
    assert m2.value == pytest.approx(m.value)
    m50 = MAP50(); m50.records = m.records
    assert m50.name == 'map_50' and m50.value == pytest.approx(ref['map_50'], abs=1e-5)
    m.reset(); assert m.value is None
    # a batch without any object (bb_pad gives G=0) and an image without detections
    m.accumulate(SimpleNamespace(pred=None, xb=(torch.zeros(2, 3, 96, 128),), yb=(torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long)),
                                 loss_func=PaintedLoss([dets[0], {'boxes': torch.zeros(0,4), 'scores': torch.zeros(0), 'labels': torch.zeros(0, dtype=torch.long)}])))
    assert m.value == -1 and len(m.records) == 2 and len(m.records[1][1]['boxes']) == 0

def test_ap_table():
    preds, targs = rand_set(13, n_img=30)
    res = evaluate_detections(preds, targs)
    tab = ap_table(res, vocab=[f'c{i}' for i in range(13)])
    assert list(tab.columns) == ['name', 'n_gt', 'ap', 'ap_50']
    assert tab.loc[12, 'ap'] == -1 and tab.loc[3, 'name'] == 'c3'
    assert tab['ap'][tab['ap'] >= 0].mean() == pytest.approx(res['map'])
