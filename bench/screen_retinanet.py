"""One-change-at-a-time screen of our RetinaNet's choices, on the clock of bench_compare.py (issue 8).

    .venv/bin/python bench/screen_retinanet.py BUDGET EVERY SPEC [SPEC ...]
    .venv/bin/python bench/screen_retinanet.py 4 2 '{"lr":1e-3}' '{"lr":1e-3,"sep":true,"loss":"ce"}' '{"tv":1,"lr":3e-3}'

Each SPEC is a JSON dict of settings that differ from the starting point (MobileNetV3-large body, strides 8/16/32
plus P6, focal loss, full 3x3 head, Adam lr 3e-3, bs 32, 128 px): `lr`, `loss` ('focal', 'ce', 'bce'), `sep`,
`strides` (e.g. [16,32]), `n_extra`, `base` (anchor size in cells), `nf`; `{"tv":1,"lr":...}` runs torchvision's
ssdlite with AdamW at that lr instead. Same data (the embedded dataset, default settings, made once in
/tmp/shapes_screen), same batches, same clock and scoring as bench_compare.py; prints mAP / mAP@0.5 every EVERY
training minutes. `build` makes the default RetinaNet, then swaps its body, pyramid and head for the screened ones
(`retinanet_learner` has no `strides` argument).
"""
import sys, json, torch, torchvision
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from bench_compare import Clock, ClockCB, eval_ours, run_tv, Image_size
from fastai_det.data import make_shapes, read_coco, det_dls
from fastai_det.engine import _targets
from fastai_det.retinanet import RetinaNet, RetinaHead, BodyFeatures, FPN, retina_zooms, RETINA_RATIOS
from fastai_det.bodies import create_det_body
from fastai_det.ssd import SSDLoss, DetLearner
from fastai_det.focal import cls_loss_fn
from fastai_det.anchors import make_anchors

def build(dls, arch='mobilenet_v3_large', strides=(8,16,32), n_extra=1, nf=96, n_convs=2, sep=False, base=2., loss='focal', thresh=0.5):
    n_cls = len(dls.vocab)-1
    body = create_det_body(getattr(torchvision.models, arch))
    m = RetinaNet(body, n_cls, 128, nf, n_extra, n_convs)
    m.body = BodyFeatures(body, strides=strides, size=128)
    m.fpn = FPN(m.body.channels, nf, n_extra)
    m.head = RetinaHead(nf, n_cls, 9, n_convs, sep=sep, softmax=loss=='ce')
    grids = m.grids(128)
    ancs = make_anchors(grids, retina_zooms(base), RETINA_RATIOS)
    print(f"  grids {grids}, {len(ancs)} anchors, {sum(p.numel() for p in m.parameters())/1e6:.2f}M parameters", flush=True)
    return DetLearner(dls, m, loss_func=SSDLoss(ancs, cls_loss_fn(loss), encoding='ssd', thresh=thresh))

def main():
    budget, every, specs = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
    d = make_shapes(Path('/tmp/shapes_screen'), show_progress=False)
    tr,va = read_coco(d/'train.json'), read_coco(d/'valid.json')
    sizes = [Image_size(f) for f in va.fnames]; tgts = _targets(va, tr.classes)
    for spec in specs:
        cfg = json.loads(spec)
        torch.manual_seed(0)
        dls = det_dls(tr, va, 'boxes', size=128, bs=32, show_progress=False)
        print(spec, flush=True)
        lr = cfg.pop('lr', 3e-3)
        if cfg.pop('tv', False): run_tv('ssdlite', dls, 128, lr, (budget*60, every*60), sizes, tgts); continue
        learn = build(dls, **cfg)
        clock = Clock(budget*60, every*60, evaluate=lambda: eval_ours(learn, dls.valid, sizes, tgts))
        with learn.no_bar(), learn.no_logging(): learn.fit(10_000, lr, cbs=ClockCB(clock))

if __name__ == '__main__': main()
