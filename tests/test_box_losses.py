"fastai_det.boxes.box_loss against torchvision's IoU-family losses, `1 - box_iou`'s diagonal and smooth L1 on `encode_boxes`, on seeded random boxes"
import math, pytest, torch, torchvision
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss, distance_box_iou_loss, complete_box_iou_loss
from fastai_det.boxes import box_loss, iou_loss, encode_boxes, decode_boxes, xyxy2cxcywh

def _boxes(g, *sz, dtype=torch.float32):
    p = torch.rand(*sz, 4, generator=g, dtype=torch.float64)*100
    b = torch.cat([torch.minimum(p[...,:2], p[...,2:]), torch.maximum(p[...,:2], p[...,2:])], -1) + torch.tensor([0., 0., 1., 1.], dtype=torch.float64)
    return b.to(dtype)

REF = dict(giou=generalized_box_iou_loss, diou=distance_box_iou_loss, ciou=complete_box_iou_loss)

@pytest.mark.parametrize('seed', range(10))
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_iou_family_equals_torchvision(seed, dtype):
    g = torch.Generator().manual_seed(seed)
    p, t = _boxes(g, 50, dtype=dtype), _boxes(g, 50, dtype=dtype)
    p[:10] += 500.                                                       # disjoint pairs: IoU loss 1, the others > 1
    for k,f in REF.items(): torch.testing.assert_close(box_loss(p, t, k), f(p, t, reduction='none'))
    ref_iou = 1 - torchvision.ops.box_iou(p, t).diagonal()
    torch.testing.assert_close(box_loss(p, t, 'iou'), ref_iou)
    torch.testing.assert_close(box_loss(p[:10], t[:10], 'iou'), torch.ones(10, dtype=dtype))
    assert (box_loss(p[:10], t[:10], 'giou') > 1).all() and (box_loss(p[:10], t[:10], 'diou') > 1).all()

def test_identical_boxes_cost_zero():
    g = torch.Generator().manual_seed(0)
    b = _boxes(g, 3, 5)
    for k in ('iou', 'giou', 'diou', 'ciou'): torch.testing.assert_close(box_loss(b, b, k), torch.zeros(3, 5), atol=1e-6, rtol=0)
    ancs = xyxy2cxcywh(b)
    torch.testing.assert_close(box_loss(torch.zeros(3, 5, 4), b, 'smooth_l1', ancs), torch.zeros(3, 5), atol=1e-5, rtol=0)

@pytest.mark.parametrize('seed', range(5))
def test_batched_offsets_and_smooth_l1(seed):
    "Leading dims, anchors broadcast over the batch: IoU kinds decode the offsets first, smooth L1 compares them with `encode_boxes(targ)`"
    g = torch.Generator().manual_seed(seed)
    ancs = xyxy2cxcywh(_boxes(g, 7)).double()
    offs, t = torch.randn(3, 7, 4, generator=g, dtype=torch.float64)*.5, _boxes(g, 3, 7, dtype=torch.float64)
    dec = decode_boxes(offs, ancs)
    for k,f in REF.items():
        torch.testing.assert_close(box_loss(offs, t, k, ancs), torch.stack([f(d, tt, reduction='none') for d,tt in zip(dec, t)]))
    torch.testing.assert_close(box_loss(offs, t, ancs=ancs), F.smooth_l1_loss(offs, encode_boxes(t, ancs), reduction='none').sum(-1))
    torch.testing.assert_close(iou_loss(dec, t), torch.stack([1 - torchvision.ops.box_iou(d, tt).diagonal() for d,tt in zip(dec, t)]))

def test_hand_values_and_errors():
    T, far = torch.tensor([0., 0., 2., 2.]), torch.tensor([3., 0., 5., 2.])
    torch.testing.assert_close(box_loss(far, T, 'giou'), torch.tensor(1.2))
    torch.testing.assert_close(box_loss(far, T, 'diou'), torch.tensor(1 + 9/29))
    wide = torch.tensor([-1., 0., 3., 2.])                              # contains T, same centre, IoU 1/2
    v = 4/math.pi**2 * (math.atan(1) - math.atan(2))**2
    torch.testing.assert_close(box_loss(wide, T, 'ciou'), torch.tensor(0.5 + v/(0.5 + v)*v))
    with pytest.raises(ValueError, match='pass the anchors'): box_loss(far, T)
    with pytest.raises(ValueError, match="kind 'l2'"): box_loss(far, T, 'l2')
