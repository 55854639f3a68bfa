"The fastai-det command: every subcommand, bad input (exit 2, one line, outputs untouched), resume after kill, determinism, 2 processes"
import json, os, signal, subprocess, sys, time, shutil
from pathlib import Path
import pytest, torch
from PIL import Image
from fastai_det.data import make_shapes

BIN = Path(sys.executable).parent
CLI = [str(BIN/'fastai-det')] if (BIN/'fastai-det').exists() else [sys.executable, '-m', 'fastai_det.cli']
TINY = ['--epochs', '2', '--size', '128', '--bs', '8', '--quiet', '--arch', 'mobilenet_v3_small']

def run(*args, env=None, timeout=900):
    e = dict(os.environ, OMP_NUM_THREADS='1', **(env or {}))
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=e)

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp('cli')/'shapes', n_train=24, n_valid=7, n_test=6, show_progress=False)

@pytest.fixture(scope='module')
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp('run')/'r'
    r = run('train', '--data', data, '--out', out, *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, r

def run_here(capsys, *args):
    "The CLI in this process (no interpreter to start, no torch to import again): (exit code, stdout, stderr)"
    from fastai_det.cli import main
    try: code = main([str(a) for a in args])
    except SystemExit as e: code = e.code
    o = capsys.readouterr()
    return code, o.out, o.err

def test_help(capsys):
    for cmd in ('make-data', 'train', 'eval', 'predict', 'export'):
        code, out, _ = run_here(capsys, cmd, '--help'); assert code == 0 and 'examples:' in out, cmd
        opts = out.split('options:')[1].split('examples:')[0]
        n_opts = opts.count('\n  --') - opts.count('\n  --weights')          # option lines, --help (-h) and the required --weights aside
        assert ' '.join(opts.split()).count('(default: ') >= n_opts >= 2, (cmd, opts)   # every other option shows its default
    assert run('--help').returncode == 0                                         # the console script itself

def test_make_data(tmp_path):
    r = run('make-data', '--out', tmp_path/'d', '--n-train', 5, '--n-valid', 2, '--n-test', 1, '--quiet')
    assert r.returncode == 0, r.stderr
    assert {p.name for p in (tmp_path/'d').iterdir()} >= {'train.json', 'valid.json', 'test.json', 'JPEGImages', 'Annotations'}

def test_train_outputs(trained, data):
    out, r = trained
    assert {'model.pkl', 'metrics.json', 'results.csv', 'loss.png', 'pr_curves.png', 'confusion_matrix.png', 'predictions.png', 'checkpoint.pth', 'best.pth'} <= {p.name for p in out.iterdir()}
    m = json.loads((out/'metrics.json').read_text())
    assert len(m['epochs']) == 2 and 0 <= m['map_50'] <= 1 and m['n_valid'] == 7 and m['map_images_per_epoch'] == 7
    assert set(m['per_class']) <= {'circle', 'square', 'triangle', 'cross', 'star', 'ring'}
    p = m['prf']                                                            # precision/recall/F1 at Ultralytics' conf and IoU
    assert (p['conf'], p['iou']) == (0.25, 0.45) and all(0 <= p[k] <= 1 for k in ('precision', 'recall', 'f1'))
    assert set(p['per_class']) <= set(m['per_class'])
    c = m['confusion']                                                      # the counts behind confusion_matrix.png
    assert c['classes'][-1] == 'background' and len(c['counts']) == len(c['classes']) == 7 and (c['rows'], c['columns']) == ('predicted', 'true')
    n_true = len(json.loads((data/'valid.json').read_text())['annotations'])
    assert sum(row[j] for row in c['counts'] for j in range(6)) == n_true     # every true box is in a column: found, confused or missed
    assert 'mAP@0.5' in r.stdout
    assert m['seed'] == 42 and {'fastai_det', 'fastai', 'torch', 'torchvision', 'python'} <= set(m['versions'])
    for f in ('model.pkl', 'metrics.json', 'predictions.png'):                 # the permissions `open` gives, not mkstemp's 0600
        assert (out/f).stat().st_mode & 0o044 == 0o044, f
    assert not list(out.glob('.*.tmp'))
    import csv                                                              # results.csv: a line per epoch, as metrics.json's
    rows = list(csv.DictReader((out/'results.csv').open()))
    assert [int(r['epoch']) for r in rows] == [1, 2] and {'train_loss', 'valid_loss', 'map_50'} <= set(rows[0])
    assert [float(r['map_50']) for r in rows] == pytest.approx([e['map_50'] for e in m['epochs']])

def test_eval_and_predict(trained, data, tmp_path):
    out, _ = trained
    r = run('eval', '--weights', out/'model.pkl', '--data', data, '--split', 'test', '--out', tmp_path/'ev')
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path/'ev'/'metrics.json').read_text())
    assert m['n_images'] == 6 and 'map_50' in m and 'f1' in m['prf'] and 'precision' in r.stdout
    assert (tmp_path/'ev'/'confusion_matrix.png').is_file()
    r2 = run('eval', '--weights', out/'model.pkl', '--data', data, '--split', 'test', '--out', tmp_path/'ev2', '--conf', '0.01', '--iou', '0.5')
    m2 = json.loads((tmp_path/'ev2'/'metrics.json').read_text())            # the thresholds are the user's; mAP does not depend on them
    assert r2.returncode == 0 and (m2['prf']['conf'], m2['prf']['iou'], m2['confusion']['conf']) == (0.01, 0.5, 0.01) and m2['map_50'] == m['map_50']
    assert 'at score >= 0.01 and IoU 0.5' in r2.stdout
    imgs = sorted((data/'JPEGImages').glob('test_*.jpg'))[:2]
    r = run('predict', '--model', out/'model.pkl', *imgs, '--out', tmp_path/'pr', '--thresh', '0.01')   # the old name of --weights
    assert r.returncode == 0, r.stderr
    assert 'fastai-det predict: --model FILE is the old name of --weights FILE; it still works, but use --weights' in r.stderr.splitlines(), r.stderr   # a line of its own, not a Python warning
    res = json.loads((tmp_path/'pr'/'predictions.json').read_text())
    sizes = {str(f): Image.open(f).size for f in imgs}
    assert {d['file_name'] for d in res} <= set(sizes)
    for d in res:
        w, h = sizes[d['file_name']]
        x, y, bw, bh = d['bbox']
        assert d['category_name'] in {'circle', 'square', 'triangle', 'cross', 'star', 'ring'} and 1 <= d['category_id'] <= 6
        assert -1e-3 <= x and x + bw <= w + 1e-3 and bh >= 0
    assert (tmp_path/'pr'/f'{imgs[0].stem}_pred.png').is_file()

