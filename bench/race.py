"""The race of issue 16: the CLI's detector against torchvision's ssdlite and Ultralytics' YOLO11n, from random weights,
same data, same training clock, same scorer.

    .venv/bin/python bench/race.py [--budget 8] [--every 2] [--sets shapes,foreign] [--models ours,ours-shapes,ssdlite,yolo11n]

Each contestant trains in its own process, one after another (never two at once on the two cores), for `--budget`
minutes of training time with its schedule fitted to that budget, and is scored every `--every` minutes with the clock
stopped: it detects on every validation image, boxes in the image's own pixels, and `evaluate_detections` scores them
(crowd boxes ignored). At the end pycocotools scores the same final predictions against the source json (COCO results
with the source's image and category ids), printed beside ours as a check of the scorer.

- `ours`: `fastai-det train`'s detector and recipe, read from its parser's defaults (RetinaNet, MobileNetV3-large,
  depthwise-separable head, softmax CE with hard-negative mining, bs 32, Adam one-cycle) with `--pretrained none`; the
  one-cycle schedule fitted to the clock by `TimeBudget`, its warm-up `TIME_PCT_START` (0.1) of the budget (what
  `--time` does; `--pct-start` screens other values: bench/screen_pct_start.log).
- `ours-shapes`: the same from the shipped shapes body (`--pretrained shapes`: body at a tenth of the rate, stem frozen).
  Transfer, not a race from scratch: a separate row.
- `ssdlite`: `torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)` at
  128 px, AdamW with linear warmup (5% of the budget) then cosine to zero over the budget, fed by the same fastai
  DataLoaders (same augmentation); batch size and learning rate from `--ssdlite-bs`/`--ssdlite-lr`, one row per
  setting raced (`ssdlite-bs8-lr0.001`, ...): the issue's screen found bs 8, lr 1e-3 best on its machine; here
  bs 32 (`--ssdlite-bs 32`) trains about a fifth more images a second but scores lower on both sets; the table keeps both.
- `yolo11n`: Ultralytics' `YOLO('yolo11n.yaml')` (no weights) trained by its own trainer with `time=` (its schedule,
  warmup and augmentation; `epochs=100`, its default, so that `optimizer=auto` picks what it picks for a run of this
  length), `imgsz=128`, batch 16, `amp=False`, its default data workers (none on a CPU); data written in its txt layout,
  predictions mapped back to the source's ids. Offline: `YOLO_OFFLINE`, a config folder with a local font as
  `Arial.ttf`, its `NUM_THREADS` set to this run's thread count (its `select_device` would set 1). Needs
  `pip install -e '.[bench]'`.

Writes `bench/race.json` (a run replaces the set/contestant pairs it races, keeps the rest), `bench/race.log` (what it
printed, appended) and `bench/race.png` (mAP@0.5 against training minutes,
one panel per set). Not a test: the numbers depend on the machine and its load.
"""
import argparse, contextlib, copy, io, json, math, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = ('ours', 'ours-shapes', 'ssdlite', 'yolo11n')

def load_set(name, root:Path):
    "(train, valid) records, and the valid json, of the embedded shapes data or the foreign COCO set"
    from fastai_det.data import make_shapes, read_coco
    if name == 'shapes': d = make_shapes(root/'shapes', show_progress=False)
    else:
        sys.path.insert(0, str(HERE)); from foreign import make_foreign
        d = make_foreign(root/'foreign')
    return read_coco(d/'train.json'), read_coco(d/'valid.json'), d/'valid.json'

