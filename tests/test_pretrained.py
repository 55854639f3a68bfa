"The shipped shapes body, ImageNet normalisation, and fastai's transfer-learning workflow (freeze / fine_tune / slice)"
import json, time, subprocess, sys
import pytest, torch, torchvision
from pathlib import Path
from fastai.data.transforms import Normalize
from fastai.torch_core import set_seed
from fastai_det.data import make_shapes, read_coco, det_dls
from fastai_det.bodies import create_det_body, shapes_weights, shapes_meta, det_splitter, add_norm, body_blocks, WEIGHTS_DIR
from fastai_det.single_object import single_object_learner
from fastai_det.multilabel import multilabel_learner
from fastai_det.ssd import ssd_learner
from fastai_det.retinanet import retinanet_learner

root = Path(__file__).resolve().parents[1]
MB3 = torchvision.models.mobilenet_v3_large

@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp('p')/'s', n_train=16, n_valid=8, n_test=2, show_progress=False)

def _dls(shapes, task, size=64):
    return det_dls(read_coco(shapes/'train.json'), read_coco(shapes/'valid.json'), task, size=size, bs=4, show_progress=False)

def test_shipped_body_loads_fast_and_matches_its_recipe():
    fn = shapes_weights(MB3)
    assert fn.parent == WEIGHTS_DIR and fn.stat().st_size <= 10*2**20, "package data of at most 10 MB"
    t0 = time.perf_counter()
    body = create_det_body(MB3, pretrained='shapes')
    assert time.perf_counter() - t0 < 10
    sd = torch.load(fn, weights_only=True)
    assert all(v.dtype in (torch.float16, torch.int64) for v in sd.values())           # fp16 storage
    w = body_blocks(body)[0][0].weight
    assert w.dtype == torch.float32 and torch.equal(w, sd['0.0.weight'].float())
    m = shapes_meta(MB3)
    r = m['recipe']
    assert r['arch'] == 'mobilenet_v3_large' and m['bytes'] == fn.stat().st_size
    assert m['n_params'] == sum(p.numel() for p in body.parameters())
    assert m['script'] == 'tools/train_shapes_body.py' and (root/m['script']).is_file()
    # the recipe recorded beside the weights is the one the script holds today
    sys.path.insert(0, str(root/'tools'))
    try: import train_shapes_body as T
    finally: sys.path.pop(0)
    assert r == {k: r[k] for k in T.RECIPE} and {k: T.RECIPE[k] for k in r} == r
    # never an image of an evaluated split: another seed and another image size than make_shapes' defaults
    import inspect
    d = {k: v.default for k,v in inspect.signature(make_shapes).parameters.items()}
    assert r['data_seed'] != d['seed'] and r['data_size'] != d['size']
    assert m['final']['map_50'] > 0.5 and m['train_seconds'] > 60

def test_shapes_for_other_arch_says_what_exists():
    with pytest.raises(FileNotFoundError, match='ships shapes-pretrained weights for'): create_det_body(torchvision.models.resnet18, pretrained='shapes')

def test_corrupt_body_file(tmp_path):
    fn = tmp_path/'b.pth'; fn.write_bytes(b'not a torch file')
    with pytest.raises(ValueError, match='not a body file'): create_det_body(MB3, pretrained=fn)

def test_add_norm_once(shapes):
    dls = _dls(shapes, 'boxes')
    add_norm(dls); add_norm(dls)
    assert sum(isinstance(t, Normalize) for t in dls.after_batch.fs) == 1
    x = dls.one_batch()[0]
    assert x.min() < -0.5                                       # normalised: no longer in [0,1]

@pytest.mark.parametrize('mk,task', [(single_object_learner, 'largest'), (multilabel_learner, 'multilabel'),
                                     (ssd_learner, 'boxes'), (retinanet_learner, 'boxes')])