def test_coco_ids_kept_and_results_score_with_pycocotools(trained, data, tmp_path, capsys, monkeypatch):
    """eval on a COCO json with its own image and category ids: coco_results.json carries them, and pycocotools scores it
    as eval does. The model answers with the true boxes (a perfect detector), so a wrong id shows as a mAP under 1."""
    import torch
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from fastai_det.data import read_coco
    from fastai_det.ssd import DetLearner
    out, _ = trained
    src = tmp_path/'renum'; src.mkdir(); (src/'JPEGImages').symlink_to(data/'JPEGImages')
    ids = {'circle': 18, 'square': 3, 'triangle': 44, 'cross': 7, 'star': 90, 'ring': 61}       # COCO-like: not 1..6, not in order
    for split in ('train', 'test'):
        d = json.loads((data/f'{split}.json').read_text())
        old = {c['id']: c['name'] for c in d['categories']}
        d['categories'] = [dict(c, id=ids[c['name']]) for c in d['categories']]
        im_ids = {im['id']: 397133 + 10*k for k, im in enumerate(d['images'])}
        d['images'] = [dict(im, id=im_ids[im['id']]) for im in d['images']]
        d['annotations'] = [dict(a, image_id=im_ids[a['image_id']], category_id=ids[old[a['category_id']]]) for a in d['annotations']]
        (src/f'{split}.json').write_text(json.dumps(d))
    truth = {str(f): a for f, a in zip(*read_coco(src/'test.json'))}
    def perfect(self, items, **kw):
        v = list(self.dls.vocab)
        return [dict(boxes=torch.tensor(truth[str(f)].bbs, dtype=torch.float32).reshape(-1, 4), scores=torch.ones(len(truth[str(f)].lbls)),
                     labels=torch.tensor([v.index(l) for l in truth[str(f)].lbls], dtype=torch.long), names=list(truth[str(f)].lbls)) for f in items]
    monkeypatch.setattr(DetLearner, 'predict_batch', perfect)
    code, _, err = run_here(capsys, 'eval', '--weights', out/'model.pkl', '--data', src, '--split', 'test', '--out', tmp_path/'ev')
    assert code == 0, err
    m = json.loads((tmp_path/'ev'/'metrics.json').read_text())
    res = json.loads((tmp_path/'ev'/'coco_results.json').read_text())
    gt = COCO(str(src/'test.json'))
    assert {o['image_id'] for o in res} <= set(gt.getImgIds()) and {o['category_id'] for o in res} <= set(ids.values())
    E = COCOeval(gt, gt.loadRes(res), 'bbox'); E.evaluate(); E.accumulate(); E.summarize()
    assert m['map'] == pytest.approx(1.) and E.stats[0] == pytest.approx(1.) and E.stats[1] == pytest.approx(1.)

def test_export_and_prediction_files(trained, data, tmp_path, capsys):
    "export: each format written and checked against the learner; predict --save-txt/--save-conf/--save-xml: a YOLO and a VOC file per image, a line per detection"
    out, _ = trained
    for fmt in ('torchscript', 'onnx'):
        code, o, err = run_here(capsys, 'export', '--weights', out/'model.pkl', '--format', fmt, '--out', tmp_path/f'm.{fmt}')
        assert code == 0, err
        assert (tmp_path/f'm.{fmt}').is_file() and 'largest difference from the learner' in o and 'before NMS' in o
    code, o, err = run_here(capsys, 'export', '--weights', out/'model.pkl', '--format', 'pt2')
    assert code == 0 and (out/'model.pt2').is_file(), err                         # beside the weights by default
    imgs = sorted((data/'JPEGImages').glob('test_*.jpg'))[:3]
    code, o, err = run_here(capsys, 'predict', '--weights', out/'model.pkl', *imgs, '--out', tmp_path/'p', '--thresh', '0.01', '--save-txt', '--save-conf', '--save-xml')
    assert code == 0, err
    res = json.loads((tmp_path/'p'/'predictions.json').read_text())
    import xml.etree.ElementTree as ET
    for f in imgs:
        rows = [d for d in res if d['file_name'] == str(f)]
        lines = (tmp_path/'p'/'labels'/f'{f.stem}.txt').read_text().splitlines()
        assert len(lines) == len(rows) and all(len(l.split()) == 6 for l in lines)
        assert sorted(int(l.split()[0]) + 1 for l in lines) == sorted(d['category_id'] for d in rows)
        objs = ET.parse(tmp_path/'p'/'Annotations'/f'{f.stem}.xml').getroot().findall('object')
        assert sorted(o.findtext('name') for o in objs) == sorted(d['category_name'] for d in rows)
    code, _, err = run_here(capsys, 'predict', '--weights', out/'model.pkl', imgs[0], '--out', tmp_path/'q', '--save-conf')
    assert code == 2 and '--save-conf' in err and 'needs --save-txt' in err
    code, _, err = run_here(capsys, 'export', '--weights', out/'model.pkl', '--out', tmp_path)
    assert code == 2 and 'is a folder' in err