class Clock:
    "Training seconds with the scoring pauses taken out; `due()` says when a checkpoint is reached"
    def __init__(self, every): self.every,self.t0,self.paused,self.next,self.n_img = every,time.perf_counter(),0.,every,0
    def elapsed(self): return time.perf_counter() - self.t0 - self.paused
    def due(self): return self.elapsed() >= self.next
    def score(self, evaluate, rows):
        "Run `evaluate()` (-> metrics, infer img/s) with the clock stopped; returns the pause in seconds"
        el,t = self.elapsed(),time.perf_counter()
        m,ips = evaluate()
        rows.append(dict(minutes=el/60, train_ips=self.n_img/max(el, 1e-9), infer_ips=ips, **m))
        print(f"  {el/60:5.2f} min  map {m['map']:.3f}  map_50 {m['map_50']:.3f}  train {self.n_img/max(el,1e-9):5.1f} img/s  infer {ips:5.1f} img/s", flush=True)
        while self.next <= el: self.next += self.every
        pause = time.perf_counter() - t; self.paused += pause
        return pause

def score(preds, va, classes):
    from fastai_det.engine import _targets
    from fastai_det.metrics import evaluate_detections
    m = evaluate_detections(preds, _targets(va, classes))
    return dict(map=float(m['map']), map_50=float(m['map_50']))

def img_sizes(va):
    from PIL import Image
    out = []
    for f in va.fnames:
        with Image.open(f) as im: out.append(im.size)
    return out

# --- ours -------------------------------------------------------------------------------------------------------
def run_ours(tr, va, a, pretrained):
    import torch
    from fastai.callback.core import Callback, CancelValidException
    from fastai_det.engine import build_learner
    from fastai_det.bodies import ChannelsLastBatch, freeze_stem
    from fastai_det.data import det_dls
    from fastai_det.ssd import TimeBudget
    from fastai_det.cli import parser
    d = parser().parse_args(['train'])                               # the CLI's defaults: model, loss, arch, bs, lr
    dls = det_dls(tr, va, 'boxes', size=a.size, bs=d.bs, show_progress=False)
    learn = build_learner(d.model, dls, d.loss, d.arch, d.sep, pretrained)
    if learn.pretrained: freeze_stem(learn.model, 4)                 # as `train` does with a pretrained body
    learn.metrics = []
    rows, clock = [], Clock(a.every*60)
    from fastai_det.ssd import unscale_boxes
    sizes, vdl = img_sizes(va), dls.valid.new(shuffle=False, drop_last=False)
    def detect_all():
        "The valid images through the model as it is (no `get_preds`: this runs inside the fit), boxes in image pixels"
        model = learn.model; model.eval(); preds = []
        with torch.no_grad():
            for xb,*_ in vdl: preds += learn.loss_func.detect_activated(*learn.loss_func.activation(model(xb)), score_thresh=0.01)
        model.train()
        for d,sz in zip(preds, sizes): d['boxes'] = unscale_boxes(d['boxes'], sz)
        return preds
    def evaluate():
        t = time.perf_counter(); preds = detect_all()
        return score(preds, va, tr.classes), len(preds)/(time.perf_counter() - t)
    tb = TimeBudget(a.budget)
    class Race(Callback):
        order = 95
        def before_validate(self): raise CancelValidException()      # no per-epoch validation: the clock counts training
        def after_batch(self):
            if not self.training: return
            clock.n_img += self.xb[0].shape[0]
            if clock.due(): tb.t0 += clock.score(evaluate, rows)     # TimeBudget's clock stops too
    lr = slice(d.lr/10, d.lr) if learn.pretrained else d.lr
    from fastai_det.engine import TIME_PCT_START                      # `train --time`'s warm-up, unless screened with --pct-start
    pct = TIME_PCT_START if a.pct_start is None else a.pct_start
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1000, lr, cbs=[tb, Race(), ChannelsLastBatch()], pct_start=pct)
    clock.score(evaluate, rows)
    return rows, detect_all(), sum(p.numel() for p in learn.model.parameters())

