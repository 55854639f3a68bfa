"""Inference throughput of `fastai-det predict`'s path against torchvision's ssdlite320_mobilenet_v3_large, same images,
same run, same threads. Both go from image files to detections in the images' own pixels: decode, resize (ours:
squish to --size; ssdlite: its own GeneralizedRCNNTransform to 320), forward, decode boxes, per-class NMS.

    .venv/bin/python bench/bench_predict.py [--n 128] [--size 128] [--bs 32] [--arch resnet18] [--model retinanet]

Untrained weights on both sides (throughput does not depend on them; ssdlite's score threshold is set to 0.01 and ours
too, so both run NMS on comparable candidate counts). Prints images/s and the ratio ours/ssdlite. Not a test: the
numbers depend on the machine and its load; the ratio is what to compare.
"""
import argparse, tempfile, time
from pathlib import Path
import torch, torchvision
from PIL import Image
from fastai_det.data import make_shapes, read_coco, det_dls
from fastai_det.cli import build_learner

def timeit(f, reps):
    f()                                                                         # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return min(ts)

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--n', type=int, default=128); p.add_argument('--size', type=int, default=128)
    p.add_argument('--bs', type=int, default=32); p.add_argument('--arch', default='resnet18')
    p.add_argument('--model', default='retinanet'); p.add_argument('--reps', type=int, default=3)
    a = p.parse_args()
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp())
    d = make_shapes(tmp/'s', n_train=a.bs, n_valid=a.n, n_test=0, show_progress=False)
    tr, va = read_coco(d/'train.json'), read_coco(d/'valid.json')
    dls = det_dls(tr, va, 'boxes', size=a.size, bs=a.bs, show_progress=False)
    learn = build_learner(a.model, dls, 'focal', a.arch)
    learn.model.eval()
    files = list(va.fnames)
    with learn.no_bar(): ours = timeit(lambda: learn.predict_batch(files, score_thresh=0.01, bs=a.bs), a.reps)

    tv = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=len(tr.classes)+1,
                                                                      score_thresh=0.01).eval()
    to_t = torchvision.transforms.functional.pil_to_tensor
    def run_tv():
        with torch.inference_mode():
            for i in range(0, len(files), a.bs):
                imgs = [to_t(Image.open(f).convert('RGB')).float()/255 for f in files[i:i+a.bs]]
                tv(imgs)
    theirs = timeit(run_tv, a.reps)
    print(f"{len(files)} images, {torch.get_num_threads()} threads, bs {a.bs}")
    print(f"{'':34s} {'img/s':>8s}")
    print(f"{f'fastai_det {a.model} {a.arch} @{a.size}px':34s} {len(files)/ours:8.1f}")
    print(f"{'torchvision ssdlite320 mnv3-large':34s} {len(files)/theirs:8.1f}")
    print(f"ratio ours/ssdlite: {theirs/ours:.2f}x")

if __name__ == '__main__': main()