@pytest.mark.parametrize('model', ['yolo', 'faster-rcnn'])
def test_train_the_other_detectors(model, data, tmp_path, capsys):
    "--model yolo and faster-rcnn: one epoch, the run folder written, predict gives boxes inside the image"
    out = tmp_path/model
    code, o, err = run_here(capsys, 'train', '--model', model, '--data', data, '--out', out, '--epochs', '1', '--size', '128', '--bs', '8', '--quiet')
    assert code == 0, err
    m = json.loads((out/'metrics.json').read_text())
    assert m['settings']['model'] == model and 0 <= m['map_50'] <= 1 and (out/'predictions.png').is_file()
    img = sorted((data/'JPEGImages').glob('test_*.jpg'))[0]
    code, _, err = run_here(capsys, 'predict', '--weights', out/'model.pkl', img, '--out', tmp_path/'p', '--thresh', '0.01')
    assert code == 0, err
    w, h = Image.open(img).size
    assert all(b[0] >= -1e-3 and b[0] + b[2] <= w + 1e-3 for b in (d['bbox'] for d in json.loads((tmp_path/'p'/'predictions.json').read_text())))

@pytest.mark.parametrize('args,msg', [
    (['train', '--data', '/nowhere/x'], 'no such file or folder'),
    (['train', '--model', 'detr'], "--model 'detr'"),
    (['train', '--model', 'ssd', '--sep'], '--sep: only --model retinanet'),
    (['train', '--freeze-stride', '-1'], '--freeze-stride -1: must be 0'),
    (['eval', '--weights', '/nowhere.pkl'], 'no such file'),
    (['train', '--epochs', '0'], '--epochs 0: must be at least 1'),
    (['train', '--bs', '0'], '--bs 0: must be at least 1'),
    (['train', '--size', '0'], '--size 0: must be a multiple of 32'),
    (['train', '--size', '100'], '--size 100: must be a multiple of 32'),
    (['train', '--size', '96', '--model', 'ssd'], '--size 96 with --model ssd: its 3x3 body map cannot be brought down to the 4x4 grid of its anchors; sizes that work: 128, 224, 256, 416'),
    (['train', '--size', '160', '--model', 'ssd-multi'], '--size 160 with --model ssd-multi'),   # checked before any data is read
    (['train', '--lr', '-1'], '--lr -1.0: must be a positive number'),
    (['train', '--lr', 'nan'], '--lr nan: must be a positive number'),
    (['train', '--time', '0'], '--time 0.0: must be a positive number'),
    (['train', '--arch', 'resnet'], "--arch 'resnet': not a torchvision classification model"),
    (['train', '--arch', 'list_models'], "--arch 'list_models': not a torchvision classification model"),
    (['make-data', '--n-train', '0'], '--n-train 0: must be at least 1'),
    (['make-data', '--n-valid', '0'], '--n-valid 0: must be at least 1'),
    (['train', '--epochs', 'x'], "fastai-det train: error: argument --epochs: invalid int value: 'x'"),   # argparse's own errors, one line too
    (['train', '--loss', 'zz'], "argument --loss: invalid choice: 'zz'"),
    (['trian'], "argument COMMAND: invalid choice: 'trian'"),
    (['predict', '--weights', 'm.pkl'], 'the following arguments are required: images'),
    (['make-data', '--n-test', '-1'], '--n-test -1: must be 0 or more'),
    (['make-data', '--size', '16'], '--size 16: must be at least 32'),
    (['predict', '--weights', '/nowhere.pkl', 'a.jpg', '--thresh', '1.5'], '--thresh 1.5: must be between 0 and 1'),
    (['predict', '--weights', '/nowhere.pkl', 'a.jpg', '--save-conf'], '--save-conf True: needs --save-txt'),
    (['train', '--out', '/proc/fastai-det-run'], '--out /proc/fastai-det-run: /proc is not writable'),   # refused by a real write, as root too
    (['make-data', '--out', '/proc/d'], '--out /proc/d: /proc is not writable'),
    (['train', '--train-split', 'valid'], "--valid-split 'valid': is --train-split too"),
    (['eval', '--weights', '/nowhere.pkl', '--bs', '0'], '--bs 0: must be at least 1'),
    (['eval', '--weights', '/nowhere.pkl', '--conf', '2'], '--conf 2.0: must be between 0 and 1'),
    (['eval', '--weights', '/nowhere.pkl', '--iou', '1'], '--iou 1.0: must be at least 0 and below 1'),
])
def test_bad_input_simple(args, msg, capsys):
    code, _, err = run_here(capsys, *args)
    assert code == 2 and msg in err and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err

@pytest.mark.parametrize('cmd', ['train', 'make-data', 'predict', 'eval'])
def test_out_is_a_file(cmd, tmp_path, capsys):
    f = tmp_path/'taken'; f.write_text('a file the user keeps')
    extra = {'predict': ['--weights', '/nowhere.pkl', 'a.jpg'], 'eval': ['--weights', '/nowhere.pkl']}.get(cmd, [])
    code, _, err = run_here(capsys, cmd, *extra, '--out', f)
    assert code == 2 and f'--out {f}: is a file, not a folder' in err and 'Traceback' not in err, err
    assert f.read_text() == 'a file the user keeps'