# --- torchvision ssdlite ------------------------------------------------------------------------------------------
def run_ssdlite(tr, va, a):
    import torch
    from torch import Tensor
    from torchvision.models import detection as D
    from fastai_det.data import det_dls
    dls = det_dls(tr, va, 'boxes', size=a.size, bs=a.ssdlite_bs, show_progress=False)
    n_cls, size = len(dls.vocab) - 1, a.size
    model = D.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=n_cls+1, score_thresh=0.01, detections_per_img=100)
    model.transform.min_size, model.transform.max_size, model.transform.fixed_size = (size,), size, (size, size)
    opt = torch.optim.AdamW(model.parameters(), lr=a.ssdlite_lr, weight_decay=1e-4)
    budget, warm = a.budget*60, 0.05*a.budget*60
    sizes = img_sizes(va)
    vdl = dls.valid.new(shuffle=False, drop_last=False)
    def evaluate():
        model.eval(); preds = []
        t = time.perf_counter()
        with torch.no_grad():
            for xb,*_ in vdl: preds += model(list(xb.as_subclass(Tensor)))
        ips = len(preds)/(time.perf_counter() - t)
        model.train()
        for d,(w,h) in zip(preds, sizes): d['boxes'] = d['boxes'] * torch.tensor([w/size, h/size, w/size, h/size])
        return score(preds, va, tr.classes), ips
    rows, clock = [], Clock(a.every*60)
    model.train()
    while clock.elapsed() < budget:
        for xb,bbs,lbls in dls.train:
            el = clock.elapsed()
            if el >= budget: break
            f = el/budget
            lr = a.ssdlite_lr * (el/warm if el < warm else 0.5*(1 + math.cos(math.pi*(el - warm)/(budget - warm))))
            for g in opt.param_groups: g['lr'] = lr
            tg = []
            for bb,lb in zip(bbs.as_subclass(Tensor), lbls.as_subclass(Tensor)):
                b = ((bb+1)/2*size).clamp(0, size); keep = (lb > 0) & (b[:,2] > b[:,0]+1) & (b[:,3] > b[:,1]+1)
                tg.append(dict(boxes=b[keep], labels=lb[keep].long()))
            loss = sum(model(list(xb.as_subclass(Tensor)), tg).values())
            opt.zero_grad(); loss.backward(); opt.step()
            clock.n_img += len(xb)
            if clock.due() and clock.elapsed() < budget - 1: clock.score(evaluate, rows)
    clock.score(evaluate, rows)
    model.eval(); preds = []
    with torch.no_grad():
        for xb,*_ in vdl: preds += model(list(xb.as_subclass(Tensor)))
    for d,(w,h) in zip(preds, sizes): d['boxes'] = d['boxes'] * torch.tensor([w/size, h/size, w/size, h/size])
    return rows, preds, sum(p.numel() for p in model.parameters())

# --- Ultralytics YOLO11n ------------------------------------------------------------------------------------------
def yolo_layout(tr, va, root:Path)->Path:
    "The two splits in Ultralytics' layout (images linked, labels as txt, crowd boxes left out), and its data.yaml"
    classes = list(tr.classes)
    for split,recs in (('train', tr), ('val', va)):
        (root/'images'/split).mkdir(parents=True, exist_ok=True); (root/'labels'/split).mkdir(parents=True, exist_ok=True)
        for i,(f,an) in enumerate(zip(recs.fnames, recs.annots)):
            stem = f'{i:05d}'
            dst = root/'images'/split/f'{stem}{Path(f).suffix}'
            if not dst.exists(): os.symlink(Path(f).resolve(), dst)
            w,h = an.size
            lines = [f"{classes.index(l)} {(b[0]+b[2])/2/w:.6f} {(b[1]+b[3])/2/h:.6f} {(b[2]-b[0])/w:.6f} {(b[3]-b[1])/h:.6f}"
                     for b,l,c in zip(an.bbs, an.lbls, an.iscrowd) if not c and b[2] > b[0] and b[3] > b[1]]
            (root/'labels'/split/f'{stem}.txt').write_text(''.join(o + '\n' for o in lines))
    y = root/'data.yaml'
    y.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n" + ''.join(f"  {i}: {c}\n" for i,c in enumerate(classes)))
    return y

