"""Our detectors against torchvision's, same data, same image size, same training wall-clock budget (issue 8).

    .venv/bin/python bench/bench_compare.py [--budget 8] [--every 2] [--size 160] [--models ssd,ssd-multi,retinanet,retinanet:mobilenet_v3_large,ssdlite,tv-retinanet]

Every model trains from scratch on the embedded shapes dataset (fresh, default size) on this machine's CPU threads,
fed by the same fastai DataLoaders (same augmentation, same batches: images squished to `--size`). Ours go through
fastai's `Learner` (Adam, constant lr); torchvision's through their own training API (`model(images, targets)` ->
loss dict, AdamW, constant lr) with their transform fixed to the same `--size`. The clock runs only while training:
every `--every` minutes it stops, the model detects on all valid images (boxes mapped back to the images' own pixels)
and `evaluate_detections` scores them (it equals pycocotools; see tests/test_metrics.py). Prints one table (mAP,
mAP@0.5 at every checkpoint, training and inference images/s) and writes `bench/compare.png` (mAP@0.5 against
training minutes) and `bench/compare.json`. Not a test: numbers depend on the machine and its load.
"""
import argparse, json, tempfile, time, math
from pathlib import Path
import torch, torchvision
from torch import Tensor
from fastai.callback.core import Callback, CancelFitException, CancelValidException
from fastai_det.data import make_shapes, read_coco, det_dls
from fastai_det.engine import build_learner, _targets
from fastai_det.ssd import unscale_boxes
from fastai_det.metrics import evaluate_detections

class Clock:
    "Training time with evaluation pauses taken out; calls `evaluate` every `every` s up to `budget` s"
    def __init__(self, budget, every, evaluate):
        self.budget,self.every,self.evaluate,self.rows = budget,every,evaluate,[]
        self.t0,self.paused,self.next,self.n_img = time.perf_counter(),0.,every,0
    def elapsed(self): return time.perf_counter() - self.t0 - self.paused
    def tick(self, bs)->bool:
        "Count a trained batch; evaluate at checkpoints; True when the budget is spent"
        self.n_img += bs
        el = self.elapsed()
        if el < self.next: return False
        t = time.perf_counter()
        m,inf_ips = self.evaluate()
        self.rows.append(dict(minutes=el/60, train_ips=self.n_img/el, infer_ips=inf_ips, **m))
        print(f"  {el/60:5.2f} min  map {m['map']:.3f}  map_50 {m['map_50']:.3f}  train {self.n_img/el:5.1f} img/s  infer {inf_ips:5.1f} img/s", flush=True)
        self.paused += time.perf_counter() - t
        self.next += self.every
        return self.next > self.budget + 1e-6

class ClockCB(Callback):
    order = 95
    def __init__(self, clock): self.clock = clock
    def before_validate(self): raise CancelValidException()
    def after_batch(self):
        if self.training and self.clock.tick(self.xb[0].shape[0]): raise CancelFitException()

def eval_ours(learn, dl, sizes, tgts):
    model = learn.model; model.eval(); preds = []
    t = time.perf_counter()
    with torch.no_grad():
        for xb,*_ in dl:
            probs,boxes = learn.loss_func.activation(model(xb))
            preds += learn.loss_func.detect_activated(probs, boxes, score_thresh=0.01)
    dt = time.perf_counter() - t
    model.train()
    for d,sz in zip(preds, sizes): d['boxes'] = unscale_boxes(d['boxes'], sz)
    m = evaluate_detections(preds, tgts)
    return dict(map=float(m['map']), map_50=float(m['map_50'])), len(preds)/dt

def run_ours(name, dls, loss, arch, lr, clock_args, sizes, tgts, **kwargs):
    learn = build_learner(name, dls, loss, arch, **kwargs)
    learn.metrics = []
    clock = Clock(*clock_args, evaluate=lambda: eval_ours(learn, dls.valid, sizes, tgts))
    with learn.no_bar(), learn.no_logging(): learn.fit(10_000, lr, cbs=ClockCB(clock))
    return clock.rows, sum(p.numel() for p in learn.model.parameters())

def tv_targets(bbs, lbls, size):
    out = []
    for bb,lb in zip(bbs.as_subclass(Tensor), lbls.as_subclass(Tensor)):
        b = ((bb+1)/2*size).clamp(0, size)
        keep = (lb > 0) & (b[:,2] > b[:,0]+1) & (b[:,3] > b[:,1]+1)
        out.append(dict(boxes=b[keep], labels=lb[keep].long()))
    return out

def eval_tv(model, dl, size, sizes, tgts):
    model.eval(); preds = []
    t = time.perf_counter()
    with torch.no_grad():
        for xb,*_ in dl: preds += model(list(xb.as_subclass(Tensor)))
    dt = time.perf_counter() - t
    model.train()
    for d,(w,h) in zip(preds, sizes): d['boxes'] = d['boxes'] * torch.tensor([w/size, h/size, w/size, h/size])
    m = evaluate_detections(preds, tgts)
    return dict(map=float(m['map']), map_50=float(m['map_50'])), len(preds)/dt

def tv_model(name, n_cls, size):
    from torchvision.models import detection as D
    if name == 'ssdlite': m = D.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=n_cls+1, score_thresh=0.01)
    else: m = D.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=n_cls+1, score_thresh=0.01, trainable_backbone_layers=5)
    m.transform.min_size, m.transform.max_size, m.transform.fixed_size = (size,), size, (size, size)
    return m