def test_bad_input_files(tmp_path, trained, data, capsys):
    out, _ = trained
    before = (out/'metrics.json').read_bytes()
    (tmp_path/'notes.txt').write_text('hello')
    code, _, err = run_here(capsys, 'train', '--data', tmp_path/'notes.txt', '--out', out, *TINY)
    assert code == 2 and 'not a COCO .json' in err and 'Traceback' not in err
    (tmp_path/'empty').mkdir()
    code, _, err = run_here(capsys, 'train', '--data', tmp_path/'empty', '--out', out, *TINY)
    assert code == 2 and 'not a dataset folder' in err
    (tmp_path/'e.json').write_text(json.dumps({'images': [], 'annotations': [], 'categories': [{'id': 1, 'name': 'a'}]}))
    code, _, err = run_here(capsys, 'train', '--data', tmp_path/'e.json', '--out', out, *TINY)
    assert code == 2 and 'no images' in err, err
    bad = shutil.copytree(data, tmp_path/'bad')
    (bad/'JPEGImages'/'valid_00001.jpg').write_bytes(b'\xff\xd8\xff not an image')
    code, _, err = run_here(capsys, 'train', '--data', bad, '--out', out, *TINY)
    assert code == 2 and 'valid_00001.jpg: cannot be decoded' in err, err
    (tmp_path/'m.pkl').write_bytes(b'not a pickle')
    code, _, err = run_here(capsys, 'eval', '--weights', tmp_path/'m.pkl', '--data', data)
    assert code == 2 and 'not a model saved by fastai-det' in err
    img = tmp_path/'broken.jpg'; img.write_bytes(b'\xff\xd8 junk')
    code, _, err = run_here(capsys, 'predict', '--weights', out/'model.pkl', img, '--out', tmp_path/'p')
    assert code == 2 and 'broken.jpg: cannot be decoded' in err
    code, _, err = run_here(capsys, 'eval', '--weights', out/'model.pkl', '--data', bad)   # eval checks its images first, as train does
    assert code == 2 and 'valid_00001.jpg: cannot be decoded' in err and len(err.strip().splitlines()) == 1, err
    (bad/'JPEGImages'/'valid_00001.jpg').write_bytes(b'')                                  # a zero-byte image
    code, _, err = run_here(capsys, 'eval', '--weights', out/'model.pkl', '--data', bad)
    assert code == 2 and 'valid_00001.jpg: cannot be decoded' in err, err
    empty = shutil.copytree(data, tmp_path/'noobj')                                         # a split without a single object
    v = json.loads((empty/'valid.json').read_text()); v['annotations'] = []; (empty/'valid.json').write_text(json.dumps(v))
    code, _, err = run_here(capsys, 'eval', '--weights', out/'model.pkl', '--data', empty)
    assert code == 2 and 'no objects in any of its 7 images' in err and 'mAP' in err, err
    code, _, err = run_here(capsys, 'train', '--data', empty, '--out', tmp_path/'noobj_run', *TINY)   # train says it before any work
    assert code == 2 and 'valid split has no objects in any of its 7 images' in err and not (tmp_path/'noobj_run').exists(), err
    (tmp_path/'t.jpg').write_text('x')                                                      # --out: an existing file is refused
    code, _, err = run_here(capsys, 'train', '--data', data, '--out', tmp_path/'t.jpg', *TINY)
    assert code == 2 and '--out' in err, err
    code, _, err = run_here(capsys, 'predict', '--weights', out/'model.pkl', img, '--out', tmp_path/'t.jpg')
    assert code == 2 and '--out' in err, err
    code, _, err = run_here(capsys, 'make-data', '--out', tmp_path/'t.jpg')
    assert code == 2 and '--out' in err, err
    assert (out/'metrics.json').read_bytes() == before            # nothing of the earlier run overwritten

def test_train_on_the_splits_asked(data, tmp_path, capsys):
    "--train-split/--valid-split (VOC 2007's protocol trains on trainval and scores test): here 7 valid images to train, 6 test to score"
    code, _, err = run_here(capsys, 'train', '--data', data, '--train-split', 'valid', '--valid-split', 'test', '--out', tmp_path/'s',
                             '--epochs', '1', '--size', '128', '--bs', '4', '--quiet', '--arch', 'mobilenet_v3_small')
    assert code == 0, err
    m = json.loads((tmp_path/'s'/'metrics.json').read_text())
    assert (m['n_train'], m['n_valid'], m['settings']['train_split'], m['settings']['valid_split']) == (7, 6, 'valid', 'test')

def test_a_command_prints_no_warning():
    "fastai's import warns on torch 2.14 (torch.jit.script); a command's stderr stays clean of it"
    r = run('train', '--help')
    assert r.returncode == 0 and '--weights' not in r.stdout and '--time' in r.stdout and 'Warning' not in r.stderr, r.stderr

def test_version_answers_without_importing_torch():
    "`fastai-det --version` prints the version without importing torch or fastai (it took about 9 s when it did)"
    code = "import sys; from fastai_det.cli import main; rc = main(['--version']); assert rc == 0; print(sorted(m for m in ('torch', 'fastai') if m in sys.modules))"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.splitlines() == [f'fastai-det {__import__("fastai_det").__version__}', '[]'], (r.stdout, r.stderr)
    r = run('--version')
    assert r.returncode == 0 and r.stdout.startswith('fastai-det ') and not r.stderr

def test_nan_stops_with_message(data, tmp_path):
    r = run('train', '--data', data, '--out', tmp_path/'n', *TINY[:-2], '--arch', 'mobilenet_v3_small', '--lr', '1e9')
    assert r.returncode == 2 and 'learning rate' in r.stderr and 'Traceback' not in r.stderr, r.stderr[-1500:]
    ck = (tmp_path/'n'/'checkpoint.pth').is_file()                    # the message names a checkpoint only when there is one
    assert ('--resume' in r.stderr) == ck and ('nothing was saved' in r.stderr) != ck, r.stderr

def test_deterministic(data, tmp_path, trained):
    out, _ = trained
    r = run('train', '--data', data, '--out', tmp_path/'again', *TINY)
    assert r.returncode == 0, r.stderr
    a, b = [json.loads((p/'metrics.json').read_text()) for p in (out, tmp_path/'again')]
    assert a['epochs'] == b['epochs'] and a['map'] == b['map']

def assert_model_loads_and_is_the_checkpoint(out, data):
    "The run's model.pkl loads, has the last checkpoint's weights and predicts on an image"
    import torch, warnings
    from fastai.learner import load_learner
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); learn = load_learner(out/'model.pkl')
    state = torch.load(out/'checkpoint.pth', map_location='cpu', weights_only=False)
    sd = learn.model.state_dict()
    assert set(sd) == set(state['model']) and all(torch.equal(sd[k].cpu(), v) for k, v in state['model'].items())
    d = learn.predict(sorted((Path(data)/'JPEGImages').glob('*.jpg'))[0], score_thresh=0.)
    assert len(d['boxes']) and d['boxes'].shape[1] == 4 and len(d['names']) == len(d['scores'])

