"Exported detectors (ONNX, TorchScript, pt2) give the Learner's outputs, also from a learner saved and loaded; prediction files read back"
import warnings
import numpy as np, pytest, torch
from fastai.learner import load_learner
from fastai.torch_core import set_seed
from torchvision.models import mobilenet_v3_small, resnet18
from fastai_det.data import make_shapes, read_coco, det_dls, read_yolo, read_voc_xml, load_image
from fastai_det.retinanet import retinanet_learner
from fastai_det.ssd import ssd_learner
from fastai_det.export import DetectorExport, export_model, load_exported, FORMATS, yolo_txt, save_predictions, learner_size

@pytest.fixture(scope='module')
def dls(tmp_path_factory):
    p = make_shapes(tmp_path_factory.mktemp('exp')/'s', n_train=16, n_valid=8, n_test=0, show_progress=False)
    return det_dls(read_coco(p/'train.json'), read_coco(p/'valid.json'), size=96, bs=8, show_progress=False)

def learner_outputs(learn, x):
    "What the learner's own `get_preds` gives on RGB images `x` in [0,1]: probabilities, boxes in pixels of the input"
    m = DetectorExport.from_learner(learn)
    xn = x if m.mean is None else (x - m.mean)/m.std
    with learn.no_bar(): (p, bb), = learn.get_preds(dl=[(xn, torch.zeros(len(x), 1, 4), torch.zeros(len(x), 1, dtype=torch.long))], reorder=False)[:1]
    h, w = m.size
    return p.numpy(), ((bb + 1)/2*torch.tensor([w, h, w, h])).numpy()

@pytest.mark.parametrize('kind', ['retinanet', 'ssd'])
def test_every_format_gives_the_learners_outputs(kind, dls, tmp_path):
    set_seed(0)
    learn = (retinanet_learner(dls, mobilenet_v3_small, sep=True, pretrained=False) if kind == 'retinanet'
             else ssd_learner(dls, resnet18, grids=(3,2,1)))
    with torch.no_grad():                                                    # not an untrained network's near-constant outputs
        for p in learn.model.parameters(): p.add_(torch.randn_like(p)*1e-2)
    x = torch.rand(5, 3, 96, 96)                                             # another batch size than the two the export traced
    ref = learner_outputs(learn, x)
    fmts = FORMATS if kind == 'retinanet' else ['torchscript', 'onnx']
    for fmt in fmts:
        f = export_model(learn, tmp_path/f'm{FORMATS[fmt]}', fmt)
        s, b = load_exported(f)(x.numpy())
        assert s.shape == ref[0].shape and b.shape == ref[1].shape, fmt
        np.testing.assert_allclose(s, ref[0], atol=1e-5, err_msg=fmt); np.testing.assert_allclose(b, ref[1], atol=1e-3, err_msg=fmt)
    assert not list(tmp_path.glob('.*tmp*'))                                  # no temp files or external-data files left beside

def test_export_a_loaded_learner(dls, tmp_path):
    "The CLI exports what `train` saved: a learner from `load_learner`, its DataLoaders empty, its Normalize and Resize kept"
    learn = retinanet_learner(dls, mobilenet_v3_small, sep=True, pretrained=False)
    learn.export(tmp_path/'m.pkl')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); loaded = load_learner(tmp_path/'m.pkl', cpu=True)
    assert learner_size(loaded) == (96, 96)
    x = torch.rand(2, 3, 96, 96)
    f = export_model(loaded, tmp_path/'m.torchscript', 'torchscript')
    np.testing.assert_allclose(load_exported(f)(x.numpy())[0], learner_outputs(learn, x)[0], atol=1e-5)

def test_export_errors(dls, tmp_path):
    learn = ssd_learner(dls, resnet18, grids=(3,2,1))
    with pytest.raises(ValueError, match="export format 'tflite'"): export_model(learn, tmp_path/'m.tflite', 'tflite')
    with pytest.raises(ValueError, match='expected a .onnx'): load_exported(tmp_path/'m.tflite')

def test_yolo_txt_and_voc_xml_read_back(tmp_path):
    from PIL import Image
    (tmp_path/'images').mkdir()
    fns = [tmp_path/'images'/'a.jpg', tmp_path/'images'/'b.jpg']
    Image.new('RGB', (200, 100)).save(fns[0]); Image.new('RGB', (64, 64)).save(fns[1])
    dets = [dict(boxes=torch.tensor([[10., 20, 110, 70], [0, 0, 200, 100]]), scores=torch.tensor([.9, .4]), labels=torch.tensor([2, 1])),
            dict(boxes=torch.zeros(0, 4), scores=torch.zeros(0), labels=torch.zeros(0, dtype=torch.long))]
    assert yolo_txt(dets[0], (200, 100)) == "1 0.300000 0.450000 0.500000 0.500000\n0 0.500000 0.500000 1.000000 1.000000\n"
    assert yolo_txt(dets[0], (200, 100), conf=True).splitlines()[0].split()[-1] == '0.90000'
    names = ['#na#', 'cat', 'dog & co']                                       # a name XML must escape
    assert save_predictions(dets, fns, [(200, 100), (64, 64)], tmp_path, names) == {'yolo': 2, 'voc': 2}
    (tmp_path/'data.yaml').write_text("train: images\nnames: ['cat', 'dog & co']\n")
    r = read_yolo(tmp_path)
    assert r.annots[0].lbls == ['dog & co', 'cat'] and r.annots[1].lbls == []
    np.testing.assert_allclose(r.annots[0].bbs, dets[0]['boxes'].numpy(), atol=1e-3)
    _, v = read_voc_xml(tmp_path/'Annotations'/'a.xml', tmp_path/'images')
    assert v.lbls == ['dog & co', 'cat'] and v.bbs == [[10, 20, 110, 70], [0, 0, 200, 100]] and v.size == (200, 100)

def test_a_model_that_does_not_trace_is_refused_and_no_file_left(dls, tmp_path):
    "The two-stage detector's proposals depend on the data: the traced file would be wrong on other images, so export says so"
    from fastai_det.two_stage import faster_rcnn_learner
    learn = faster_rcnn_learner(dls, mobilenet_v3_small)
    with pytest.raises(ValueError, match='FasterRCNN .*torchscript'): export_model(learn, tmp_path/'m.torchscript', 'torchscript')
    assert not list(tmp_path.iterdir())