def test_learners_pretrained_shapes_normalise_and_split(shapes, mk, task):
    dls = _dls(shapes, task, size=128)
    learn = mk(dls, MB3, pretrained='shapes')
    assert any(isinstance(t, Normalize) for t in learn.dls.after_batch.fs)
    body = learn.model.body if hasattr(learn.model, 'body') else learn.model[0]
    blocks = body.blocks if hasattr(body, 'blocks') else body_blocks(body)           # RetinaNet's BodyFeatures keeps them in `blocks`
    assert torch.equal(blocks[0][0].weight, torch.load(shapes_weights(MB3))['0.0.weight'].float())
    learn.freeze()
    is_bn = lambda m: isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    body_ids = {id(p) for p in body.parameters()}
    bn_ids = {id(p) for m in body.modules() if is_bn(m) for p in m.parameters(recurse=False)}
    for p in learn.model.parameters():
        if id(p) in body_ids and id(p) not in bn_ids: assert not p.requires_grad      # fastai keeps BatchNorm trainable (train_bn)
        elif id(p) not in body_ids: assert p.requires_grad
    learn.unfreeze()
    assert all(p.requires_grad for p in learn.model.parameters())
    assert len(learn.opt.param_groups) == 2

def test_fine_tune_changes_the_body_only_in_its_second_phase(shapes):
    set_seed(0)
    dls = _dls(shapes, 'boxes', size=128)
    learn = ssd_learner(dls, MB3, pretrained='shapes', train_bn=False)
    body, head = learn.model[0], learn.model[1]
    snap = lambda m: [p.detach().clone() for p in m.parameters()]
    b0, h0 = snap(body), snap(head)
    learn.freeze(); learn.fit(1, 1e-3)
    assert all(torch.equal(a, b) for a,b in zip(b0, snap(body)))       # frozen: the body did not move
    assert not all(torch.equal(a, b) for a,b in zip(h0, snap(head)))
    learn.unfreeze(); learn.fit_one_cycle(1, slice(1e-5, 1e-3))
    assert not all(torch.equal(a, b) for a,b in zip(b0, snap(body)))
    lrs = [g['lr'] for g in learn.opt.param_groups]
    assert lrs[0] < lrs[1]                                                # discriminative rates: body slower than head

def test_det_splitter_on_models():
    m = torch.nn.Sequential(create_det_body(MB3), torch.nn.Conv2d(960, 4, 1))
    g = det_splitter(m)
    assert [len(o) for o in g] == [len(list(m[0].parameters())), 2]

def test_frozen_stem_stays_through_unfreeze_and_export(shapes, tmp_path):
    "`freeze_stem`: the stem's weights and statistics do not move through fastai's fine_tune (unfreeze included), and the learner exports and loads"
    from fastai.learner import load_learner
    from torchvision.ops.misc import FrozenBatchNorm2d
    from fastai_det.bodies import freeze_stem
    set_seed(0)
    learn = retinanet_learner(_dls(shapes, 'boxes', size=128), MB3, pretrained='shapes')
    k = freeze_stem(learn.model, 4)
    stem = body_blocks(learn.model.body)[:k]
    assert k == 4 and all(not isinstance(m, torch.nn.BatchNorm2d) for b in stem for m in b.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for b in stem for m in b.modules())
    s0 = [t.clone() for b in stem for t in b.state_dict().values()]
    rest0 = [p.detach().clone() for b in body_blocks(learn.model.body)[k:] for p in b.parameters()]
    learn.fine_tune(1, 1e-3)                                                  # freeze, fit, unfreeze, fit
    assert all(torch.equal(a, b) for a,b in zip(s0, [t for b in stem for t in b.state_dict().values()]))
    assert not all(torch.equal(a, b.detach()) for a,b in zip(rest0, [p for b in body_blocks(learn.model.body)[k:] for p in b.parameters()]))
    learn.export(tmp_path/'m.pkl')
    l2 = load_learner(tmp_path/'m.pkl')
    assert l2.model.body.n_frozen == 4
