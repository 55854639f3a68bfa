"The dataset layouts users download, read by the library and the CLI: fastai's PASCAL_2007 (train/valid/test), COCO 2017, VOCdevkit, YOLO txt"
import json, os, shutil, warnings
from pathlib import Path
import pytest
from PIL import Image
from fastai_det.data import make_shapes, read_coco, read_voc, read_yolo, DataError, SHAPES
from fastai_det.engine import load_records, CLIError

@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp('lay')/'shapes', n_train=10, n_valid=4, n_test=3, show_progress=False)

def same(a, b):
    "Two `DetRecords` hold the same images (by file name) with the same boxes and names"
    assert [f.name for f in a.fnames] == [f.name for f in b.fnames]
    for x,y in zip(a.annots, b.annots):
        assert x.lbls == y.lbls
        assert all(abs(p-q) < 1e-6 for bx,by in zip(x.bbs, y.bbs) for p,q in zip(bx, by)), (x.bbs, y.bbs)

def coco_with_names(src, dst):
    "`src` json with file names only (fastai's PASCAL_2007 and COCO 2017 keep images in a folder of their own)"
    d = json.loads(src.read_text())
    for im in d['images']: im['file_name'] = im['file_name'].split('/')[-1]
    dst.parent.mkdir(parents=True, exist_ok=True); dst.write_text(json.dumps(d))

