#!/usr/bin/env python
"""The recipe of the shipped shapes-pretrained body (`create_det_body(arch, pretrained='shapes')`).

fastai_det cannot download ImageNet weights, so it trains its own stand-in: a RetinaNet-style detector (`loss='ce'`,
depthwise-separable head) on shapes images drawn with a seed and an image size that no split the lessons, tests or
CLI evaluate on uses (those use `make_shapes`'s defaults, seed 42 and 160 px), one-cycle Adam, inputs normalised with
ImageNet's statistics as every pretrained body here expects. The body's weights are stored in fp16 as package data,
`fastai_det/weights/shapes_<arch>.pth`, with `shapes_<arch>.json` beside them: the recipe, the data seed, the training
time and the final metrics on the recipe's own held-out split. `tests/test_pretrained.py` checks that the shipped file
loads into today's body and matches the recipe recorded here.

    python tools/train_shapes_body.py                      # the shipped run (about 45 minutes on 2 CPU cores)
    python tools/train_shapes_body.py --n-train 64 --epochs 1 --out /tmp/w   # a smoke run of the same code
"""
import argparse, json, time, platform, os
from pathlib import Path
import torch, torchvision, fastai

RECIPE = dict(model='retinanet', loss='ce', sep=True, arch='mobilenet_v3_large', size=128, bs=32, epochs=10, lr=2e-3,
              pct_start=0.2, wd=0.01, data_seed=20261201, data_size=192, n_train=4000, n_valid=300, train_seed=0,
              normalize='imagenet')

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    for k,v in RECIPE.items(): p.add_argument('--'+k.replace('_','-'), type=type(v), default=v)
    p.add_argument('--out', type=Path, default=Path(__file__).resolve().parents[1]/'fastai_det'/'weights')
    p.add_argument('--data', type=Path, default=Path.home()/'.fastai'/'data'/'shapes_pretrain')
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from fastai.torch_core import set_seed
    import fastai.callback.all  # fit_one_cycle and the trackers
    from fastai.callback.tracker import TerminateOnNaNCallback, SaveModelCallback
    from fastai_det.data import make_shapes, read_coco, det_dls
    from fastai_det.bodies import save_body, add_norm
    from fastai_det.retinanet import retinanet_learner
    from fastai_det.metrics import MAP, MAP50
    recipe = {k: getattr(a, k) for k in RECIPE}
    data = a.data/f"seed{a.data_seed}_{a.data_size}px_{a.n_train}"
    t0 = time.time()
    make_shapes(data, n_train=a.n_train, n_valid=a.n_valid, n_test=0, size=a.data_size, seed=a.data_seed)
    print(f"data: {data} ({time.time()-t0:.0f} s)", flush=True)
    set_seed(a.train_seed)
    dls = det_dls(read_coco(data/'train.json'), read_coco(data/'valid.json'), task='boxes', size=a.size, bs=a.bs, show_progress=False)
    add_norm(dls, 'imagenet')
    arch = getattr(torchvision.models, a.arch)
    learn = retinanet_learner(dls, arch, loss=a.loss, sep=a.sep, metrics=[MAP(), MAP50()])
    learn.path = data                          # SaveModelCallback keeps the best epoch in data/models/best.pth
    t1 = time.time()
    learn.fit_one_cycle(a.epochs, a.lr, pct_start=a.pct_start, wd=a.wd,
                        cbs=[TerminateOnNaNCallback(), SaveModelCallback(monitor='map_50', comp=__import__('numpy').greater, fname='best')])
    train_s = time.time() - t1
    vals = learn.recorder.values[-1]
    names = [n for n in learn.recorder.metric_names[1:-1]]
    final = {n: float(v) for n,v in zip(names, vals) if v is not None}
    a.out.mkdir(parents=True, exist_ok=True)
    fn = a.out/f"shapes_{a.arch}.pth"
    save_body(learn.model.body.blocks, fn, half=True)
    meta = dict(recipe=recipe, script='tools/train_shapes_body.py', train_seconds=round(train_s), threads=a.threads,
                final=final, history=[[float(x) if x is not None else None for x in v] for v in learn.recorder.values],
                history_names=names, n_params=sum(p.numel() for p in learn.model.body.parameters()),
                versions=dict(torch=torch.__version__, torchvision=torchvision.__version__, fastai=fastai.__version__,
                              python=platform.python_version()),
                bytes=fn.stat().st_size)
    (a.out/f"shapes_{a.arch}.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(dict(final=final, train_seconds=meta['train_seconds'], bytes=meta['bytes'])), flush=True)

if __name__ == '__main__': main()