def run_tv(name, dls, size, lr, clock_args, sizes, tgts):
    model = tv_model(name, len(dls.vocab)-1, size).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    clock = Clock(*clock_args, evaluate=lambda: eval_tv(model, dls.valid, size, sizes, tgts))
    while True:
        for xb,bbs,lbls in dls.train:
            loss = sum(model(list(xb.as_subclass(Tensor)), tv_targets(bbs, lbls, size)).values())
            opt.zero_grad(); loss.backward(); opt.step()
            if clock.tick(len(xb)): return clock.rows, sum(p.numel() for p in model.parameters())

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--budget', type=float, default=8., help='training minutes per model')
    p.add_argument('--every', type=float, default=2., help='minutes between evaluations')
    p.add_argument('--size', type=int, default=128, help="the lesson's SSD grids (4,2,1) need 128 or 256 with a resnet body"); p.add_argument('--bs', type=int, default=32)
    p.add_argument('--arch', default='resnet18'); p.add_argument('--loss', default='ce', help="our class loss: 'ce' (hard-negative mined, as SSD and ssdlite), 'focal', 'bce'")
    p.add_argument('--sep', action=argparse.BooleanOptionalAction, default=True, help="our RetinaNet's head: depthwise-separable convs (--no-sep: full 3x3)")
    p.add_argument('--lr', type=float, default=1e-3, help='our learners (Adam)'); p.add_argument('--tv-lr', type=float, default=1e-3, help="torchvision's (AdamW)")
    p.add_argument('--models', default='ssd,ssd-multi,retinanet,ssdlite,tv-retinanet')
    p.add_argument('--data', default=None, help='a make-data folder (default: a fresh embedded dataset in a temp folder)')
    p.add_argument('--out', default=str(Path(__file__).parent/'compare'))
    a = p.parse_args()
    d = Path(a.data) if a.data else make_shapes(Path(tempfile.mkdtemp())/'shapes', show_progress=False)
    tr,va = read_coco(d/'train.json'), read_coco(d/'valid.json')
    sizes = [Image_size(f) for f in va.fnames]
    tgts = _targets(va, tr.classes)
    clock_args = (a.budget*60, a.every*60)
    res = {}
    print(f"{len(tr)} train / {len(va)} valid images, {len(tr.classes)} classes, {a.size} px, bs {a.bs}, {torch.get_num_threads()} threads, "
          f"{a.budget:g} training minutes per model; ours: Adam lr {a.lr:g}, {a.loss} class loss, RetinaNet head {'depthwise-separable' if a.sep else 'full 3x3'}; "
          f"torchvision's: AdamW lr {a.tv_lr:g}", flush=True)
    for name in a.models.split(','):
        torch.manual_seed(0)
        dls = det_dls(tr, va, 'boxes', size=a.size, bs=a.bs, show_progress=False)
        print(name, flush=True)
        if name in ('ssdlite', 'tv-retinanet'): rows,n_par = run_tv(name, dls, a.size, a.tv_lr, clock_args, sizes, tgts)
        else:
            model,_,arch = name.partition(':')                               # e.g. retinanet:mobilenet_v3_large
            kw = dict(sep=a.sep) if model == 'retinanet' else {}
            rows,n_par = run_ours(model, dls, a.loss, arch or a.arch, a.lr, clock_args, sizes, tgts, **kw)
        res[name] = dict(rows=rows, params=n_par)
    label = lambda n: (f"torchvision {n}" if n in ('ssdlite','tv-retinanet') else
                       f"fastai_det {n.partition(':')[0]} ({n.partition(':')[2] or a.arch})")
    mins = [r['minutes'] for r in next(iter(res.values()))['rows']]
    print(f"\nmAP / mAP@0.5 after N training minutes ({a.size} px, from scratch, evaluate_detections on {len(va)} valid images)")
    print(f"{'model':44s} {'params':>7s} " + ' '.join(f"{f'{m:.1f} min':>13s}" for m in mins) + f" {'train img/s':>11s} {'infer img/s':>11s}")
    for n,r in res.items():
        cells = ' '.join(f"{x['map']:5.3f}/{x['map_50']:5.3f}".rjust(13) for x in r['rows'])
        print(f"{label(n):44s} {r['params']/1e6:6.1f}M {cells} {r['rows'][-1]['train_ips']:11.1f} {r['rows'][-1]['infer_ips']:11.1f}")
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(dict(settings=vars(a), results=res), indent=1))
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig,ax = plt.subplots(figsize=(6,4))
    for n,r in res.items(): ax.plot([0]+[x['minutes'] for x in r['rows']], [0]+[x['map_50'] for x in r['rows']], marker='o', label=label(n))
    ax.set_xlabel('training minutes (2 CPU cores)'); ax.set_ylabel('mAP@0.5 (valid)'); ax.legend(); ax.grid(alpha=.3)
    fig.savefig(f"{out}.png", dpi=90, bbox_inches='tight')
    print(f"wrote {out}.json, {out}.png")

def Image_size(f):
    from PIL import Image
    with Image.open(f) as im: return im.size

if __name__ == '__main__': main()