def copy_images(recs, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for f in recs.fnames: shutil.copy(f, folder/f.name)

def test_fastai_pascal_2007_layout_with_its_test_split(shapes, tmp_path):
    "train.json/valid.json with images in train/, test.json with images in test/ (untar_data(URLs.PASCAL_2007))"
    p = tmp_path/'pascal_2007'
    for s,folder in (('train','train'), ('valid','train'), ('test','test')):
        coco_with_names(shapes/f'{s}.json', p/f'{s}.json'); copy_images(read_coco(shapes/f'{s}.json'), p/folder)
    tr, va = load_records(p, 'valid'); _, te = load_records(p, 'test')
    same(tr, read_coco(shapes/'train.json')); same(va, read_coco(shapes/'valid.json')); same(te, read_coco(shapes/'test.json'))
    assert all(f.parent.name == 'test' for f in te.fnames)

def test_coco_2017_layout(shapes, tmp_path):
    p = tmp_path/'coco'
    for s,name in (('train','train2017'), ('valid','val2017')):
        coco_with_names(shapes/f'{s}.json', p/'annotations'/f'instances_{name}.json'); copy_images(read_coco(shapes/f'{s}.json'), p/name)
    tr, va = load_records(p, 'valid')
    same(tr, read_coco(shapes/'train.json')); same(va, read_coco(shapes/'valid.json'))
    assert va.fnames[0].parent.name == 'val2017'
    with pytest.raises(CLIError, match=r'no annotations/instances_test\*.json'): load_records(p, 'test')

def test_vocdevkit_root_and_its_splits(shapes, tmp_path):
    dk = tmp_path/'VOCdevkit'
    shutil.copytree(shapes, dk/'VOC2007')
    main = dk/'VOC2007'/'ImageSets'/'Main'
    (main/'val.txt').write_text((main/'valid.txt').read_text()); (main/'valid.txt').unlink()
    (main/'trainval.txt').write_text((main/'train.txt').read_text() + (main/'val.txt').read_text())
    for root in (dk, tmp_path):                                      # the devkit, or the folder holding it
        tr, va = load_records(root, 'valid')
        same(tr, read_voc(shapes, 'train')); same(va, read_voc(shapes, 'valid'))
    _, tv = load_records(dk, 'trainval')
    assert len(tv) == len(tr) + len(va)
    (main/'test.txt').write_text((main/'val.txt').read_text())
    tv2, te = load_records(dk, 'test', train_split='trainval')             # VOC 2007's protocol: train on trainval, score on test
    assert len(tv2) == len(tv) and len(te) == len(va)
    with pytest.raises(CLIError, match=r'needs ImageSets/Main/trainvall.txt'): load_records(dk, 'test', train_split='trainvall')
    from fastai_det.engine import train                                     # trainval holds val: training on it and scoring val is refused
    with pytest.raises(CLIError, match=r"--train-split 'trainval' and --valid-split 'valid' share 4 images"):
        train(dk, train_split='trainval', valid_split='valid', out=str(tmp_path/'r'), epochs=1, quiet=True)
    shutil.copytree(dk/'VOC2007', dk/'VOC2012')
    with pytest.raises(CLIError, match='holds VOC2007, VOC2012; pass one of them'): load_records(dk, 'valid')

def yolo_tree(shapes, root):
    "The shapes data written as a YOLO txt dataset: images/<split>/, labels/<split>/*.txt (class cx cy w h, fractions), data.yaml"
    for s,name in (('train','train'), ('valid','val')):
        recs = read_coco(shapes/f'{s}.json'); copy_images(recs, root/'images'/name); (root/'labels'/name).mkdir(parents=True)
        for f,a in zip(recs.fnames, recs.annots):
            w,h = a.size
            lines = [f"{SHAPES.index(l)} {(b[0]+b[2])/2/w:.9f} {(b[1]+b[3])/2/h:.9f} {(b[2]-b[0])/w:.9f} {(b[3]-b[1])/h:.9f}" for b,l in zip(a.bbs, a.lbls)]
            if lines: (root/'labels'/name/f'{f.stem}.txt').write_text('\n'.join(lines) + '\n')   # no file for an empty image
    (root/'data.yaml').write_text('path: .\ntrain: images/train\nval: images/val\nnames:\n' + ''.join(f'  {i}: {n}\n' for i,n in enumerate(SHAPES)))
    return root

def test_yolo_layout_equals_the_coco_records(shapes, tmp_path):
    root = yolo_tree(shapes, tmp_path/'yolo')
    for data in (root, root/'data.yaml'):
        with warnings.catch_warnings():
            warnings.simplefilter('error')                           # 9-digit fractions: no repair to report
            tr, va = load_records(data, 'valid')
        same(tr, read_coco(shapes/'train.json')); same(va, read_coco(shapes/'valid.json'))
        assert tr.classes == SHAPES
    assert len(tr) == 10 and [len(a.lbls) == 0 for a in tr.annots] == [not (root/'labels'/'train'/f'{f.stem}.txt').exists() for f in tr.fnames]

def test_yolo_lists_names_and_bad_input(tmp_path):
    (tmp_path/'images').mkdir(); (tmp_path/'labels').mkdir()
    Image.new('RGB', (100, 50)).save(tmp_path/'images'/'a.jpg')
    (tmp_path/'list.txt').write_text('images/a.jpg\n')
    (tmp_path/'data.yaml').write_text("train: list.txt\nval: [images]\nnames: [x, y]\n")    # a list of images, a list of folders, names as a list
    (tmp_path/'labels'/'a.txt').write_text("1 0.5 0.5 0.2 0.2\n")
    r = read_yolo(tmp_path, 'train')
    assert r.annots[0].bbs == [[40., 20., 60., 30.]] and r.annots[0].lbls == ['y'] and read_yolo(tmp_path, 'valid').fnames == r.fnames
    for text, msg in [("1 0.5 0.5 0.2\n", r'a.txt: line 1: 4 numbers'), ("1 a b c d\n", r"a.txt: line 1: '1 a b c d' is not numbers"),
                      ("0\n0 0.5 0.5 0.2 0.2 0.1\n", r'a.txt: line 1: 1 numbers'), ("-1 0.5 0.5 0.2 0.2\n", r'class -1 is not an index of the 2 names'),
                      ("0 nan 0.5 0.2 0.2\n", r"a.txt: line 1: '0 nan 0.5 0.2 0.2' has a number that is not finite"),
                      ("nan 0.5 0.5 0.2 0.2\n", r"a.txt: line 1: 'nan 0.5 0.5 0.2 0.2' has a number that is not finite")]:
        (tmp_path/'labels'/'a.txt').write_text(text)
        with pytest.raises(DataError, match=msg): read_yolo(tmp_path, 'train')
    (tmp_path/'labels'/'a.txt').write_text("0 0.5 0.5 0.0 0.2\n")
    with pytest.warns(UserWarning, match='dropped, no area: 1'): assert read_yolo(tmp_path, 'train').annots[0].bbs == []
    (tmp_path/'data.yaml').write_text("train: nowhere\nnames: [x]\n")
    with pytest.raises(DataError, match='split folder or list .*nowhere does not exist'): read_yolo(tmp_path, 'train')
    (tmp_path/'data.yaml').write_text("train: images\nnames: {0: x, 2: y}\n")
    with pytest.raises(DataError, match=r"'names' must be numbered 0..1"): read_yolo(tmp_path, 'train')
    for names in ("[x, y, x]", "{0: x, 1: x}"):
        (tmp_path/'data.yaml').write_text(f"train: images\nnames: {names}\n")
        with pytest.raises(DataError, match=r"class names \['x'\] appear more than once"): read_yolo(tmp_path, 'train')
    (tmp_path/'data.yaml').write_text("train: [images\n")
    with pytest.raises(DataError, match='data.yaml: not valid YAML'): read_yolo(tmp_path, 'train')
    (tmp_path/'list.txt').write_text('images/a.jpg\n./images/a.jpg\n')
    (tmp_path/'data.yaml').write_text("train: list.txt\nnames: [x, y]\n")
    with pytest.raises(DataError, match=r"data.yaml: image .*a.jpg is listed twice in 'list.txt'"): read_yolo(tmp_path, 'train')
    (tmp_path/'list.txt').write_text('images/a.jpg\n')
    here = os.getcwd(); os.chdir(tmp_path.parent)                     # a relative yaml path without `path:`: splits relative to its folder
    try: assert [f.name for f in read_yolo(Path(tmp_path.name)/'data.yaml', 'train').fnames] == ['a.jpg']
    finally: os.chdir(here)

def test_folder_of_trainval_and_test_json_without_train_json(shapes, tmp_path):
    "trainval.json + test.json (VOC 2007's protocol as COCO files): read with --train-split trainval; the default split is refused by name"
    p = tmp_path/'tv'
    for s,name in (('train','trainval'), ('test','test')):
        coco_with_names(shapes/f'{s}.json', p/f'{name}.json'); copy_images(read_coco(shapes/f'{s}.json'), p/name)
    tr, te = load_records(p, 'test', train_split='trainval')
    same(tr, read_coco(shapes/'train.json')); same(te, read_coco(shapes/'test.json'))
    with pytest.raises(CLIError, match=r'has no train.json to train on'): load_records(p, 'test')
    with pytest.raises(CLIError, match=r'has test.json, trainval.json but no valid.json'): load_records(p, 'valid', train_split='trainval')