def test_resume_after_kill(data, tmp_path):
    out = tmp_path/'k'
    args = CLI + ['train', '--data', str(data), '--out', str(out), '--epochs', '4', '--size', '128', '--bs', '8', '--quiet', '--arch', 'mobilenet_v3_small']
    p = subprocess.Popen(args, env=dict(os.environ, OMP_NUM_THREADS='1'), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.time()
    while not (out/'checkpoint.pth').exists() and time.time() - t0 < 600: time.sleep(0.2)
    time.sleep(1.0)                                                   # into the next epoch
    p.send_signal(signal.SIGKILL); p.wait()
    assert (out/'checkpoint.pth').exists() and not (out/'model.pkl').exists()
    ck = torch.load(out/'checkpoint.pth', weights_only=False)
    r = run('train', '--data', data, '--out', out, '--epochs', '4', '--size', '128', '--bs', '8', '--quiet', '--arch', 'mobilenet_v3_small', '--resume')
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'resuming after epoch' in r.stdout
    m = json.loads((out/'metrics.json').read_text())
    assert len(m['epochs']) == 4 and not list(out.glob('.*.tmp'))
    assert m['map_images_per_epoch'] == 7 and m['train_time_s'] > ck['train_time_s'] > 0     # the killed process's epochs counted in
    assert_model_loads_and_is_the_checkpoint(out, data)

def test_resume_a_run_killed_after_its_last_epoch(trained, data, tmp_path):
    "A kill during the final export leaves the last epoch's checkpoint and no model: `--resume` writes the model, metrics and pictures"
    out, _ = trained
    run_dir = shutil.copytree(out, tmp_path/'done')
    for f in ('model.pkl', 'metrics.json', 'results.csv', 'predictions.png'): (run_dir/f).unlink()
    (run_dir/'.model.pkl.1234.tmp').write_bytes(b'half a pickle')                # what a kill during the export leaves
    r = run('train', '--data', data, '--out', run_dir, *TINY, '--resume')
    assert r.returncode == 0, r.stderr[-2000:]
    m, m0 = [json.loads((p/'metrics.json').read_text()) for p in (run_dir, out)]
    assert len(m['epochs']) == 2 and m['epochs'] == m0['epochs'] and m['map'] == pytest.approx(m0['map'])
    assert m['map_images_per_epoch'] == m0['map_images_per_epoch'] == 7                    # the checkpoint's, though no epoch ran here
    assert 0.8*m0['train_time_s'] <= m['train_time_s'] <= m0['train_time_s'] + 1e-6       # the first process's training time, from the checkpoint
    assert (run_dir/'model.pkl').is_file() and (run_dir/'results.csv').is_file() and (run_dir/'predictions.png').is_file()
    assert not list(run_dir.glob('.*.tmp'))
    assert_model_loads_and_is_the_checkpoint(run_dir, data)

def test_resume_refuses_another_runs_or_a_broken_checkpoint(trained, data, tmp_path, capsys):
    "`--resume` says which setting differs from the checkpoint's run, and names a checkpoint it cannot read or load (weights or optimizer state); nothing is written"
    import torch
    out, _ = trained
    run_dir = shutil.copytree(out, tmp_path/'r')
    before = (run_dir/'metrics.json').read_bytes()
    args = ['train', '--data', data, '--out', run_dir, *TINY, '--resume']
    code, _, err = run_here(capsys, *args, '--size', '160')                       # the last --size wins
    assert code == 2 and '--size 128' in err and '--size 160' in err and len(err.strip().splitlines()) == 1, err
    other = shutil.copytree(data, tmp_path/'other')                               # the same images elsewhere: another dataset to --resume
    code, _, err = run_here(capsys, 'train', '--data', other, '--out', run_dir, *TINY, '--resume')
    assert code == 2 and f'--data {Path(data).resolve()}' in err and f'--data {other.resolve()}' in err, err
    code, _, err = run_here(capsys, *args, '--valid-split', 'test')
    assert code == 2 and '--valid-split valid' in err and '--valid-split test' in err, err
    st = torch.load(run_dir/'checkpoint.pth', weights_only=False); st.pop('settings')   # as an older version wrote it: nothing to compare
    st['opt'] = dict(st['opt'], state=st['opt']['state'][::-1])                 # the weights fit, the optimizer's moments are of other parameters
    torch.save(st, run_dir/'checkpoint.pth')
    code, _, err = run_here(capsys, *args)
    assert code == 2 and 'optimizer state' in err and 'of shape' in err and len(err.strip().splitlines()) == 1, err
    st['opt'] = dict(st['opt'], state=st['opt']['state'][1:]); torch.save(st, run_dir/'checkpoint.pth')
    code, _, err = run_here(capsys, *args)
    assert code == 2 and "parameters' state for" in err and len(err.strip().splitlines()) == 1, err
    (run_dir/'checkpoint.pth').write_bytes(b'PK\x03\x04 not a checkpoint')
    code, _, err = run_here(capsys, *args)
    assert code == 2 and 'checkpoint.pth cannot be read' in err, err
    torch.save({'model': {}, 'opt': {}, 'epoch': 0, 'history': []}, run_dir/'checkpoint.pth')   # no settings recorded, no weights
    code, _, err = run_here(capsys, *args)
    assert code == 2 and 'weights of another model' in err and len(err.strip().splitlines()) == 1, err
    assert (run_dir/'metrics.json').read_bytes() == before

def test_divergence_stops_before_the_checkpoint_is_overwritten(tmp_path):
    "A finite but exploding validation loss stops the fit after that epoch, and `Checkpoint` keeps the last good epoch"
    import torch
    from fastai.test_utils import synth_learner
    from fastai.callback.core import Callback
    from fastai_det.engine import Checkpoint, StopOnDivergence
    class Explode(Callback):                                              # after epoch 2, weights blown up: a finite, huge loss
        def before_epoch(self):
            if self.epoch == 2:
                with torch.no_grad(): [p.mul_(1e4) for p in self.learn.model.parameters()]
    torch.manual_seed(0); learn = synth_learner(n_trn=8, n_val=4, lr=1e-3)   # no jump of its own before epoch 2
    ck = tmp_path/'checkpoint.pth'
    learn.fit(6, cbs=[Checkpoint(ck), StopOnDivergence(), Explode()])
    e, v, best = learn.diverged
    assert e == 2 and v > 10*best and len(learn.recorder.values) == 3
    state = torch.load(ck, weights_only=False)
    assert state['epoch'] == 1 and len(state['history']) == 2           # epoch 2's weights never reached the file

def test_divergence_restores_the_best_epoch(tmp_path):
    "`StopOnDivergence` keeps the weights of the epoch with the lowest validation loss, not only the last good one"
    import torch
    from fastai.test_utils import synth_learner
    from fastai.callback.core import Callback
    from fastai_det.engine import StopOnDivergence
    snaps = {}
    class Worse(Callback):                                                # y = 2x + 3: set before each validation, no training (lr 0)
        order = 90
        def before_validate(self):
            a, b = [(1., 2.), (2., 3.), (2.05, 3.), (1e4, 3.)][self.epoch]     # loss ~2, best, a little worse, exploded
            with torch.no_grad(): self.learn.model.a.fill_(a); self.learn.model.b.fill_(b)
        def after_epoch(self): snaps[self.epoch] = {k: v.clone() for k, v in self.learn.model.state_dict().items()}
    learn = synth_learner(n_trn=4, n_val=8, lr=0.)
    stop = StopOnDivergence()
    learn.fit(6, cbs=[stop, Worse()])
    losses = [r[1] for r in learn.recorder.values]
    e, v, best = learn.diverged
    assert e == 3 == len(losses) - 1 and v > 10*best and best == min(losses[:-1]) and losses[2] > losses[1]
    assert stop.best_epoch == losses.index(min(losses[:-1])) and stop.best_epoch != e - 1, losses   # the best is not the last good epoch
    for k, t in stop.best_state.items(): assert torch.equal(t, snaps[stop.best_epoch][k])

DIVERGE_RANKS = r"""
import json, os, sys, torch, torch.distributed as dist
from fastai.test_utils import synth_learner
from fastai.callback.core import Callback
from fastai_det.engine import StopOnDivergence, StopOnNaN
rank, what = int(os.environ['RANK']), sys.argv[2]
dist.init_process_group('gloo', init_method='file://' + sys.argv[1], rank=rank, world_size=2)
class Blow(Callback):                                                     # only rank 1's weights blow up, at epoch 2
    def before_epoch(self):
        if rank == 1 and self.epoch == 2:
            with torch.no_grad(): [p.mul_(float('nan') if what == 'nan' else 1e4) for p in self.learn.model.parameters()]
torch.manual_seed(rank)                                                   # a fixed start; lr 1e-3: no jump of its own before epoch 2
learn = synth_learner(n_trn=16, n_val=8, lr=1e-3); learn.diverged = learn.nan_batch = None
with learn.no_bar(), learn.no_logging(): learn.fit(6, cbs=[StopOnDivergence(), StopOnNaN(), Blow()])
print(json.dumps(dict(epochs=len(learn.recorder.values), diverged=learn.diverged, nan=learn.nan_batch)))
dist.destroy_process_group()
"""

def test_processes_stop_together(tmp_path):
    "A divergence or a NaN in one process of a distributed run stops every process at the same epoch (none waits forever)"
    script = tmp_path/'ranks.py'; script.write_text(DIVERGE_RANKS)
    for what in ('diverge', 'nan'):
        init = tmp_path/f'init_{what}'
        ps = [subprocess.Popen([sys.executable, str(script), str(init), what], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, RANK=str(r), OMP_NUM_THREADS='1')) for r in (0, 1)]
        outs = [p.communicate(timeout=120) for p in ps]
        assert all(p.returncode == 0 for p in ps), [o[1][-1500:] for o in outs]
        r0, r1 = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
        if what == 'diverge':
            assert r0['diverged'] and r1['diverged'] and r0['diverged'][0] == r1['diverged'][0] == 2, (r0, r1)
            assert r0['diverged'][1] == r1['diverged'][1] > 10*r1['diverged'][2]                  # rank 0 reports rank 1's loss
        else:
            assert r0['nan'] and r0['nan'] == r1['nan'] and r0['nan'][0] == 2, (r0, r1)        # the same batch, before its step

