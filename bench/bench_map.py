"""Time COCO mAP: pycocotools' COCOeval, faster-coco-eval's COCOeval_faster (C++) and
`fastai_det.metrics.evaluate_detections`; print times, ratios and the twelve summary numbers side by side, and check
they agree to 1e-4.

Setup (from the project's issue): 2000 images x 20 classes x 100 detections per image (seeded), 3 to 10 gts per
image (3% crowd regions), images 640x480 so that small, medium and large objects all occur. Detections: 3 jittered
copies of each gt (15% with a wrong class) and random boxes for the rest, with random scores.

    .venv/bin/python bench/bench_map.py [--n-img 2000] [--n-cls 20] [--n-det 100] [--reps 3]

Not part of the test run. Timings depend on the machine and its load: compare the ratios between peers measured in
the same run. The peers are timed on evaluate+accumulate+summarize from their own COCO objects (`loadRes` is timed
separately); ours from the per-image dicts, conversion included.
"""
import argparse, contextlib, copy, io, time
import numpy as np, torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from faster_coco_eval import COCO as FCOCO, COCOeval_faster
from fastai_det.metrics import evaluate_detections

STATS = ['map', 'map_50', 'map_75', 'map_small', 'map_medium', 'map_large',
         'mar_1', 'mar_10', 'mar_100', 'mar_small', 'mar_medium', 'mar_large']

def bench_set(n_img, n_cls, n_det, seed, W=640, H=480):
    "Per-image target and prediction dicts (xyxy pixels)"
    rng = np.random.default_rng(seed)
    preds, targs = [], []
    rand_boxes = lambda n: (lambda sz: (lambda xy: np.concatenate([xy, xy+sz], 1))(rng.uniform(0, 1, (n,2)) * ([W,H] - sz)))(
        np.exp(rng.uniform(np.log(8), np.log(400), (n,2))).clip(max=[W-1, H-1]))
    for i in range(n_img):
        ng = int(rng.integers(3, 11))
        gb, gl = rand_boxes(ng), rng.integers(1, n_cls+1, ng)
        targs.append({'boxes': torch.tensor(gb), 'labels': torch.tensor(gl), 'iscrowd': torch.tensor(rng.random(ng) < 0.03)})
        nj = min(n_det, 3*ng); src = rng.integers(0, ng, nj)
        wh = np.tile(gb[src,2:] - gb[src,:2], 2)
        db = np.concatenate([gb[src] + rng.normal(0, 0.12, (nj,4))*wh, rand_boxes(n_det - nj)])
        db[:,2:] = np.maximum(db[:,2:], db[:,:2]+1)
        dl = np.concatenate([np.where(rng.random(nj) < 0.85, gl[src], rng.integers(1, n_cls+1, nj)), rng.integers(1, n_cls+1, n_det-nj)])
        sc = np.concatenate([rng.uniform(0.3, 1, nj), rng.uniform(0, 0.7, n_det-nj)])
        preds.append({'boxes': torch.tensor(db), 'scores': torch.tensor(sc), 'labels': torch.tensor(dl)})
    return preds, targs

def coco_dicts(preds, targs, n_cls):
    "COCO gt dataset (area = box w*h) and results list"
    anns = []
    for i,t in enumerate(targs):
        for b,l,c in zip(t['boxes'].tolist(), t['labels'].tolist(), t['iscrowd'].tolist()):
            w, h = b[2]-b[0], b[3]-b[1]
            anns.append({'id': len(anns)+1, 'image_id': i+1, 'category_id': l, 'bbox': [b[0], b[1], w, h], 'area': w*h, 'iscrowd': int(c)})
    ds = {'images': [{'id': i+1} for i in range(len(targs))], 'annotations': anns, 'categories': [{'id': c} for c in range(1, n_cls+1)]}
    res = [{'image_id': i+1, 'category_id': l, 'bbox': [b[0], b[1], b[2]-b[0], b[3]-b[1]], 'score': s}
           for i,p in enumerate(preds) for b,l,s in zip(p['boxes'].tolist(), p['labels'].tolist(), p['scores'].tolist())]
    return ds, res

def run_peer(coco_cls, eval_cls, ds, res, **kw):
    "-> (loadRes seconds, evaluate+accumulate+summarize seconds, stats)"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_cls(); gt.dataset = copy.deepcopy(ds); gt.createIndex()
        t0 = time.perf_counter(); dt = gt.loadRes(copy.deepcopy(res)); t1 = time.perf_counter()
        E = eval_cls(gt, dt, 'bbox', **kw); E.evaluate(); E.accumulate(); E.summarize()
        t2 = time.perf_counter()
    return t1-t0, t2-t1, np.array(E.stats[:12])

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--n-img', type=int, default=2000); p.add_argument('--n-cls', type=int, default=20)
    p.add_argument('--n-det', type=int, default=100); p.add_argument('--seed', type=int, default=0)
    p.add_argument('--reps', type=int, default=3, help='runs of ours and faster-coco-eval (best kept); pycocotools runs once')
    a = p.parse_args()
    preds, targs = bench_set(a.n_img, a.n_cls, a.n_det, a.seed)
    ds, res = coco_dicts(preds, targs, a.n_cls)
    print(f"{a.n_img} images, {a.n_cls} classes, {len(res)} detections, {len(ds['annotations'])} gts; "
          f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads by default")
    lr_py, t_py, s_py = run_peer(COCO, COCOeval, ds, res)
    fce = [run_peer(FCOCO, COCOeval_faster, ds, res, print_function=lambda *a, **k: None) for _ in range(a.reps)]
    lr_f, t_f, s_f = min(fce, key=lambda o: o[1])
    def ours(threads):
        ts = []
        for _ in range(a.reps):
            t0 = time.perf_counter(); r = evaluate_detections(preds, targs, threads=threads); ts.append(time.perf_counter()-t0)
        return min(ts), np.array([r[k] for k in STATS])
    t_o, s_o = ours(1)
    t_o2, s_o2 = ours(None)
    print(f"\n{'':34s}{'seconds':>9s}{'vs ours':>9s}")
    for name,t in [('pycocotools COCOeval', t_py), ('faster-coco-eval COCOeval_faster', t_f),
                   ('ours (evaluate_detections)', t_o), ('ours, torch default threads', t_o2)]:
        print(f"{name:34s}{t:9.3f}{t/t_o:8.1f}x")
    print(f"(loadRes, not included above: pycocotools {lr_py:.2f}s, faster-coco-eval {lr_f:.2f}s)\n")
    print(f"{'':12s}{'pycocotools':>13s}{'faster-coco':>13s}{'ours':>13s}")
    for k,x,y,z in zip(STATS, s_py, s_f, s_o): print(f"{k:12s}{x:13.6f}{y:13.6f}{z:13.6f}")
    d_py, d_f = np.abs(s_o - s_py).max(), np.abs(s_o - s_f).max()
    print(f"\nmax |ours - pycocotools| = {d_py:.2e}, max |ours - faster-coco-eval| = {d_f:.2e}, "
          f"max |threads 1 - default| = {np.abs(s_o - s_o2).max():.1e}")
    assert d_py < 1e-4 and np.abs(s_o - s_o2).max() == 0, "results differ"
    if d_f >= 1e-4: print("faster-coco-eval differs from pycocotools here")

if __name__ == '__main__': main()