def yolo_offline(work:Path)->int:
    "Ultralytics set up to run offline with this process's torch threads (see the docstring); returns the thread count"
    import torch
    cfg = work/'yolo_config'; cfg.mkdir(parents=True, exist_ok=True)
    import matplotlib
    font = Path(matplotlib.get_data_path())/'fonts'/'ttf'/'DejaVuSans.ttf'
    shutil.copy(font, cfg/'Arial.ttf')                       # its dataset check asks for this font even with plots=False
    os.environ.update(YOLO_OFFLINE='1', YOLO_AUTOINSTALL='False', YOLO_CONFIG_DIR=str(cfg), YOLO_VERBOSE=os.environ.get('RACE_YOLO_VERBOSE', 'False'))
    n_threads = torch.get_num_threads()
    import ultralytics.utils, ultralytics.utils.torch_utils
    ultralytics.utils.NUM_THREADS = ultralytics.utils.torch_utils.NUM_THREADS = n_threads
    return n_threads

def run_yolo(tr, va, a, work:Path):
    import torch
    n_threads = yolo_offline(work)
    from ultralytics import YOLO
    data = yolo_layout(tr, va, work/'yolo_data')
    rows, clock = [], None
    sizes = img_sizes(va)
    def predict_with(model):
        y = YOLO('yolo11n.yaml', task='detect', verbose=False)
        y.model = copy.deepcopy(model).float().eval()
        t = time.perf_counter(); preds = []
        for r in y.predict([str(f) for f in va.fnames], imgsz=a.size, conf=0.001, iou=0.7, max_det=100, device='cpu',
                           batch=32, verbose=False, stream=True):
            b = r.boxes
            preds.append(dict(boxes=b.xyxy.cpu(), scores=b.conf.cpu(), labels=b.cls.cpu().long() + 1))
        return preds, len(preds)/(time.perf_counter() - t)
    def on_batch_end(trainer):
        nonlocal clock
        clock.n_img += trainer.batch_size
        if clock.due():
            def evaluate():
                preds, ips = predict_with(trainer.ema.ema)
                return score(preds, va, tr.classes), ips
            trainer.train_time_start += clock.score(evaluate, rows)      # its time= budget stops too
    def on_train_start(trainer):
        nonlocal clock
        clock = Clock(a.every*60)
        torch.set_num_threads(n_threads)
    model = YOLO('yolo11n.yaml', task='detect', verbose=False)
    model.add_callback('on_train_start', on_train_start)
    model.add_callback('on_train_batch_end', on_batch_end)
    final = {}
    def on_train_end(trainer): final['model'] = copy.deepcopy(trainer.ema.ema)
    def on_epoch_end(trainer):
        if trainer.stop or trainer.epoch + 1 >= trainer.epochs: final['t'] = clock.elapsed()
    model.add_callback('on_train_epoch_end', on_epoch_end)
    model.add_callback('on_train_end', on_train_end)
    model.train(data=str(data), epochs=100, time=a.budget/60, imgsz=a.size, batch=16, device='cpu', amp=False, plots=False,
                val=False, project=str(work/'yolo_runs'), name='race', exist_ok=True, seed=0, deterministic=False, verbose=False)
    el = final.get('t', clock.elapsed())
    preds, ips = predict_with(final['model'])
    m = score(preds, va, tr.classes)
    if rows and el/60 - rows[-1]['minutes'] < 0.05: rows.pop()          # a checkpoint scored in its last batches: the final row replaces it
    rows.append(dict(minutes=el/60, train_ips=clock.n_img/el, infer_ips=ips, **m))
    print(f"  {el/60:5.2f} min  map {m['map']:.3f}  map_50 {m['map_50']:.3f}  train {clock.n_img/el:5.1f} img/s  infer {ips:5.1f} img/s", flush=True)
    return rows, preds, sum(p.numel() for p in final['model'].parameters())