def test_two_processes(data, tmp_path):
    torchrun = BIN/'torchrun'
    out = tmp_path/'ddp'
    cmd = [str(torchrun), '--nproc_per_node', '2', '--master_port', '29533', '-m', 'fastai_det.cli', 'train', '--data', str(data),
           '--out', str(out), '--epochs', '2', '--size', '128', '--bs', '8', '--quiet', '--arch', 'mobilenet_v3_small']
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out/'metrics.json').read_text())
    # 7 valid images on 2 processes: 4 each, one repeated by fastai's DistributedDL; the per-epoch mAP counts each once
    assert m['n_valid'] == 7 and m['map_images_per_epoch'] == 7 and len(m['epochs']) == 2 and m['settings']['world_size'] == 2
    assert all(e['map_50'] is not None for e in m['epochs'])

KILL_IN_SAVE = r'''
import os, signal, sys, torch
n, name, calls, _save = int(sys.argv[1]), sys.argv[2], [0], torch.save
def save(obj, f, *a, **k):                    # the n-th torch.save into a temp file of `name`: half the file on disk, then a real SIGKILL
    calls[0] += os.path.basename(str(f)).startswith(f'.{name}.')
    if calls[0] == n:
        _save(obj, f, *a, **k)
        with open(f, 'r+b') as fh: fh.truncate(os.path.getsize(f)//2)
        os.kill(os.getpid(), signal.SIGKILL)
    return _save(obj, f, *a, **k)
torch.save = save
from fastai_det.cli import main
sys.exit(main(sys.argv[3:]))
'''

@pytest.mark.parametrize('n,name,what', [(2, 'checkpoint.pth', 'the second epoch checkpoint'), (1, 'model.pkl', 'the model export')])
def test_sigkill_while_writing(n, name, what, data, tmp_path):
    "A real SIGKILL in the middle of writing a checkpoint or the model: the last good file survives whole, `--resume` cleans up and finishes"
    import torch
    out = tmp_path/'r'
    args = ['train', '--data', str(data), '--out', str(out), *TINY]
    r = subprocess.run([sys.executable, '-c', KILL_IN_SAVE, str(n), name, *args], env=dict(os.environ, OMP_NUM_THREADS='1'), capture_output=True, text=True, timeout=900)
    assert r.returncode == -signal.SIGKILL, (what, r.returncode, r.stderr[-1500:])
    assert list(out.glob('.*.tmp')), f"{what}: the half-written temporary file should be there"
    state = torch.load(out/'checkpoint.pth', map_location='cpu', weights_only=False)       # whole, not half
    assert state['epoch'] == (0 if name == 'checkpoint.pth' else 1) and not (out/'model.pkl').exists()
    r = run(*args, '--resume')
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'unfinished temporary file' in r.stdout and not list(out.glob('.*.tmp'))
    m = json.loads((out/'metrics.json').read_text())
    assert len(m['epochs']) == 2 and (out/'model.pkl').is_file()
    assert_model_loads_and_is_the_checkpoint(out, data)

