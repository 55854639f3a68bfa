"""SSD loss (matching + localisation + classification, forward and backward) per batch: fastai_det's batched `SSDLoss`
against the lesson-style per-image loop (indexing `pred[i]`), the same loop over `unbind()`, and a naive broadcast batch
(the full (bs,G,A) IoU with dense ops), at 189 anchors (the lesson's) and 8732 (SSD300). Same loss values checked.

    python bench/bench_ssd_loss.py [--bs 64] [--max-obj 20] [--reps 5]
"""
import argparse, time, statistics
import torch, torch.nn.functional as F
from fastai_det.boxes import box_iou, cxcywh2xyxy
from fastai_det.anchors import make_anchors, ssd300_anchors
from fastai_det.matching import map_to_ground_truth
from fastai_det.ssd import SSDLoss, actn_to_bb, bce_cls_loss, ssd_loss_loop

def batch(bs, max_obj, n_cls, A, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(0, max_obj+1, (bs,), generator=g)
    ctr, wh = torch.rand(bs, max_obj, 2, generator=g), torch.rand(bs, max_obj, 2, generator=g)*.5 + .05
    bbs = (torch.cat([ctr-wh/2, ctr+wh/2], -1).clamp(0, 1))*2 - 1               # [-1,1] as in a fastai batch
    lbls = torch.randint(1, n_cls+1, (bs, max_obj), generator=g)
    lbls[torch.arange(max_obj)[None] >= n[:, None]] = 0                         # padding
    bbs[lbls == 0] = 0
    pred = (torch.randn(bs, A, n_cls+1, generator=g), torch.randn(bs, A, 4, generator=g))
    return pred, bbs, lbls

def lesson_loop(pred, bbs, lbls, ancs, thresh=.5):
    "The lesson's ssd_loss: a Python loop indexing each image, per-image IoU and map_to_ground_truth"
    cls_p, box_p = pred
    loc = cls = 0.; n_pos = 0
    anc_xyxy = cxcywh2xyxy(ancs)
    for i in range(len(bbs)):
        keep = lbls[i] > 0
        bb, lb = (bbs[i][keep]+1)/2, lbls[i][keep]
        t_lbl = torch.zeros(len(ancs), dtype=torch.long)
        if len(lb):
            ov = box_iou(bb, anc_xyxy)
            gt_ov, gt_idx = map_to_ground_truth(ov, None)
            pos = gt_ov > thresh
            t_lbl[pos] = lb[gt_idx[pos]]
            pos_idx = pos.nonzero()[:, 0]
            loc = loc + (actn_to_bb(box_p[i], ancs)[pos_idx] - bb[gt_idx[pos_idx]]).abs().sum()
            n_pos += len(pos_idx)
        cls = cls + bce_cls_loss(cls_p[i], t_lbl)
    return (loc + cls) / max(n_pos, 1)

def naive_batch(pred, bbs, lbls, ancs, thresh=.5):
    "Everything broadcast over (bs,G,A): IoU, forced matches by one-hot, dense gathers"
    cls_p, box_p = pred
    B, G = lbls.shape; A = len(ancs)
    gt = (bbs+1)/2
    valid = lbls > 0
    ov = box_iou(gt, cxcywh2xyxy(ancs)[None].expand(B, A, 4))                   # (B,G,A)
    ov = ov.masked_fill(~valid[..., None], -1)
    best_anc = ov.argmax(-1)                                                    # (B,G)
    forced = F.one_hot(best_anc, A).bool() & valid[..., None]                    # (B,G,A)
    ov = torch.where(forced, torch.full_like(ov, 1.99), ov)
    gt_ov, gt_idx = ov.flip(1).max(1)                                           # (B,A); a later object wins a tie, as in the lesson
    gt_idx = G - 1 - gt_idx
    pos = gt_ov > thresh
    t_lbl = torch.where(pos, lbls.gather(1, gt_idx), 0)
    t_bb = gt.gather(1, gt_idx[..., None].expand(B, A, 4))
    loc = ((actn_to_bb(box_p, ancs) - t_bb).abs().sum(-1) * pos).sum()
    return (loc + bce_cls_loss(cls_p, t_lbl)) / pos.sum().clamp(min=1)

def timeit(f, pred, bbs, lbls, reps):
    ts = []
    for _ in range(reps + 1):
        p = tuple(o.clone().requires_grad_() for o in pred)
        t = time.perf_counter(); l = f(p, bbs, lbls); l.backward(); ts.append(time.perf_counter() - t)
    return statistics.median(ts[1:]), float(l)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(); ap.add_argument('--bs', type=int, default=64); ap.add_argument('--max-obj', type=int, default=20)
    ap.add_argument('--reps', type=int, default=5); ap.add_argument('--n-cls', type=int, default=20)
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bs {a.bs}, up to {a.max_obj} objects/image, {a.n_cls} classes")
    for name, ancs in [('lesson 189', make_anchors((4,2,1), (.7,1.,1.3), ((1.,1.),(1.,.5),(.5,1.)))), ('SSD300 8732', ssd300_anchors())]:
        pred, bbs, lbls = batch(a.bs, a.max_obj, a.n_cls, len(ancs))
        ours = SSDLoss(ancs)
        rows = [('lesson loop, pred[i]', lambda p, b, l: lesson_loop(p, b, l, ancs)),
                ('loop over unbind (ssd_loss_loop)', lambda p, b, l: ssd_loss_loop(p, b, l, ancs)),
                ('naive broadcast batch', lambda p, b, l: naive_batch(p, b, l, ancs)),
                ('fastai_det SSDLoss', ours)]
        res = {n: timeit(f, pred, bbs, lbls, a.reps) for n, f in rows}
        t_ours, l_ours = res['fastai_det SSDLoss']
        print(f"\n{name} anchors")
        for n, (t, l) in res.items():
            same = abs(l - l_ours) <= 1e-4 * max(1, abs(l_ours))
            print(f"  {n:34} {t*1000:8.1f} ms  loss {l:.5f} {'==' if same else '!='} ours   ours is {t/t_ours:5.1f}x faster")
            assert same, f"{n}: loss {l} differs from SSDLoss {l_ours}"