def coco_check(preds, va, vjson:Path)->dict:
    "pycocotools' mAP of `preds` against the source json, in the COCO results format (source image and category ids)"
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    res = []
    for d,an in zip(preds, va.annots):
        for b,s,l in zip(d['boxes'].tolist(), d['scores'].tolist(), d['labels'].tolist()):
            res.append(dict(image_id=an.image_id, category_id=va.cat_ids[va.classes[int(l)-1]], bbox=[b[0], b[1], b[2]-b[0], b[3]-b[1]], score=float(s)))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(vjson)); dt = gt.loadRes(res) if res else None
        if dt is None: return dict(map=0., map_50=0.)
        e = COCOeval(gt, dt, 'bbox'); e.evaluate(); e.accumulate(); e.summarize()
    return dict(map=float(e.stats[0]), map_50=float(e.stats[1]))

def one(a):
    "One contestant on one set, in this process: its rows as json on the last line"
    import torch
    torch.manual_seed(0)
    root = Path(a.work)
    tr, va, vjson = load_set(a.set, root)
    assert list(va.cat_ids) == list(tr.cat_ids)
    if a.one == 'ours': rows, preds, n = run_ours(tr, va, a, 'none')
    elif a.one == 'ours-shapes': rows, preds, n = run_ours(tr, va, a, 'shapes')
    elif a.one == 'ssdlite': rows, preds, n = run_ssdlite(tr, va, a)
    else: rows, preds, n = run_yolo(tr, va, a, root/f'{a.set}_{a.one}')
    chk = coco_check(preds, va, vjson)
    print(f"  pycocotools on the final predictions: map {chk['map']:.3f}  map_50 {chk['map_50']:.3f}", flush=True)
    print('RESULT ' + json.dumps(dict(rows=rows, params=n, pycocotools=chk)), flush=True)

def label(m):
    "The contestant's name in the table and the plot"
    if m.startswith('ssdlite-'):
        _,bs,lr = m.split('-', 2); bs,lr = bs[2:], lr[2:]     # 'ssdlite-bs8-lr1e-05' -> '8', '1e-05'
        return f"torchvision ssdlite320 (AdamW {lr}, bs {bs}, warmup + cosine)"
    return LABELS.get(m, m)

