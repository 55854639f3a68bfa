"""Inference speed end to end (issue 16, item 4): image files in, detections in the images' own pixels out — decode,
resize, forward, box decoding, NMS — for `fastai-det predict`'s path against torchvision's ssdlite320_mobilenet_v3_large
and Ultralytics' YOLO11n, at the same input size, at batch 1 and batch 32, same images, same run, same threads.

    .venv/bin/python bench/bench_predict.py [--n 128] [--size 128] [--bs 1,32]      # YOLO11n needs pip install -e '.[bench]'

- ours: the CLI's default detector (`engine.train`'s defaults: RetinaNet, MobileNetV3-large, separable head), through
  `DetLearner.predict_batch` (fastai's test_dl: PIL decode, squish to --size, batch, model, decode, per-class NMS,
  boxes scaled back to each image).
- ssdlite: its own `GeneralizedRCNNTransform` set to a fixed --size (as in `bench/race.py`), PIL decode before it.
- YOLO11n: `YOLO('yolo11n.yaml').predict(files[i:i+bs], imgsz=--size)`, its own loader, letterbox and NMS. A list of files
  is one batch to Ultralytics 8.4 whatever `batch=` says (its model saw (3,3,128,128) for 3 files with `batch=1`), so it
  is given bs files at a time, as ours and ssdlite are; the log of 2026-12-02 passed all 128 at once, in both columns.

Weights are untrained on every side (speed does not depend on them); every score threshold is 0.01 so that NMS sees
comparable candidate counts. Each timing is the best of --reps runs after a warm-up. Prints images/s and the ratios to
ours, then the same for the networks alone (forward of a random batch), to tell the network's cost from the pipeline's. Not a test: the numbers depend on the machine and its load; the ratios are what to compare.
"""
import argparse, copy, inspect, sys, tempfile, time
from pathlib import Path
import torch, torchvision
from PIL import Image
from fastai_det.data import make_shapes, read_coco, det_dls
from fastai_det.engine import build_learner, train

HERE = Path(__file__).resolve().parent

def timeit(f, reps):
    f()                                                                         # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return min(ts)

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--n', type=int, default=128, help='images'); p.add_argument('--size', type=int, default=128)
    p.add_argument('--bs', default='1,32', help='batch sizes'); p.add_argument('--reps', type=int, default=3)
    p.add_argument('--peers', default='ssdlite,yolo11n')
    a = p.parse_args()
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp())
    d = make_shapes(tmp/'s', n_train=32, n_valid=a.n, n_test=0, show_progress=False)
    tr, va = read_coco(d/'train.json'), read_coco(d/'valid.json')
    files = list(va.fnames)
    dflt = {k: v.default for k,v in inspect.signature(train).parameters.items()}
    dls = det_dls(tr, va, 'boxes', size=a.size, bs=32, show_progress=False)
    learn = build_learner(dflt['model'], dls, dflt['loss'], dflt['arch'], dflt['sep'], 'none')
    learn.model.eval()
    runs = {}
    def ours(bs):
        with learn.no_bar(): learn.predict_batch(files, score_thresh=0.01, bs=bs)
    runs[f"fastai_det {dflt['model']} {dflt['arch']}"] = ours
    cl = lambda x: x.contiguous(memory_format=torch.channels_last)
    cl_model = copy.deepcopy(learn.model).to(memory_format=torch.channels_last)   # as predict runs it on a CPU (ChannelsLastPreds)
    nets = {f"fastai_det {dflt['model']} {dflt['arch']}": lambda x: cl_model(cl(x))}
    peers = a.peers.split(',')
    if 'ssdlite' in peers:
        tv = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=len(tr.classes)+1,
                                                                          score_thresh=0.01).eval()
        tv.transform.min_size, tv.transform.max_size, tv.transform.fixed_size = (a.size,), a.size, (a.size, a.size)
        to_t = torchvision.transforms.functional.pil_to_tensor
        def ssdlite(bs):
            with torch.inference_mode():
                for i in range(0, len(files), bs): tv([to_t(Image.open(f).convert('RGB')).float()/255 for f in files[i:i+bs]])
        runs['torchvision ssdlite320 mnv3-large'] = ssdlite
        nets['torchvision ssdlite320 mnv3-large'] = lambda x: tv.head(list(tv.backbone(x).values()))
    if 'yolo11n' in peers:
        sys.path.insert(0, str(HERE)); from race import yolo_offline
        yolo_offline(tmp)
        from ultralytics import YOLO
        y = YOLO('yolo11n.yaml', task='detect', verbose=False)
        def yolo(bs):                                                           # a list is one batch to it, whatever `batch=` says: give it bs files at a time
            for i in range(0, len(files), bs):
                for _ in y.predict([str(f) for f in files[i:i+bs]], imgsz=a.size, conf=0.01, iou=0.7, max_det=100, device='cpu', batch=bs,
                                   verbose=False, stream=True): pass
        runs['Ultralytics YOLO11n'] = yolo
        nets['Ultralytics YOLO11n'] = lambda x: y.predictor.model(x)            # the fused network its predictor runs (set up by a first predict)
    bss = [int(b) for b in a.bs.split(',')]
    res = {name: [len(files)/timeit(lambda: f(bs), a.reps) for bs in bss] for name,f in runs.items()}
    def net_rate(f, bs):
        x = torch.rand(bs, 3, a.size, a.size)
        with torch.inference_mode(): return bs*20/timeit(lambda: [f(x) for _ in range(20)], a.reps)
    net = {name: [net_rate(f, bs) for bs in bss] for name,f in nets.items()}
    print(f"{len(files)} images of {tr.annots[0].size[0]}x{tr.annots[0].size[1]} px or so, input {a.size} px, {torch.get_num_threads()} threads, "
          f"best of {a.reps}; images/s end to end (files in, detections in image pixels out)")
    print(f"{'':36s}" + ''.join(f"{f'bs {bs}':>10s}" for bs in bss) + ''.join(f"{f'x ours bs {bs}':>14s}" for bs in bss))
    base = next(iter(res.values()))
    for name,v in res.items():
        print(f"{name:36s}" + ''.join(f"{x:10.1f}" for x in v) + ''.join(f"{x/b:14.2f}" for x,b in zip(v, base)))
    print(f"the network alone (a random {a.size}x{a.size} batch, no decode, resize or postprocess), images/s:")
    base = next(iter(net.values()))
    for name,v in net.items():
        print(f"{name:36s}" + ''.join(f"{x:10.1f}" for x in v) + ''.join(f"{x/b:14.2f}" for x,b in zip(v, base)))

if __name__ == '__main__': main()
