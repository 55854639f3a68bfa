"""A COCO folder this project did not draw with `make_shapes`: other shapes, colours, backgrounds and image sizes,
grayscale and RGBA files, category ids with gaps (3, 7, 12, 44, 90), crowd boxes and empty images. The benches use it
to check that what holds on the embedded data holds on data of another hand.

    python bench/foreign.py /tmp/foreign            # writes train.json, valid.json and images/
"""
import json, math, sys
from pathlib import Path
import numpy as np
from PIL import Image, ImageDraw

CATS = {3: 'hexagon', 7: 'bar', 12: 'diamond', 44: 'disc', 90: 'arrow'}
SIZES = [(160, 120), (120, 160), (200, 150), (144, 144)]

def _poly(kind, cx, cy, r, ar, rng):
    if kind == 'hexagon': return [(cx + r*math.cos(a), cy + r*ar*math.sin(a)) for a in np.linspace(0, 2*math.pi, 7)[:-1]]
    if kind == 'bar': return [(cx-r, cy-r*ar*.35), (cx+r, cy-r*ar*.35), (cx+r, cy+r*ar*.35), (cx-r, cy+r*ar*.35)]
    if kind == 'diamond': return [(cx, cy-r*ar), (cx+r*.7, cy), (cx, cy+r*ar), (cx-r*.7, cy)]
    if kind == 'arrow': return [(cx-r, cy-r*ar*.25), (cx+r*.2, cy-r*ar*.25), (cx+r*.2, cy-r*ar*.6), (cx+r, cy),
                                (cx+r*.2, cy+r*ar*.6), (cx+r*.2, cy+r*ar*.25), (cx-r, cy+r*ar*.25)]
    raise ValueError(kind)

def draw(rng, w, h):
    "One image: a gradient background with speckle, 0-4 objects; returns (image, [(bbox xywh, cat id, crowd)])"
    g = np.linspace(0, 1, w)[None,:,None] * rng.uniform(-80, 80, 3) + rng.uniform(60, 190, 3)
    a = (g + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(a); d = ImageDraw.Draw(img)
    anns = []
    for _ in range(0 if rng.random() < .08 else int(rng.integers(1, 5))):
        cid = int(rng.choice(list(CATS))); kind = CATS[cid]
        r = min(w, h) * rng.uniform(.08, .3); ar = math.exp(rng.uniform(-.3, .3))
        cx, cy = rng.uniform(r, w-r), rng.uniform(r*ar, h-r*ar)
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        if kind == 'disc': pts = [(cx-r, cy-r*ar), (cx+r, cy+r*ar)]; d.ellipse(pts, fill=col)
        else: pts = _poly(kind, cx, cy, r, ar, rng); d.polygon(pts, fill=col)
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x1, y1, x2, y2 = max(0, min(xs)), max(0, min(ys)), min(w, max(xs)), min(h, max(ys))
        anns.append(([round(x1, 1), round(y1, 1), round(x2-x1, 1), round(y2-y1, 1)], cid, int(rng.random() < .03)))
    return img, anns

def make_foreign(path, n_train=1200, n_valid=200, seed=7)->Path:
    "Write the foreign set to `path` (reused when its meta.json matches) and return `path`"
    path = Path(path); meta = dict(n_train=n_train, n_valid=n_valid, seed=seed, v=1)
    if (path/'meta.json').is_file() and json.loads((path/'meta.json').read_text()) == meta: return path
    (path/'images').mkdir(parents=True, exist_ok=True)
    aid = 0
    for si, (split, n) in enumerate([('train', n_train), ('valid', n_valid)]):
        imgs, anns = [], []
        for i in range(n):
            rng = np.random.default_rng([seed, si, i])
            w, h = SIZES[int(rng.integers(len(SIZES)))]
            img, objs = draw(rng, w, h)
            iid = 1000*si + 3*i + 5                                              # ids with gaps, not positions
            mode = rng.choice(['RGB', 'RGB', 'RGB', 'L', 'RGBA'])
            fn = f"{split}_{i:05d}.{'png' if mode == 'RGBA' else 'jpg'}"
            img.convert(mode).save(path/'images'/fn)
            imgs.append(dict(id=iid, file_name=f'images/{fn}', width=w, height=h))
            for b, cid, crowd in objs:
                aid += 1; anns.append(dict(id=aid, image_id=iid, category_id=cid, bbox=b, area=b[2]*b[3], iscrowd=crowd))
        (path/f'{split}.json').write_text(json.dumps(dict(images=imgs, annotations=anns,
                                          categories=[dict(id=k, name=v) for k, v in CATS.items()])))
    (path/'meta.json').write_text(json.dumps(meta))
    return path

if __name__ == '__main__': print(make_foreign(sys.argv[1] if len(sys.argv) > 1 else '/tmp/foreign'))
