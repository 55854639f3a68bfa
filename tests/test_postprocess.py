"NMS against torchvision, soft-NMS against the paper's loop, detect against a per-image per-class loop"
import numpy as np, pytest, torch, torchvision
from fastai_det.postprocess import nms, nms_loop, soft_nms, soft_nms_reference, batched_soft_nms, detect

def rand_boxes(n, seed, ties=False):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g)*100; wh = torch.rand(n, 2, generator=g)*40 + 1
    b = torch.cat([xy, xy+wh], 1)
    s = torch.rand(n, generator=g)
    if ties: s = (s*5).round()/5                                  # many equal scores
    return b, s

@pytest.mark.parametrize('n,seed,ties', [(0,0,False), (1,0,False), (50,1,False), (300,2,False), (300,3,True), (1000,4,True)])
@pytest.mark.parametrize('thr', [0.3, 0.5, 0.7])
def test_nms_equals_torchvision(n, seed, ties, thr):
    b, s = rand_boxes(n, seed, ties)
    ref = torchvision.ops.nms(b, s, thr)
    assert torch.equal(nms(b, s, thr), ref)
    assert torch.equal(nms_loop(b, s, thr), ref)

def test_nms_identical_boxes_and_errors():
    b = torch.tensor([[0., 0, 10, 10]]).repeat(5, 1); s = torch.tensor([.1, .5, .5, .3, .9])
    assert nms(b, s).tolist() == torchvision.ops.nms(b, s, .5).tolist() == [4]
    with pytest.raises(ValueError, match=r'boxes must be \(n,4\)'): nms(torch.zeros(3, 5), torch.zeros(3))
    with pytest.raises(ValueError, match='scores must be'): nms(torch.zeros(3, 4), torch.zeros(4))
    with pytest.raises(ValueError, match='NaN'): nms(torch.zeros(1, 4), torch.tensor([float('nan')]))

@pytest.mark.parametrize('method', ['gaussian', 'linear'])
@pytest.mark.parametrize('n,seed', [(0,0), (1,1), (40,2), (400,3)])
def test_soft_nms_equals_reference(method, n, seed):
    b, s = rand_boxes(n, seed)
    rk, rs = soft_nms_reference(b.numpy(), s.numpy(), method=method)
    k, sc = soft_nms(b, s, method=method)
    assert k.tolist() == rk.tolist()
    np.testing.assert_allclose(sc.numpy(), rs, rtol=1e-5, atol=1e-6)

@pytest.mark.parametrize('method', ['gaussian', 'linear'])
def test_soft_nms_edge_cases(method):
    "Duplicates, touching boxes, a zero-width box, tied scores and a high score threshold, on seeded small sets"
    rng = np.random.default_rng(0)
    for t in range(300):
        n = int(rng.integers(1, 60))
        xy = torch.tensor(rng.random((n, 2))*50, dtype=torch.float32); wh = torch.tensor(rng.random((n, 2))*30 + .5, dtype=torch.float32)
        if t % 3 == 0: wh[-1, 0] = 0
        b = torch.cat([xy, xy + wh], 1)
        if n > 3 and t % 5 == 0: b[1] = b[0]
        if n > 3 and t % 7 == 0: b[2] = torch.stack([b[0, 2], b[0, 1], b[0, 2] + 5, b[0, 3]])
        s = torch.tensor(rng.random(n), dtype=torch.float32)
        if t % 4 == 0: s = (s*4).round()/4
        th = .2 if t % 2 else .001
        rk, rs = soft_nms_reference(b.numpy(), s.numpy(), method=method, score_thresh=th)
        k, sc = soft_nms(b, s, method=method, score_thresh=th)
        assert k.tolist() == rk.tolist(), t
        assert np.array_equal(sc.numpy(), rs.astype(np.float32)), t

