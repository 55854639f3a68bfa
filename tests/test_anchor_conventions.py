"d2l's `multibox_prior` against a copy of d2l's code, the conversion between d2l's (size, ratio) and our (h, w) shapes, and `receptive_field`."
import math, pytest, torch
from torch import nn
from torchvision.models import resnet18, mobilenet_v3_large
from fastai_det.boxes import cxcywh2xyxy
from fastai_det.anchors import (multibox_prior, d2l_shapes, shapes_to_d2l, grid_anchors, anchor_shapes, receptive_field,
                                conv_layers, LESSON_ZOOMS, LESSON_RATIOS)
from fastai_det.bodies import create_det_body
from fastai_det.ssd import SSDHead, head_strides

def d2l_multibox_prior(data, sizes, ratios):
    "d2l's `multibox_prior`, as in the notes"
    in_height, in_width = data.shape[-2:]
    device, num_sizes, num_ratios = data.device, len(sizes), len(ratios)
    boxes_per_pixel = (num_sizes + num_ratios - 1)
    size_tensor = torch.tensor(sizes, device=device)
    ratio_tensor = torch.tensor(ratios, device=device)
    offset_h, offset_w = 0.5, 0.5
    steps_h = 1.0 / in_height
    steps_w = 1.0 / in_width
    center_h = (torch.arange(in_height, device=device) + offset_h) * steps_h
    center_w = (torch.arange(in_width, device=device) + offset_w) * steps_w
    shift_y, shift_x = torch.meshgrid(center_h, center_w, indexing='ij')
    shift_y, shift_x = shift_y.reshape(-1), shift_x.reshape(-1)
    w = torch.cat((size_tensor * torch.sqrt(ratio_tensor[0]), sizes[0] * torch.sqrt(ratio_tensor[1:]))) * in_height / in_width
    h = torch.cat((size_tensor / torch.sqrt(ratio_tensor[0]), sizes[0] / torch.sqrt(ratio_tensor[1:])))
    anchor_manipulations = torch.stack((-w, -h, w, h)).T.repeat(in_height * in_width, 1) / 2
    out_grid = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=1).repeat_interleave(boxes_per_pixel, dim=0)
    output = out_grid + anchor_manipulations
    return output.unsqueeze(0)

@pytest.mark.parametrize('hw,sizes,ratios', [((561,728), [0.75,0.5,0.25], [1.,2.,0.5]), ((4,4), [0.15], [1.,2.,0.5]),
                                             ((10,7), [0.2,0.4], [1.,3.]), ((3,5), [0.9,0.3,0.1,0.05], [0.5,1.,2.,4.])])
def test_multibox_prior_equals_d2l(hw, sizes, ratios):
    X = torch.rand(1, 3, *hw)
    ours, ref = multibox_prior(X, sizes, ratios), d2l_multibox_prior(X, sizes, ratios)
    assert ours.shape == ref.shape == (1, hw[0]*hw[1]*(len(sizes)+len(ratios)-1), 4)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)

def test_notes_printout():
    Y = multibox_prior((561, 728), [0.75, 0.5, 0.25], [1, 2, 0.5])
    assert Y.shape == (1, 2042040, 4)
    torch.testing.assert_close(Y.reshape(561, 728, 5, 4)[250, 250, 0].round(decimals=2), torch.tensor([0.06, 0.07, 0.63, 0.82]))

@pytest.mark.parametrize('hw', [(1,1), (561,728), (300,200)])
def test_conversion_round_trip(hw):
    shapes = anchor_shapes(LESSON_ZOOMS, LESSON_RATIOS) / 4
    sr = shapes_to_d2l(shapes, hw)
    torch.testing.assert_close(torch.cat([d2l_shapes([s], [r], hw) for s,r in sr.tolist()]), shapes)
    sh = d2l_shapes([0.75, 0.5, 0.25], [1, 2, 0.5], hw)
    torch.testing.assert_close(shapes_to_d2l(sh, hw), torch.tensor([[0.75,1.],[0.5,1.],[0.25,1.],[0.75,2.],[0.75,0.5]]))

def test_receptive_field_by_hand():
    assert receptive_field([(3,1)]*3) == [(3,1), (5,1), (7,1)]
    assert receptive_field([(2,2)]*3) == [(2,2), (4,4), (8,8)]          # non-overlapping 2x2 pools: r = jump
    assert receptive_field([]) == []

def rf_by_gradient(layers, n=64):
    "The receptive field of the centre output of a stack of ones-weighted 1-channel convs, measured by its gradient"
    net = nn.Sequential(*[nn.Conv2d(1, 1, k, s, bias=False) for k,s in layers])
    for m in net: nn.init.constant_(m.weight, 1.)
    x = torch.zeros(1, 1, n, n, requires_grad=True)
    y = net(x); y[0, 0, y.shape[2]//2, y.shape[3]//2].backward()
    nz = x.grad[0,0].sum(0).nonzero()
    return int(nz.max() - nz.min() + 1)

@pytest.mark.parametrize('layers', [[(3,1)]*3, [(7,2),(3,2),(3,1),(3,1)], [(5,1),(3,2),(3,2),(1,1),(3,1)], [(2,2),(3,1),(4,2)]])
def test_receptive_field_matches_gradient(layers):
    assert receptive_field(layers)[-1][0] == rf_by_gradient(layers)

def test_bodies():
    assert receptive_field(conv_layers(create_det_body(resnet18)))[-1] == (435, 32)
    layers = conv_layers(create_det_body(mobilenet_v3_large))
    assert receptive_field(layers)[-1][1] == 32
    assert all(k % 2 == 1 for k,_ in layers)

def test_head_layers_as_written_in_04():
    "04 writes the SSD head's layers out by hand; read them from `SSDHead` and compare"
    strides = head_strides(4, (4,2,1))
    head = SSDHead(512, 3, 9, strides)
    sconv0 = conv_layers(head.sconv0)
    convs = [conv_layers(c) for c in head.convs]
    outs = [conv_layers(o.oconv1) for o in head.outs]
    per_grid, path = {}, sconv0
    for g,c,o in zip((4,2,1), convs, outs): path = path + c; per_grid[g] = path + o
    assert per_grid == {4: [(3,1), (3,1), (3,1)], 2: [(3,1), (3,1), (3,2), (3,1)], 1: [(3,1), (3,1), (3,2), (3,2), (3,1)]}
