"d2l's `assign_anchor_to_bbox` against a line-by-line copy of d2l's code, and where it agrees with the lesson's rule."
import pytest, torch
from fastai_det.boxes import box_iou, cxcywh2xyxy
from fastai_det.anchors import make_anchors, LESSON_ZOOMS, LESSON_RATIOS
from fastai_det.matching import assign_anchor_to_bbox, map_to_ground_truth

def d2l_box_iou(boxes1, boxes2):
    "d2l's `box_iou`, as in the notes"
    box_area = lambda boxes: ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    areas1, areas2 = box_area(boxes1), box_area(boxes2)
    inter_upperlefts = torch.max(boxes1[:, None, :2], boxes2[:, :2])
    inter_lowerrights = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])
    inters = (inter_lowerrights - inter_upperlefts).clamp(min=0)
    inter_areas = inters[:, :, 0] * inters[:, :, 1]
    union_areas = areas1[:, None] + areas2 - inter_areas
    return inter_areas / union_areas

def d2l_assign(ground_truth, anchors, device='cpu', iou_threshold=0.5):
    "d2l's `assign_anchor_to_bbox`, transcribed; the notes' slip `ground_truth[0]` read as `ground_truth.shape[0]`"
    num_anchors, num_gt_boxes = anchors.shape[0], ground_truth.shape[0]
    jaccard = d2l_box_iou(anchors, ground_truth)
    anchors_bbox_map = torch.full((num_anchors,), -1, dtype=torch.long, device=device)
    max_ious, indices = torch.max(jaccard, dim=1)
    anc_i = torch.nonzero(max_ious >= iou_threshold).reshape(-1)
    box_j = indices[max_ious >= iou_threshold]
    anchors_bbox_map[anc_i] = box_j
    col_discard = torch.full((num_anchors,), -1)
    row_discard = torch.full((num_gt_boxes,), -1)
    for _ in range(num_gt_boxes):
        max_idx = torch.argmax(jaccard)
        box_idx = (max_idx % num_gt_boxes).long()
        anc_idx = (max_idx / num_gt_boxes).long()
        anchors_bbox_map[anc_idx] = box_idx
        jaccard[:, box_idx] = col_discard
        jaccard[anc_idx, :] = row_discard
    return anchors_bbox_map

def rand_boxes(n, g, lo=0.05, hi=0.6):
    "`n` random xyxy boxes in [0,1], sides in [lo,hi]"
    wh = lo + (hi-lo)*torch.rand(n, 2, generator=g)
    xy = torch.rand(n, 2, generator=g) * (1 - wh)
    return torch.cat([xy, xy + wh], 1)

ANCHORS = {'4x4': cxcywh2xyxy(make_anchors(4)), '189': cxcywh2xyxy(make_anchors((4,2,1), LESSON_ZOOMS, LESSON_RATIOS))}

@pytest.mark.parametrize('name', list(ANCHORS))
@pytest.mark.parametrize('thresh', [0.3, 0.5])
def test_equals_d2l_code(name, thresh):
    g = torch.Generator().manual_seed(0)
    ancs = ANCHORS[name]
    for _ in range(200):
        gt = rand_boxes(int(torch.randint(1, 9, (1,), generator=g)), g)
        torch.testing.assert_close(assign_anchor_to_bbox(gt, ancs, thresh), d2l_assign(gt, ancs.clone(), iou_threshold=thresh))

def test_random_anchors_equal_d2l_code():
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        gt, ancs = rand_boxes(int(torch.randint(1, 6, (1,), generator=g)), g), rand_boxes(30, g)
        torch.testing.assert_close(assign_anchor_to_bbox(gt, ancs), d2l_assign(gt, ancs))

def test_d2l_worked_example():
    gt = torch.tensor([[0.1, 0.08, 0.52, 0.92], [0.55, 0.2, 0.9, 0.88]])
    ancs = torch.tensor([[0, 0.1, 0.2, 0.3], [0.15, 0.2, 0.4, 0.4], [0.63, 0.05, 0.88, 0.98],
                         [0.66, 0.45, 0.8, 0.8], [0.57, 0.3, 0.92, 0.9]])
    assert assign_anchor_to_bbox(gt, ancs).tolist() == [-1, 0, 1, -1, 1] == d2l_assign(gt, ancs).tolist()

def test_empty_and_few_anchors():
    ancs = ANCHORS['4x4']
    assert assign_anchor_to_bbox(torch.zeros(0, 4), ancs).tolist() == [-1]*16
    gt = rand_boxes(3, torch.Generator().manual_seed(2))
    assert (assign_anchor_to_bbox(gt, ancs[:2]) >= 0).all()      # fewer anchors than objects: both anchors taken

def test_where_the_rules_agree():
    "Same map when every object has its own best anchor (and no IoU sits at the threshold); they differ only when best anchors are shared"
    g = torch.Generator().manual_seed(3)
    ancs = ANCHORS['189']
    n_shared = n_differ = 0
    for _ in range(300):
        gt = rand_boxes(int(torch.randint(1, 7, (1,), generator=g)), g)
        ov = box_iou(gt, ancs)
        d2l, lesson = assign_anchor_to_bbox(gt, ancs), map_to_ground_truth(ov)[1]
        shared = len(set(ov.argmax(1).tolist())) < len(gt)
        n_shared += shared
        if not shared: assert torch.equal(d2l, lesson)
        else: n_differ += not torch.equal(d2l, lesson)
    assert n_shared > 0 and n_differ > 0          # the sweep does reach the case where they differ
    print(f'{n_shared} of 300 images have objects sharing a best anchor; the rules differ on {n_differ} of them')
