"fastai_det.boxes against torchvision on seeded random boxes, degenerate and disjoint ones included."
import torch, torchvision, pytest
from fastai_det.boxes import *

def _boxes(g, n, degenerate=0.2, scale=100.):
    p = torch.rand(n, 4, generator=g, dtype=torch.float64)*scale
    b = torch.cat([torch.minimum(p[:,:2], p[:,2:]), torch.maximum(p[:,:2], p[:,2:])], 1)
    d = torch.rand(n, generator=g) < degenerate          # zero width or zero height
    b[d, 2] = b[d, 0]
    return b

@pytest.mark.parametrize('seed', range(20))
def test_box_iou_equals_torchvision(seed):
    g = torch.Generator().manual_seed(seed)
    a,b = _boxes(g, int(torch.randint(1, 40, (1,), generator=g))), _boxes(g, int(torch.randint(1, 60, (1,), generator=g)))
    b[:5] += 1000.                                         # some far-away (disjoint) boxes
    ours, ref = box_iou(a, b), torchvision.ops.box_iou(a, b)
    ok = ~ref.isnan()
    assert torch.equal(ok, ~ours.isnan())                   # 0/0 exactly where torchvision has it
    torch.testing.assert_close(ours[ok], ref[ok])
    assert (ours[ok] >= 0).all() and (ours[ok] <= 1).all()

def test_box_iou_batched_and_dtypes():
    g = torch.Generator().manual_seed(0)
    a = torch.stack([_boxes(g, 7, 0.) for _ in range(6)]).reshape(2,3,7,4)
    b = _boxes(g, 11, 0.)
    res = box_iou(a, b)
    assert res.shape == (2,3,7,11)
    for i in range(2):
        for j in range(3): torch.testing.assert_close(res[i,j], torchvision.ops.box_iou(a[i,j], b))
    # half and integer inputs are upcast before the area products
    torch.testing.assert_close(box_iou(a.half(), b.half()), res.float(), atol=2e-2, rtol=0)
    ai,bi = (a*10).int(), (b*10).int()
    torch.testing.assert_close(box_iou(ai, bi), torchvision.ops.box_iou(ai.reshape(-1,4), bi).reshape(2,3,7,11))

def test_iou_empty():
    assert box_iou(torch.zeros(0,4), torch.rand(3,4)).shape == (0,3)
    assert box_iou(torch.zeros(2,0,4), torch.rand(3,4)).shape == (2,0,3)

@pytest.mark.parametrize('fmt', ['cxcywh', 'xywh'])
def test_conversions_match_box_convert(fmt):
    g = torch.Generator().manual_seed(1)
    b = _boxes(g, 50, 0.)
    to, frm = {'cxcywh': (xyxy2cxcywh, cxcywh2xyxy), 'xywh': (xyxy2xywh, xywh2xyxy)}[fmt]
    torch.testing.assert_close(to(b), torchvision.ops.box_convert(b, 'xyxy', fmt))
    torch.testing.assert_close(frm(to(b)), b)
    torch.testing.assert_close(tlbr2xyxy(xyxy2tlbr(b)), b)
    assert torch.equal(xyxy2tlbr(b)[:,0], b[:,1])

def test_encode_decode_roundtrip():
    g = torch.Generator().manual_seed(2)
    anc = xyxy2cxcywh(_boxes(g, 30, 0., 1.)).clamp(min=0.02)
    bb = torch.stack([_boxes(g, 30, 0., 1.) for _ in range(4)]).clamp(min=0)
    bb[...,2:] = torch.maximum(bb[...,2:], bb[...,:2]+1e-3)
    torch.testing.assert_close(decode_boxes(encode_boxes(bb, anc), anc), bb, atol=1e-5, rtol=1e-5)

@pytest.mark.parametrize('seed', range(5))
def test_coder_equals_torchvision_boxcoder(seed):
    """encode_boxes/decode_boxes with variances (v0, v1) are torchvision's BoxCoder with weights (1/v0, 1/v0, 1/v1, 1/v1),
    its clip of the exponent included; they differ only on zero-size targets, whose log we clamp (torchvision gives -inf)"""
    from torchvision.models.detection._utils import BoxCoder
    g = torch.Generator().manual_seed(seed)
    a, t = _boxes(g, 300, degenerate=0).float(), _boxes(g, 300, degenerate=0).float()
    a[:, 2:] += 1                                                     # anchors have a size
    for v in ((0.1, 0.2), (1., 1.), (0.1, 0.1)):
        bc = BoxCoder((1/v[0], 1/v[0], 1/v[1], 1/v[1]))
        off = encode_boxes(t, xyxy2cxcywh(a), v)
        torch.testing.assert_close(off, bc.encode_single(t, a), rtol=1e-4, atol=1e-4)
        big = off.clone(); big[:5, 2:] = 50.                             # past the clip: both give finite boxes, the same ones
        torch.testing.assert_close(decode_boxes(big, xyxy2cxcywh(a), v), bc.decode_single(big, a), rtol=1e-4, atol=1e-3)