def test_batched_soft_nms_per_class():
    b, s = rand_boxes(200, 5); lbl = torch.randint(0, 3, (200,), generator=torch.Generator().manual_seed(0))
    k, sc = batched_soft_nms(b, s, lbl)
    got = {int(i): float(v) for i, v in zip(k, sc)}
    for c in range(3):
        ix = (lbl == c).nonzero()[:, 0]
        rk, rs = soft_nms_reference(b[ix].numpy(), s[ix].numpy())
        for i, v in zip(ix[rk].tolist(), rs): assert got[i] == pytest.approx(v, rel=1e-5)
    assert len(got) == sum(len(soft_nms_reference(b[lbl == c].numpy(), s[lbl == c].numpy())[0]) for c in range(3))

def per_image_loop(probs, boxes, score_thresh, iou_thresh, max_det):
    out = []
    for p, b in zip(probs, boxes):
        res = []
        for c in range(p.shape[1]):
            m = p[:, c] >= score_thresh
            k = torchvision.ops.nms(b[m], p[m, c], iou_thresh)
            res += [(float(p[m, c][i]), c+1, b[m][i]) for i in k]
        res.sort(key=lambda o: -o[0])
        out.append(res[:max_det])
    return out

@pytest.mark.parametrize('seed', range(4))
def test_detect_equals_per_image_loop(seed):
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(5, 189, 4, generator=g)**3; probs[2] = 0               # an image with nothing above threshold
    xy = torch.rand(5, 189, 2, generator=g); boxes = torch.cat([xy, xy + torch.rand(5, 189, 2, generator=g)*.3], -1)
    got = detect(probs, boxes, score_thresh=.1, iou_thresh=.5, max_det=20, pre_nms_top_k=189*4)
    ref = per_image_loop(probs, boxes, .1, .5, 20)
    assert len(got) == 5 and len(got[2]['scores']) == 0
    for d, r in zip(got, ref):
        assert len(d['scores']) == len(r)
        torch.testing.assert_close(d['scores'], torch.tensor([o[0] for o in r]).reshape(-1))
        assert sorted(zip(d['labels'].tolist(), d['scores'].tolist())) == sorted((o[1], o[0]) for o in r)

def test_detect_soft_and_errors():
    probs = torch.zeros(1, 3, 2); probs[0, :, 0] = torch.tensor([.9, .8, .1])
    boxes = torch.tensor([[[0., 0, 1, 1], [0, 0, 1, 1.1], [5, 5, 6, 6]]])
    hard = detect(probs, boxes, score_thresh=.05)[0]
    assert hard['labels'].tolist() == [1, 1] and hard['scores'].tolist() == pytest.approx([.9, .1])
    soft = detect(probs, boxes, score_thresh=.05, nms='soft')[0]
    assert len(soft['scores']) == 3 and soft['scores'][0] == pytest.approx(.9)
    with pytest.raises(ValueError, match='detect: probs must be'): detect(torch.zeros(2, 3), torch.zeros(2, 3, 4))

def vote_loop(probs, boxes, score_thresh, iou_thresh, vote):
    "Per image, per class: torchvision's NMS, then each kept box -> the score-weighted mean of that class's candidates with IoU >= `vote`, one box at a time"
    out = []
    for p, b in zip(probs, boxes):
        res = []
        for c in range(p.shape[1]):
            m = p[:, c] >= score_thresh
            bc, sc = b[m], p[m, c]
            for i in torchvision.ops.nms(bc, sc, iou_thresh):
                near = torchvision.ops.box_iou(bc[i][None], bc)[0] >= vote
                w = sc[near]
                res.append((float(sc[i]), c+1, (w[:, None]*bc[near]).sum(0)/w.sum()))
        out.append(res)
    return out

