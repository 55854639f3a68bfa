"""Soft-NMS: fastai_det's `soft_nms` against the paper's reference loop (numpy, one box per step), at 1000 and 5000
boxes, both methods; the kept boxes and scores must be the same. Also `detect` on a batch against a per-image loop.

    python bench/bench_soft_nms.py
"""
import time, statistics
import numpy as np, torch, torchvision
from fastai_det.postprocess import soft_nms, soft_nms_reference, detect

def boxes(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g)*600; wh = torch.rand(n, 2, generator=g)*120 + 4
    return torch.cat([xy, xy+wh], 1), torch.rand(n, generator=g)

def best(f, reps=3):
    ts = []
    for _ in range(reps): t = time.perf_counter(); r = f(); ts.append(time.perf_counter() - t)
    return min(ts), r

if __name__ == '__main__':
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for n in (1000, 5000):
        b, s = boxes(n)
        for method in ('gaussian', 'linear'):
            t_ref, (rk, rs) = best(lambda: soft_nms_reference(b.numpy(), s.numpy(), method=method), 2 if n > 1000 else 3)
            t_us, (k, sc) = best(lambda: soft_nms(b, s, method=method), 2 if n > 1000 else 3)
            same = k.tolist() == rk.tolist() and np.allclose(sc.numpy(), rs, rtol=1e-5, atol=1e-6)
            print(f"soft-NMS {method:8} {n:5} boxes: reference {t_ref*1000:8.1f} ms, ours {t_us*1000:8.1f} ms, "
                  f"{t_ref/t_us:5.1f}x faster; {len(k)} kept, same boxes and scores: {same}")
            assert same
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(16, 8732, 20, generator=g)**8
    xy = torch.rand(16, 8732, 2, generator=g); bxs = torch.cat([xy, xy + torch.rand(16, 8732, 2, generator=g)*.3], -1)
    def loop():
        out = []
        for p, bb in zip(probs, bxs):
            m = p >= .05; a, c = m.nonzero(as_tuple=True)
            sc = p[a, c]; top = sc.topk(min(1000, len(sc))).indices
            k = torchvision.ops.batched_nms(bb[a[top]], sc[top], c[top], .5)[:100]
            out.append(len(k))
        return out
    t_loop, n_loop = best(loop); t_det, d = best(lambda: detect(probs, bxs))
    assert n_loop == [len(o['scores']) for o in d]
    print(f"detect, bs 16 x 8732 anchors x 20 classes: per-image loop {t_loop*1000:.1f} ms, batched {t_det*1000:.1f} ms, {t_loop/t_det:.1f}x faster")
