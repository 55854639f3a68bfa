"""One SSD training step (forward, matching + loss, backward, Adam step) on the same batch: fastai_det's `ssd_learner`
model and `SSDLoss` against torchvision's `SSD` built on the same ResNet body with the same extra layers (grids 4, 2, 1
at 224 px), so the bodies and head sizes match and what differs is the detection machinery around them.

    .venv/bin/python bench/bench_train_step.py [--arch resnet34] [--size 224] [--bs 16] [--reps 5]

torchvision's SSD gets 8 anchors per cell (`DefaultBoxGenerator([[2,3,4]]*3)`, 2 + 2*3) against our 9 (3 zooms x 3
ratios). Prints ms per step and the ratio; also the time of the loss alone (matching + losses) on each side, which is
where the two differ. Not a test: timings depend on the machine and its load.
"""
import argparse, time
from collections import OrderedDict
import torch, torchvision
from torch import nn
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from fastai_det.data import make_shapes, read_coco, det_dls
from fastai_det.ssd import ssd_learner, StdConv

def timeit(fs, reps):
    "Median time of each of `fs`, run alternately (so drifts in the machine's speed hit all alike)"
    for f in fs: f(); f()
    ts = [[] for _ in fs]
    for _ in range(reps):
        for f,t in zip(fs, ts):
            t0 = time.perf_counter(); f(); t.append(time.perf_counter() - t0)
    return [sorted(t)[len(t)//2] for t in ts]

class Extras(nn.Module):
    "Our head's trunk (the stride-1 StdConv, then one stride-2 StdConv per grid) as a backbone of feature maps"
    def __init__(self, body, nin, nf=256, n_grids=3):
        super().__init__()
        self.body, self.sconv0 = body, StdConv(nin, nf, stride=1)
        self.convs = nn.ModuleList([StdConv(nf, nf, 2) for _ in range(n_grids)])
        self.out_channels = [nf]*n_grids
    def forward(self, x):
        x = self.sconv0(self.body(x).relu()); out = OrderedDict()
        for i,c in enumerate(self.convs): x = c(x); out[str(i)] = x
        return out

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--arch', default='resnet34'); p.add_argument('--size', type=int, default=224)
    p.add_argument('--bs', type=int, default=16); p.add_argument('--reps', type=int, default=5)
    a = p.parse_args()
    import tempfile; from pathlib import Path
    torch.manual_seed(0)
    d = make_shapes(Path(tempfile.mkdtemp())/'s', n_train=a.bs, n_valid=4, n_test=0, show_progress=False)
    dls = det_dls(read_coco(d/'train.json'), read_coco(d/'valid.json'), 'boxes', size=a.size, bs=a.bs, show_progress=False)
    xb,bbs,lbls = dls.one_batch()
    arch = getattr(torchvision.models, a.arch)
    learn = ssd_learner(dls, arch)
    model, loss_func = learn.model.train(), learn.loss_func
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    def ours():
        loss = loss_func(model(xb), bbs, lbls); loss.backward(); opt.step(); opt.zero_grad()
    with torch.no_grad(): pred = model(xb)
    pred = [o.detach().requires_grad_() for o in pred]
    ours_loss = lambda: loss_func(pred, bbs, lbls).backward()

    body = learn.model[0]
    nin = body(xb[:1]).shape[1]
    tv = SSD(Extras(body, nin), DefaultBoxGenerator([[2,3,4]]*3), (a.size, a.size), len(dls.vocab), image_mean=[0.,0,0], image_std=[1.,1,1]).train()
    tv.transform.fixed_size = (a.size, a.size)
    x = list(xb.as_subclass(torch.Tensor))
    tgts = []
    for bb,lb in zip(bbs.as_subclass(torch.Tensor), lbls.as_subclass(torch.Tensor)):
        keep = lb > 0
        tgts.append(dict(boxes=((bb[keep]+1)/2*a.size).clamp(0, a.size), labels=lb[keep].long()))
    opt2 = torch.optim.Adam(tv.parameters(), 1e-4)
    def theirs():
        loss = sum(tv(x, tgts).values()); loss.backward(); opt2.step(); opt2.zero_grad()
    # torchvision's loss alone: the head's outputs fixed, matching + hard-negative mining + losses + backward
    with torch.no_grad():
        images,targets = tv.transform(x, tgts)
        feats = list(tv.backbone(images.tensors).values())
        head = tv.head(feats)
        anchors = tv.anchor_generator(images, feats)
    head = {k: v.detach().requires_grad_() for k,v in head.items()}
    def theirs_loss():
        mi = [tv.proposal_matcher(torchvision.ops.box_iou(t['boxes'], an)) if t['boxes'].numel() else
              torch.full((an.size(0),), -1, dtype=torch.int64) for t,an in zip(targets, anchors)]
        sum(tv.compute_loss(targets, head, anchors, mi).values()).backward()

    n_ours, n_tv = sum(p.numel() for p in model.parameters()), sum(p.numel() for p in tv.parameters())
    t_ours, t_tv = timeit([ours, theirs], a.reps)
    l_ours, l_tv = timeit([ours_loss, theirs_loss], a.reps*4)
    print(f"{a.arch} body, {a.size} px, bs {a.bs}, {torch.get_num_threads()} threads; anchors: ours {len(loss_func.ancs)}, "
          f"torchvision {sum(len(o) for o in anchors[:1])}")
    print(f"{'':38s} {'params':>8s} {'step ms':>9s} {'loss ms':>9s}")
    print(f"{'fastai_det ssd_learner + SSDLoss':38s} {n_ours/1e6:7.1f}M {t_ours*1e3:9.1f} {l_ours*1e3:9.2f}")
    print(f"{'torchvision SSD (same body, extras)':38s} {n_tv/1e6:7.1f}M {t_tv*1e3:9.1f} {l_tv*1e3:9.2f}")
    print(f"step time ratio torchvision/ours: {t_tv/t_ours:.2f}x (above 1: ours is faster); loss alone: {l_tv/l_ours:.2f}x")

if __name__ == '__main__': main()