BLOW_UP = r'''
import sys, torch
from fastai.learner import Learner
from fastai.callback.core import Callback
import fastai.callback.schedule                # adds `Learner.fit_one_cycle`
at, _fit = int(sys.argv[1]), Learner.fit_one_cycle
class Blow(Callback):                         # after epoch `at`'s training, before its validation: the last layer's bias off by 1e4, a finite, huge loss
    def before_validate(self):
        if self.epoch == at:
            with torch.no_grad(): list(self.learn.model.parameters())[-1].add_(1e4)
def fit_one_cycle(self, *a, cbs=None, **k): return _fit(self, *a, cbs=list(cbs or []) + [Blow()], **k)
Learner.fit_one_cycle = fit_one_cycle
from fastai_det.cli import main
sys.exit(main(sys.argv[2:]))
'''

def test_train_diverging_keeps_the_best_epoch(data, tmp_path):
    "`fastai-det train` whose validation loss explodes (finite) at epoch 3: exit 0, one message, the model is the best epoch's (`best.pth`), the checkpoint the last good one; `--resume` finishes the run"
    import torch
    out = tmp_path/'d'
    args = ['train', '--data', str(data), '--out', str(out), *TINY, '--epochs', '3']
    r = subprocess.run([sys.executable, '-c', BLOW_UP, '2', *args], env=dict(os.environ, OMP_NUM_THREADS='1'), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    msg = [l for l in r.stderr.splitlines() if 'diverged' in l]
    assert len(msg) == 1 and 'at epoch 3' in msg[0] and 'best.pth' in msg[0], r.stderr[-2000:]
    m = json.loads((out/'metrics.json').read_text())
    losses = [e['valid_loss'] for e in m['epochs']]
    assert len(losses) == 2 and 'diverged at epoch 3' in m['stopped'] and len((out/'results.csv').read_text().splitlines()) == 3
    best, ck = [torch.load(out/f, map_location='cpu', weights_only=False) for f in ('best.pth', 'checkpoint.pth')]
    assert best['epoch'] == losses.index(min(losses)) and best['valid_loss'] == pytest.approx(min(losses)) and ck['epoch'] == 1
    from fastai.learner import load_learner
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); learn = load_learner(out/'model.pkl')
    sd = learn.model.state_dict()
    assert all(torch.equal(sd[k].cpu(), v) for k, v in best['model'].items())
    assert f"epoch {best['epoch']+1}, the best one" in msg[0]
    r = run(*args, '--resume')                                            # the same run, without the blow-up: it finishes
    assert r.returncode == 0 and 'resuming after epoch 2 of 3' in r.stdout, r.stderr[-2000:]
    m0, m = m, json.loads((out/'metrics.json').read_text())
    assert len(m['epochs']) == 3 and 'stopped' not in m and m['epochs'][:2] == m0['epochs']
    assert torch.load(out/'best.pth', weights_only=False)['valid_loss'] == pytest.approx(min(e['valid_loss'] for e in m['epochs']))

