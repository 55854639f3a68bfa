"""Time anchor matching: the lesson-style per-image loop, the same loop over `unbind()`, a naive broadcast over the
padded batch, and `fastai_det.matching.match_anchors`; print times and ratios, and assert they all give the same
targets.

Setup (from the project's issue): bs 64, up to 20 objects per image padded with label 0 (random counts 0..20, so some
images have none), the lesson's 189 anchors and SSD300's 8732.

    .venv/bin/python bench/bench_matching.py [--reps 5] [--bs 64] [--max-obj 20]

Not part of the test run. Timings depend on the machine and its load: ratios between peers measured in the same run
are what to compare.
"""
import argparse, time
import torch
from fastai_det.boxes import box_iou, cxcywh2xyxy
from fastai_det.anchors import make_anchors, ssd300_anchors
from fastai_det.matching import match_one, match_anchors

def rand_batch(bs, max_obj, g):
    "A padded batch: `(bs,max_obj,4)` xyxy in [0,1], `(bs,max_obj)` labels in 1..20 with 0 for padding (at the end)"
    p = torch.rand(bs, max_obj, 4, generator=g)
    bbs = torch.cat([torch.minimum(p[...,:2], p[...,2:]), torch.maximum(p[...,:2], p[...,2:])], -1)
    n = torch.randint(0, max_obj+1, (bs,), generator=g)
    lbls = torch.randint(1, 21, (bs, max_obj), generator=g) * (torch.arange(max_obj) < n[:,None])
    return bbs * (lbls > 0)[...,None], lbls

def loop_index(bbs, lbls, ancs):
    "The lesson's way: one image at a time, indexing the batch"
    res = [match_one(bbs[i], lbls[i], ancs) for i in range(len(bbs))]
    return torch.stack([o[0] for o in res]), torch.stack([o[1] for o in res])

def loop_unbind(bbs, lbls, ancs):
    "The same loop, over `unbind()` views"
    res = [match_one(b, l, ancs) for b,l in zip(bbs.unbind(), lbls.unbind())]
    return torch.stack([o[0] for o in res]), torch.stack([o[1] for o in res])

@torch.no_grad()
def broadcast(bbs, lbls, ancs, thresh=0.5):
    "The obvious batched version: `box_iou` of the whole padded batch, `(B,G,A)`, padding masked to -1"
    (B,G),A = lbls.shape, len(ancs)
    anc = cxcywh2xyxy(ancs)
    valid = lbls > 0
    ov = box_iou(bbs, anc).masked_fill_(~valid[...,None], -1.)             # (B,G,A)
    prior_ov, prior_idx = ov.max(2)                                         # each object's best anchor
    gt_ov, gt_idx = ov.max(1)                                               # each anchor's best object
    f = valid & (prior_ov > 0)
    slot = torch.arange(G).expand(B,G)
    forced = torch.full((B,A), -1).scatter_reduce_(1, prior_idx, torch.where(f, slot, -1), 'amax')
    gt_idx = torch.where(forced >= 0, forced, gt_idx)
    pos = (forced >= 0) | (gt_ov > thresh)
    t_lbl = torch.where(pos, lbls.gather(1, gt_idx), 0)
    t_bb = torch.where(pos[...,None], bbs.gather(1, gt_idx[...,None].expand(B,A,4)), anc)
    return t_lbl, t_bb

def timeit(f, reps):
    f(); ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter()-t0)
    return min(ts)

def main(reps=5, bs=64, max_obj=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    bbs, lbls = rand_batch(bs, max_obj, g)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads; bs {bs}, objects per image 0..{max_obj} '
          f'({int((lbls > 0).sum())} real of {lbls.numel()} rows, {int(((lbls > 0).sum(1) == 0).sum())} empty images); '
          f'best of {reps}')
    peers = {'lesson loop (index)': loop_index, 'loop over unbind()': loop_unbind,
             'broadcast (B,G,A)': broadcast, 'match_anchors': match_anchors}
    for name,ancs in (('189 anchors', make_anchors((4,2,1), (0.75,1.,1.3), ((1.,1.),(1.,.5),(.5,1.)))),
                      ('SSD300, 8732 anchors', ssd300_anchors())):
        ref = loop_index(bbs, lbls, ancs)
        print(f'\n{name}: {int((ref[0] > 0).sum())} positive anchors in the batch')
        ts = {}
        for k,f in peers.items():
            out = f(bbs, lbls, ancs)
            assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1]), f'{k} gives different targets'
            ts[k] = timeit(lambda: f(bbs, lbls, ancs), reps)
        base = ts['lesson loop (index)']
        for k,t in ts.items(): print(f'  {k:22s} {t*1000:8.2f} ms   {base/t:6.1f}x the lesson loop')
        print(f'  match_anchors vs broadcast: {ts["broadcast (B,G,A)"]/ts["match_anchors"]:.1f}x')
    print('\nall peers give identical targets')

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--reps', type=int, default=5)
    p.add_argument('--bs', type=int, default=64)
    p.add_argument('--max-obj', type=int, default=20)
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args()
    main(a.reps, a.bs, a.max_obj, a.seed)
