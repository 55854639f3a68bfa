"NMS per class versus across classes: `detect(class_agnostic=...)` against torchvision's `nms`/`batched_nms` per image, and d2l's 4-anchor example"
import pytest, torch, torchvision
from fastai_det.postprocess import detect

def _inputs(seed, bs=3, A=120, c=4):
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(bs, A, c, generator=g)**3
    xy = torch.rand(bs, A, 2, generator=g); wh = torch.rand(bs, A, 2, generator=g)*.3 + .01
    return probs, torch.cat([xy, xy+wh], -1)

def _reference(probs, boxes, agnostic, score_thresh=0.05, iou_thresh=0.5):
    "One image at a time: every (anchor, class) pair over the threshold, then torchvision's nms (across) or batched_nms (per class)"
    res = []
    for p,b in zip(probs, boxes):
        a,k = (p >= score_thresh).nonzero(as_tuple=True)
        sc, bb = p[a,k], b[a]
        keep = torchvision.ops.nms(bb, sc, iou_thresh) if agnostic else torchvision.ops.batched_nms(bb, sc, k, iou_thresh)
        res.append(dict(boxes=bb[keep], scores=sc[keep], labels=k[keep]+1))
    return res

@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('agnostic', [False, True])
def test_detect_against_torchvision(seed, agnostic):
    probs, boxes = _inputs(seed)
    for d,r in zip(detect(probs, boxes, class_agnostic=agnostic, max_det=10**6, pre_nms_top_k=10**6), _reference(probs, boxes, agnostic)):
        assert len(d['scores']) == len(r['scores'])
        torch.testing.assert_close(d['scores'].sort(descending=True).values, r['scores'].sort(descending=True).values)
        key = lambda o: sorted(zip(o['labels'].tolist(), [round(x, 5) for x in o['scores'].tolist()], [tuple(round(x, 5) for x in b) for b in o['boxes'].tolist()]))
        assert key(d) == key(r)

@pytest.mark.parametrize('seed', range(4))
def test_agnostic_keeps_no_overlapping_pair(seed):
    "Across classes no two kept boxes of an image overlap over the threshold; per class there are such pairs (of different classes)"
    probs, boxes = _inputs(seed)
    ag, pc = detect(probs, boxes, class_agnostic=True, max_det=10**6), detect(probs, boxes, max_det=10**6)
    for d in ag:
        iou = torchvision.ops.box_iou(d['boxes'], d['boxes']).fill_diagonal_(0)
        assert (iou <= 0.5).all()
    assert sum(len(d['scores']) for d in pc) > sum(len(d['scores']) for d in ag)
    assert detect(probs, boxes, class_agnostic=False, max_det=10**6)[0]['scores'].tolist() == pc[0]['scores'].tolist()   # the default

def test_two_classes_overlap_and_d2l_example():
    bb = torch.tensor([[[0., 0., 10., 10.], [2., 0., 12., 10.]]]); p = torch.tensor([[[0.9, 0.], [0., 0.8]]])
    assert detect(p, bb)[0]['labels'].tolist() == [1, 2]
    assert detect(p, bb, class_agnostic=True)[0]['labels'].tolist() == [1]
    assert detect(p, bb, nms='soft', class_agnostic=True)[0]['scores'][1] < 0.8           # soft-NMS across classes decays the other one
    # d2l's anchor-box example: offsets 0, so the boxes are the anchors; across classes: dog 0.9 at anchor 0, cat 0.9 at anchor 3
    ancs = torch.tensor([[0.1, 0.08, 0.52, 0.92], [0.08, 0.2, 0.56, 0.95], [0.15, 0.3, 0.62, 0.91], [0.55, 0.2, 0.9, 0.88]])
    probs = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.9]]).T[None]
    d = detect(probs, ancs[None], class_agnostic=True)[0]
    o = d['labels'].argsort()
    assert d['labels'][o].tolist() == [1, 2]
    torch.testing.assert_close(d['boxes'][o], ancs[[0, 3]]); torch.testing.assert_close(d['scores'][o], torch.tensor([0.9, 0.9]))
