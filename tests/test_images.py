"Images as a person sees them, everywhere: EXIF orientation and 16-bit pixels in training batches and in predict"
import json
import numpy as np
import torch
from PIL import Image
from fastai_det.data import read_coco, det_dls, load_image, batch_images, unscale_boxes, DetImage

def _phone_photo(fn, w=120, h=80, box=(20, 10, 60, 40)):
    "A photo as a phone stores it: pixels turned 90 degrees, EXIF orientation 6 saying 'rotate to view'; red square at `box` as viewed"
    a = np.full((h, w, 3), 40, np.uint8); x1,y1,x2,y2 = box; a[y1:y2, x1:x2] = (255, 0, 0)
    stored = Image.fromarray(a).transpose(Image.Transpose.ROTATE_90)          # what the sensor wrote
    ex = stored.getexif(); ex[0x0112] = 6
    stored.save(fn, exif=ex.tobytes(), quality=95)
    return box

def test_exif_photo_boxes_land_on_the_object(tmp_path):
    box = _phone_photo(tmp_path/'p.jpg')
    x1,y1,x2,y2 = box
    coco = dict(images=[dict(id=i, file_name='p.jpg', width=120, height=80) for i in (1, 2)],
                categories=[dict(id=3, name='square')],
                annotations=[dict(id=i, image_id=i, category_id=3, bbox=[x1, y1, x2-x1, y2-y1], area=1200, iscrowd=0) for i in (1, 2)])
    (tmp_path/'a.json').write_text(json.dumps(coco))
    recs = read_coco(tmp_path/'a.json')
    dls = det_dls(recs, recs, 'boxes', size=64, bs=2, aug=False, show_progress=False)
    xb,bb,lb = dls.valid.one_batch()
    img = batch_images(dls.valid, xb)[0]                                         # (64,64,3)
    red = (img[...,0] > .6) & (img[...,1] < .3)
    px = unscale_boxes(bb[0,0], (64, 64)).round().long()
    inside = red[px[1]:px[3], px[0]:px[2]].float().mean()
    assert red.float().sum() > 50 and inside > .9 and red.float().sum() <= (px[2]-px[0])*(px[3]-px[1]) + 30
    assert DetImage.create(tmp_path/'p.jpg').size == (120, 80)
    # what `predict`/`predict_batch` (and so `eval`) feed the model: a test batch of the file, upright as a person sees it
    tb, = dls.test_dl([DetImage.create(tmp_path/'p.jpg')]).one_batch()[:1]
    timg = batch_images(dls.valid, tb)[0]
    tred = (timg[...,0] > .6) & (timg[...,1] < .3)
    assert tred.float().sum() > 50 and tred[px[1]:px[3], px[0]:px[2]].float().mean() > .9

def test_16bit_png_is_scaled_not_clipped(tmp_path):
    Image.fromarray(np.full((10, 10), 30000, np.uint16)).save(tmp_path/'d.png')
    v = np.asarray(load_image(tmp_path/'d.png'))
    assert v.shape == (10, 10, 3) and abs(int(v[0,0,0]) - round(30000/65535*255)) <= 1

def test_other_pixel_modes_are_scaled(tmp_path):
    "Big-endian 16-bit TIFF, 32-bit integer and float TIFFs, and palette/CMYK/LA files all reach the model as 8-bit RGB, scaled"
    cases = []
    be = Image.new('I;16B', (8, 8)); be.frombytes(np.full((8, 8), 30000, '>u2').tobytes())
    cases.append(('be.tif', be, round(30000/65535*255)))
    cases.append(('i32.tif', Image.fromarray(np.full((8, 8), 30000, np.int32)), round(30000/65535*255)))    # mode I holding 16-bit values
    cases.append(('i8.tif', Image.fromarray(np.full((8, 8), 100, np.int32)), 100))                          # mode I holding 8-bit values
    cases.append(('f.tif', Image.fromarray(np.full((8, 8), .5, np.float32)), 128))                           # mode F in [0,1]
    cases.append(('p.png', Image.fromarray(np.full((8, 8), 77, np.uint8)).convert('P'), 77))
    cases.append(('cmyk.jpg', Image.fromarray(np.full((8, 8, 3), 77, np.uint8)).convert('CMYK'), 77))
    cases.append(('la.png', Image.fromarray(np.full((8, 8), 77, np.uint8)).convert('LA'), 77))
    for name, im, want in cases:
        im.save(tmp_path/name)
        assert Image.open(tmp_path/name).mode == im.mode, (name, Image.open(tmp_path/name).mode)   # the file really holds that mode
        v = np.asarray(load_image(tmp_path/name))
        assert v.shape == (8, 8, 3) and v.dtype == np.uint8 and abs(int(v[0,0,0]) - want) <= 2, (name, v[0,0])
