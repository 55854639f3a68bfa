"""Does the shipped shapes body transfer? The same RetinaNet learner fine-tuned on a COCO folder this project did not
draw (`bench/foreign.py`: other shapes, colours, sizes, grayscale/RGBA files, category ids 3..90), once from the
shapes body and once from random weights, the same epochs; mAP scored by `evaluate_detections` on the images' own
pixels (through `evaluate_learner`, as `fastai-det eval` does).

    python bench/bench_transfer.py [--epochs 4] [--size 128]
"""
import argparse, json, time, sys
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).parent))
from foreign import make_foreign
from fastai.torch_core import set_seed
from torchvision.models import mobilenet_v3_large
from fastai_det.data import read_coco, det_dls
from fastai_det.retinanet import retinanet_learner
from fastai_det.engine import evaluate_learner

def main():
    p = argparse.ArgumentParser(); p.add_argument('--epochs', type=int, default=4); p.add_argument('--size', type=int, default=128)
    p.add_argument('--lr', type=float, default=2e-3); p.add_argument('--data', default='/tmp/foreign')
    a = p.parse_args()
    d = make_foreign(a.data)
    tr, va = read_coco(d/'train.json'), read_coco(d/'valid.json')
    res = {}
    for name, pre in [('shapes body', 'shapes'), ('random weights', False)]:
        set_seed(0)
        dls = det_dls(tr, va, 'boxes', size=a.size, bs=32, show_progress=False)
        learn = retinanet_learner(dls, mobilenet_v3_large, loss='ce', sep=True, pretrained=pre)
        t0 = time.perf_counter()
        with learn.no_bar(), learn.no_logging():
            if pre: learn.fine_tune(a.epochs - 1, a.lr)                   # 1 frozen epoch + the rest: the same epoch count
            else: learn.fit_one_cycle(a.epochs, a.lr)
        t = time.perf_counter() - t0
        with learn.no_bar(): m = evaluate_learner(learn, va)['metrics']
        res[name] = dict(map=m['map'], map_50=m['map_50'], train_s=round(t))
        print(f"{name:15} mAP {m['map']:.3f}  mAP@0.5 {m['map_50']:.3f}  ({a.epochs} epochs, {t:.0f} s)", flush=True)
    s, r = res['shapes body'], res['random weights']
    print(f"shapes body / random weights: mAP@0.5 {s['map_50']/max(r['map_50'],1e-9):.1f}x, mAP {s['map']/max(r['map'],1e-9):.1f}x")
    (Path(__file__).parent/'transfer.json').write_text(json.dumps(dict(args=vars(a), results=res), indent=1))

if __name__ == '__main__': main()