@pytest.mark.parametrize('seed', range(3))
@pytest.mark.parametrize('vote', [0.3, 0.5, 0.8])
def test_detect_box_voting_equals_loop(seed, vote):
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(3, 150, 3, generator=g)**3
    xy = torch.rand(3, 150, 2, generator=g); boxes = torch.cat([xy, xy + torch.rand(3, 150, 2, generator=g)*.3], -1)
    got = detect(probs, boxes, score_thresh=.1, iou_thresh=.5, max_det=1000, pre_nms_top_k=150*3, vote=vote)
    plain = detect(probs, boxes, score_thresh=.1, iou_thresh=.5, max_det=1000, pre_nms_top_k=150*3)
    ref = vote_loop(probs, boxes, .1, .5, vote)
    n_moved = 0
    for d, pl, r in zip(got, plain, ref):
        torch.testing.assert_close(d['scores'], pl['scores']); assert torch.equal(d['labels'], pl['labels'])   # voting moves boxes only
        want = {(l, round(s, 6)): bb for s, l, bb in r}
        for s, l, bb in zip(d['scores'].tolist(), d['labels'].tolist(), d['boxes']):
            torch.testing.assert_close(bb, want[(l, round(s, 6))], atol=1e-5, rtol=1e-5)
        n_moved += int((d['boxes'] - pl['boxes']).abs().amax(1).gt(1e-6).sum())
    if vote <= 0.5: assert n_moved > 0                                  # the random clusters move some boxes (at 0.8 they may not)

def test_detect_box_voting_class_agnostic_and_soft():
    "Voting after a class-agnostic NMS averages over all classes; after soft-NMS it weighs by the scores before soft-NMS"
    g = torch.Generator().manual_seed(5)
    probs = torch.rand(2, 60, 3, generator=g)**3
    xy = torch.rand(2, 60, 2, generator=g); boxes = torch.cat([xy, xy + torch.rand(2, 60, 2, generator=g)*.3], -1)
    for kw in (dict(class_agnostic=True), dict(nms='soft')):
        got = detect(probs, boxes, score_thresh=.1, max_det=1000, pre_nms_top_k=180, vote=.5, **kw)
        plain = detect(probs, boxes, score_thresh=.1, max_det=1000, pre_nms_top_k=180, **kw)
        n_moved = 0
        for i, (d, pl) in enumerate(zip(got, plain)):
            torch.testing.assert_close(d['scores'], pl['scores']); assert torch.equal(d['labels'], pl['labels'])
            p, b = probs[i], boxes[i]
            for j, (box, lbl) in enumerate(zip(pl['boxes'], pl['labels'].tolist())):
                cls = range(3) if kw.get('class_agnostic') else [lbl-1]
                cb = torch.cat([b[p[:, c] >= .1] for c in cls]); cs = torch.cat([p[p[:, c] >= .1, c] for c in cls])
                near = torchvision.ops.box_iou(box[None], cb)[0] >= .5
                want = (cs[near, None]*cb[near]).sum(0)/cs[near].sum()
                torch.testing.assert_close(d['boxes'][j], want, atol=1e-5, rtol=1e-5)
            n_moved += int((d['boxes'] - pl['boxes']).abs().amax(1).gt(1e-6).sum())
        assert n_moved > 0, kw

def test_box_vote_keeps_a_box_without_voters_and_checks_its_threshold():
    from fastai_det.postprocess import box_vote
    boxes = torch.tensor([[2., 2, 2, 2], [0, 0, 1, 1]])                  # a zero-area box has IoU 0 with everything, itself included
    cands = torch.tensor([[2., 2, 2, 2], [0, 0, 1, 1], [0, 0, 1, 1.2]])
    out = box_vote(boxes, torch.zeros(2), cands, torch.tensor([.9, .8, .2]), torch.zeros(3), .5)
    torch.testing.assert_close(out[0], boxes[0])
    torch.testing.assert_close(out[1], torch.tensor([0., 0, 1, 1.04]))
    for bad in (0, 1.5, -1):
        with pytest.raises(ValueError, match='iou_thresh'): box_vote(boxes, torch.zeros(2), cands, torch.ones(3), torch.zeros(3), bad)
        with pytest.raises(ValueError, match='vote'): detect(torch.rand(1, 3, 2), cands[None], vote=bad)