LABELS = {'ours': 'fastai_det (CLI recipe), from scratch', 'ours-shapes': 'fastai_det, from the shapes body (transfer)',
          'ssdlite': 'torchvision ssdlite320 (AdamW, warmup + cosine)', 'yolo11n': 'Ultralytics YOLO11n (yolo11n.yaml, time=)'}

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--budget', type=float, default=8., help='training minutes per contestant')
    p.add_argument('--every', type=float, default=2., help='minutes between scorings')
    p.add_argument('--size', type=int, default=128, help='input size of every contestant (a multiple of 32)')
    p.add_argument('--sets', default='shapes,foreign'); p.add_argument('--models', default=','.join(MODELS))
    p.add_argument('--ssdlite-bs', type=int, default=8); p.add_argument('--ssdlite-lr', type=float, default=1e-3)
    p.add_argument('--pct-start', type=float, default=None, help="ours: the one-cycle warm-up's share of the budget (default: what `train --time` uses)")
    p.add_argument('--out', default=str(HERE/'race')); p.add_argument('--work', default=None, help='folder for the data sets and runs (default: a temp folder)')
    p.add_argument('--report', action='store_true', help='race nothing: print the table and draw the plot of race.json')
    p.add_argument('--one', default=None, help=argparse.SUPPRESS); p.add_argument('--set', default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one: return one(a)
    work = Path(a.work or tempfile.mkdtemp(prefix='race_'))
    out = Path(a.out)
    if a.report and Path(f"{out}.log").is_file():      # an earlier report's block is replaced, the races' blocks are kept
        blocks = Path(f"{out}.log").read_text().split(f"\n{'='*40}\n")
        Path(f"{out}.log").write_text(f"\n{'='*40}\n".join(b for b in blocks if 'command: python bench/race.py --report' not in b))
    log = open(f"{out}.log", 'a')
    def say(s=''): print(s, flush=True); log.write(s + '\n'); log.flush()
    import torch
    if a.report: say(f"\n{'='*40}\nreport: the results in {out}.json, nothing raced; {time.strftime('%Y-%m-%d %H:%M')}")
    else: say(f"\n{'='*40}\nrace: {a.budget:g} training minutes per contestant, scored every {a.every:g}, {a.size} px, {torch.get_num_threads()} threads, "
        f"ssdlite bs {a.ssdlite_bs} lr {a.ssdlite_lr:g}; sets {a.sets}; {time.strftime('%Y-%m-%d %H:%M')}")
    say(f"command: {' '.join(['python'] + sys.argv)}")
    # results of earlier runs are kept: a run replaces only the (set, contestant) pairs it races
    res = json.loads(Path(f"{out}.json").read_text())['results'] if Path(f"{out}.json").is_file() else {}
    for s in ([] if a.report else a.sets.split(',')):
        for m in a.models.split(','):
            say(f"{s} / {m}")
            cmd = [sys.executable, __file__, '--one', m, '--set', s, '--work', str(work)] + \
                  [f"--{k}={v}" for k,v in dict(budget=a.budget, every=a.every, size=a.size, ssdlite_bs=a.ssdlite_bs, ssdlite_lr=a.ssdlite_lr).items()] + \
                  ([f"--pct-start={a.pct_start}"] if a.pct_start is not None else [])
            r = subprocess.run([c.replace('--ssdlite_', '--ssdlite-') for c in cmd], capture_output=True, text=True)
            lines = r.stdout.splitlines()
            for l in lines:
                if l.startswith('  '): say(l)
            got = [l for l in lines if l.startswith('RESULT ')]
            if r.returncode or not got:
                say(f"  failed ({r.returncode}): {(r.stderr or r.stdout)[-1500:]}"); continue
            key = f"ssdlite-bs{a.ssdlite_bs}-lr{a.ssdlite_lr:g}" if m == 'ssdlite' else m     # one row per screened setting
            res.setdefault(s, {})[key] = dict(json.loads(got[-1][7:]), settings=dict(budget=a.budget, every=a.every, size=a.size, ssdlite_bs=a.ssdlite_bs, ssdlite_lr=a.ssdlite_lr, date=time.strftime('%Y-%m-%d %H:%M')))
            Path(f"{out}.json").write_text(json.dumps(dict(settings={k:v for k,v in vars(a).items() if k not in ('one','set')}, results=res), indent=1))
    say(f"\nmAP / mAP@0.5 at each scoring (training minutes), evaluate_detections; pycocotools on the final predictions")
    for s,rs in res.items():
        say(f"\n{s}")
        for m,r in rs.items():
            rows = [x for x,nx in zip(r['rows'], r['rows'][1:] + [None]) if nx is None or nx['minutes'] - x['minutes'] > 0.2]   # the final scoring repeats a checkpoint reached at the budget's end
            cells = '  '.join(f"{x['minutes']:4.1f}: {x['map']:.3f}/{x['map_50']:.3f}" for x in rows)
            c = r['pycocotools']
            say(f"  {label(m):48s} {r['params']/1e6:4.1f}M  {cells}   pycocotools {c['map']:.3f}/{c['map_50']:.3f}"
                f"   train {r['rows'][-1]['train_ips']:5.1f} img/s  infer {r['rows'][-1]['infer_ips']:5.1f} img/s")
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig,axs = plt.subplots(1, len(res), figsize=(6*len(res), 4), squeeze=False)
    for ax,(s,rs) in zip(axs[0], res.items()):
        for m,r in rs.items(): ax.plot([0]+[x['minutes'] for x in r['rows']], [0]+[x['map_50'] for x in r['rows']], marker='o', label=label(m))
        ax.set_title(f"{s} ({a.size} px)"); ax.set_xlabel('training minutes (2 CPU cores)'); ax.set_ylabel('mAP@0.5 (valid)'); ax.grid(alpha=.3)
    h,l = axs[0,0].get_legend_handles_labels()
    fig.legend(h, l, loc='upper center', bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=8, frameon=False)   # under the panels: the curves stay visible
    fig.savefig(f"{out}.png", dpi=90, bbox_inches='tight')
    say(f"wrote {'' if a.report else f'{out}.json, '}{out}.log, {out}.png")

if __name__ == '__main__': main()