def test_loss_picture_has_its_curves(trained):
    "loss.png shows the training loss and the loss parts (the final evaluation's get_preds once emptied both)"
    import numpy as np
    from PIL import Image
    out, _ = trained
    a = np.asarray(Image.open(out/'loss.png').convert('RGB')).astype(int)
    blue = (np.abs(a - np.array([31, 119, 180])).sum(-1) < 60)          # matplotlib's C0: the train loss, the first loss part
    h, w = blue.shape
    left, right = int(blue[:, :w//2].sum()), int(blue[:, w//2:].sum())
    assert left > 150 and right > 150, (left, right)                   # an empty panel has none (its legend samples are too thin)

def test_tta(trained, data, tmp_path, capsys):
    """predict --tta sees each image as it is and mirrored, so an image and its mirror get mirrored detections (as sets:
    a box at an NMS IoU of almost exactly 0.5 may go either way by rounding, so 90% must match); without --tta they do not"""
    out, _ = trained
    im = Image.open(sorted((data/'JPEGImages').glob('test_*.jpg'))[0]).convert('RGB').resize((128, 128))   # the input size: no resampling
    im.save(tmp_path/'a.png'); im.transpose(Image.FLIP_LEFT_RIGHT).save(tmp_path/'m.png')
    def matched(*flags):
        res = {}
        for f in ('a', 'm'):
            code, _, err = run_here(capsys, 'predict', '--weights', out/'model.pkl', tmp_path/f'{f}.png', '--out', tmp_path/f'p{f}', '--thresh', '0.01', *flags)
            assert code == 0, err
            res[f] = json.loads((tmp_path/f'p{f}'/'predictions.json').read_text())
        assert len(res['a']) and len(res['m'])
        row = lambda d, mirror: [128 - d['bbox'][0] - d['bbox'][2] if mirror else d['bbox'][0], *d['bbox'][1:], d['score']*1e3, d['category_id']*1e3]
        a = torch.tensor([row(d, True) for d in res['a']], dtype=torch.float64)
        m = torch.tensor([row(d, False) for d in res['m']], dtype=torch.float64)
        dist = torch.cdist(a, m, compute_mode='donot_use_mm_for_euclid_dist')      # (rounded to 0.01 px and 1e-5 in the json)
        return min((dist.min(1).values < 0.05).float().mean(), (dist.min(0).values < 0.05).float().mean())
    assert matched('--tta') >= 0.9
    assert matched() < 0.5
    code, _, err = run_here(capsys, 'eval', '--weights', out/'model.pkl', '--data', data, '--split', 'test', '--out', tmp_path/'ev', '--tta')
    assert code == 0, err
    assert json.loads((tmp_path/'ev'/'metrics.json').read_text())['tta'] is True

def test_checkpoint_writes_only_the_epochs_a_fit_trains(tmp_path):
    "fastai calls after_epoch for the epochs `start_epoch` skips too: a resumed fit must not rewrite the checkpoint for them"
    from fastai.test_utils import synth_learner
    from fastai_det.engine import Checkpoint
    saved = []
    class Counting(Checkpoint):
        def _save(self, name): saved.append(self.epoch); super()._save(name)
    learn = synth_learner(n_trn=64, n_val=16)
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-3, cbs=Counting(tmp_path/'ck.pth'))
    assert saved == [0, 1] and torch.load(tmp_path/'ck.pth', weights_only=False)['epoch'] == 1
    saved.clear(); learn.prior_history = torch.load(tmp_path/'ck.pth', weights_only=False)['history']
    with learn.no_bar(), learn.no_logging(): learn.fit(4, 1e-3, start_epoch=2, cbs=Counting(tmp_path/'ck.pth'))
    assert saved == [2, 3] and len(torch.load(tmp_path/'ck.pth', weights_only=False)['history']) == 4

def test_exif_photo_predict_and_eval_in_the_viewed_frame(trained, tmp_path, capsys):
    "A phone photo stored turned (EXIF orientation 6): predict's and eval's boxes, txt labels and pictures are in the upright 120x80 frame"
    import numpy as np
    from test_images import _phone_photo
    out, _ = trained
    box = _phone_photo(tmp_path/'p.jpg')                       # stored 80x120, viewed 120x80
    assert Image.open(tmp_path/'p.jpg').size == (80, 120)
    code, _, err = run_here(capsys, 'predict', '--weights', out/'model.pkl', tmp_path/'p.jpg', '--out', tmp_path/'pr', '--thresh', '0', '--save-txt')
    assert code == 0, err
    bbs = [d['bbox'] for d in json.loads((tmp_path/'pr'/'predictions.json').read_text())]
    x2, y2 = max(b[0]+b[2] for b in bbs), max(b[1]+b[3] for b in bbs)
    assert len(bbs) >= 5 and x2 <= 120 + 1e-3 and y2 <= 80 + 1e-3 and x2 > 80, (len(bbs), x2, y2)   # wider than the stored image: the viewed frame
    txt = np.loadtxt(tmp_path/'pr'/'labels'/'p.txt', ndmin=2)   # class cx cy w h, fractions of the viewed size
    px = txt[:, 1:] * [120, 80, 120, 80]
    assert np.allclose(sorted(px[:, 0] + px[:, 2]/2), sorted(b[0]+b[2] for b in bbs), atol=.5)
    assert Image.open(tmp_path/'pr'/'p_pred.png').size[0] > Image.open(tmp_path/'pr'/'p_pred.png').size[1]   # drawn upright (landscape)
    x1,y1,xb,yb = box
    coco = dict(images=[dict(id=5, file_name='p.jpg', width=120, height=80)], categories=[dict(id=1, name='square')],
                annotations=[dict(id=1, image_id=5, category_id=1, bbox=[x1, y1, xb-x1, yb-y1], area=1200, iscrowd=0)])
    (tmp_path/'a.json').write_text(json.dumps(coco))
    code, _, err = run_here(capsys, 'eval', '--weights', out/'model.pkl', '--data', tmp_path/'a.json', '--out', tmp_path/'ev')
    assert code == 0, err
    res = json.loads((tmp_path/'ev'/'coco_results.json').read_text())
    assert res and all(d['image_id'] == 5 and d['bbox'][0]+d['bbox'][2] <= 120 + 1e-3 and d['bbox'][1]+d['bbox'][3] <= 80 + 1e-3 for d in res)
    assert max(d['bbox'][0]+d['bbox'][2] for d in res) > 80

def test_exif_photo_in_the_run_pictures(trained, tmp_path, monkeypatch):
    "train's predictions.png draws a phone photo upright, its true box on the red square (the picture code is train's own `save_pictures`)"
    import numpy as np
    import fastai_det.boxes as B
    from test_images import _phone_photo
    from fastai_det.engine import load_detector, load_records, evaluate_learner, save_pictures
    out, _ = trained
    x1,y1,xb,yb = _phone_photo(tmp_path/'p.jpg')
    coco = dict(images=[dict(id=5, file_name='p.jpg', width=120, height=80)], categories=[dict(id=1, name='square')],
                annotations=[dict(id=1, image_id=5, category_id=1, bbox=[x1, y1, xb-x1, yb-y1], area=1200, iscrowd=0)])
    (tmp_path/'a.json').write_text(json.dumps(coco))
    learn = load_detector(out/'model.pkl')
    _, recs = load_records(tmp_path/'a.json', 'valid')
    res = evaluate_learner(learn, recs, bs=2)
    drawn, show = [], B.show_boxes
    def spy(boxes, *a, img=None, **k):
        drawn.append((np.asarray(img), torch.as_tensor(boxes).view(-1, 4)))
        return show(boxes, *a, img=img, **k)
    monkeypatch.setattr(B, 'show_boxes', spy)
    save_pictures(learn, res, recs, tmp_path)
    assert (tmp_path/'predictions.png').stat().st_size > 0 and len(drawn) == 2
    (im, truth), (im2, pred) = drawn
    assert im.shape[:2] == (80, 120) and im2.shape[:2] == (80, 120)                 # upright: 120 wide, 80 high
    cx, cy = [int(v) for v in ((truth[0, 0] + truth[0, 2]) / 2, (truth[0, 1] + truth[0, 3]) / 2)]
    r, g, b = im[cy, cx][:3].astype(int)
    assert r > 150 and g < 100 and b < 100, im[cy, cx]                              # the true box's centre is on the red square
    assert len(pred) == 0 or (pred[:, 2].max() <= 120 + 1e-3 and pred[:, 3].max() <= 80 + 1e-3)
