"`wsss-nb prepare`: SBD .mat -> voc12_aug masks + train_aug.txt, COCO instances JSON -> coco14 masks + lists."
import argparse, json, sys
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
from wsss_nb.core import ConfigError, DataError, save_text
from wsss_nb.data import IGNORE, VOC_PALETTE, get_dataset, load_mask, read_split, save_mask
from wsss_nb.prepare import (COCO_CATEGORY_IDS, add_prepare_parser, coco_category_map, load_sbd_mask, prepare_coco14,
                             prepare_voc12_aug, render_coco_mask, run_prepare)

savemat = pytest.importorskip('scipy.io').savemat
H, W = 20, 28

def _jpeg(path, h=H, w=W):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)

def _box(c, y0, y1, x0, x1, border=False):
    m = np.zeros((H, W), np.uint8)
    if border: m[y0 - 1:y1 + 1, x0 - 1:x1 + 1] = IGNORE
    m[y0:y1, x0:x1] = c
    return m

# ---------------------------------------------------------------- voc12_aug
# VOC: train a, b; val c (all with VOC masks, 255 border). SBD: train b, d; val c, e (no border).
VOC_MASKS = dict(a=_box(1, 3, 9, 3, 9, True), b=_box(15, 4, 12, 4, 14, True), c=_box(7, 2, 8, 10, 20, True))
SBD_MASKS = dict(b=_box(2, 0, 5, 0, 5), c=_box(3, 5, 15, 5, 15), d=_box(12, 6, 18, 2, 26), e=_box(20, 1, 4, 1, 4))

@pytest.fixture
def voc_sbd(tmp_path):
    voc, sbd = tmp_path/'VOC2012', tmp_path/'benchmark_RELEASE'/'dataset'
    for i in 'abcde': _jpeg(voc/'JPEGImages'/f'{i}.jpg')
    _jpeg(voc/'JPEGImages'/'unrelated.jpg')
    for i, m in VOC_MASKS.items(): save_mask(m, voc/'SegmentationClass'/f'{i}.png')
    save_text('a\nb\n', voc/'ImageSets/Segmentation/train.txt'); save_text('c\n', voc/'ImageSets/Segmentation/val.txt')
    (sbd/'cls').mkdir(parents=True)
    for i, m in SBD_MASKS.items():
        savemat(sbd/'cls'/f'{i}.mat', {'GTcls': {'Segmentation': m, 'Boundaries': np.zeros(1), 'CategoriesPresent': np.unique(m)[1:]}})
    save_text('b\nd\n', sbd/'train.txt'); save_text('c\ne\n', sbd/'val.txt')
    return voc, sbd

def test_voc12_aug_layout_and_precedence(voc_sbd):
    voc, sbd = voc_sbd
    s = prepare_voc12_aug(sbd.parent, voc, progress=False)
    assert (s['train_aug'], s['masks'], s['from_voc'], s['from_sbd']) == (4, 5, 3, 2)
    assert read_split(voc, 'train_aug') == ['a', 'b', 'd', 'e']          # SBD train+val + VOC train - VOC val
    assert sorted(p.name for p in (voc/'SegmentationClassAug').iterdir()) == [f'{i}.png' for i in 'abcde']
    for i in 'abc': np.testing.assert_array_equal(load_mask(voc/'SegmentationClassAug'/f'{i}.png'), VOC_MASKS[i])
    for i in 'de': np.testing.assert_array_equal(load_mask(voc/'SegmentationClassAug'/f'{i}.png'), SBD_MASKS[i])
    im = Image.open(voc/'SegmentationClassAug'/'d.png')                # a VOC-palette PNG, as save_mask writes
    assert im.mode == 'P' and np.array_equal(np.array(im.getpalette()[:768]).reshape(-1, 3), VOC_PALETTE)
    ds = get_dataset('voc12_aug', voc, 'train_aug')
    assert [np.flatnonzero(ds.labels[i]).tolist() for i in ds.ids] == [[0], [14], [11], [19]]
    assert len(get_dataset('voc12_aug', voc, 'val')) == 1                # val masks are in SegmentationClassAug too
    assert read_split(voc, 'train') == ['a', 'b'] and read_split(voc, 'val') == ['c']   # VOC's own lists untouched

def test_voc12_aug_sbd_folder_forms_and_lists(voc_sbd, tmp_path):
    voc, sbd = voc_sbd
    prepare_voc12_aug(sbd, voc, progress=False)                         # benchmark_RELEASE/dataset works too
    (sbd/'train.txt').unlink(); (sbd/'val.txt').unlink()                # no lists: every cls/*.mat
    prepare_voc12_aug(sbd.parent, voc, overwrite=True, progress=False)
    assert read_split(voc, 'train_aug') == ['a', 'b', 'd', 'e']
    save_text('b\n', sbd/'train.txt')                                   # one list without the other
    with pytest.raises(DataError, match=r'val\.txt not found'): prepare_voc12_aug(sbd, voc, overwrite=True, progress=False)
    save_text('c\ne\nf\n', sbd/'val.txt')                               # a listed id without its .mat
    with pytest.raises(DataError, match=r'cls/f\.mat'): prepare_voc12_aug(sbd, voc, overwrite=True, progress=False)
    with pytest.raises(DataError, match='has no cls/ folder'): prepare_voc12_aug(tmp_path/'nothing', voc, progress=False)

def test_voc12_aug_refuses_to_replace_and_drops_stale_label_cache(voc_sbd):
    voc, sbd = voc_sbd
    prepare_voc12_aug(sbd, voc, progress=False)
    get_dataset('voc12_aug', voc, 'train_aug')                         # writes the label cache
    cache = voc/'cls_labels_SegmentationClassAug.json'
    assert cache.is_file()
    with pytest.raises(ConfigError, match='--overwrite'): prepare_voc12_aug(sbd, voc, progress=False)
    savemat(sbd/'cls'/'d.mat', {'GTcls': {'Segmentation': _box(5, 6, 18, 2, 26)}})   # the SBD mask of d changes
    prepare_voc12_aug(sbd, voc, overwrite=True, progress=False)
    ds = get_dataset('voc12_aug', voc, 'train_aug')
    assert np.flatnonzero(ds.labels['d']).tolist() == [4]             # not the cached [11]

@pytest.mark.parametrize('what', ['no_jpeg', 'no_voc_mask', 'no_val_list', 'no_root'])
def test_voc12_aug_checks_before_writing(voc_sbd, what):
    voc, sbd = voc_sbd
    if what == 'no_jpeg': (voc/'JPEGImages'/'e.jpg').unlink(); expect = r'JPEGImages/e\.jpg'
    if what == 'no_voc_mask': (voc/'SegmentationClass'/'c.png').unlink(); expect = r'SegmentationClass/c\.png'
    if what == 'no_val_list': (voc/'ImageSets/Segmentation/val.txt').unlink(); expect = r'val\.txt'
    if what == 'no_root': voc = voc.parent/'VOC2013'; expect = 'VOC2013'
    with pytest.raises(DataError, match=expect): prepare_voc12_aug(sbd, voc, progress=False)
    assert not (voc/'SegmentationClassAug').exists() and not (voc/'ImageSets/Segmentation/train_aug.txt').exists()

@pytest.mark.parametrize('content,expect', [
    ({'GTinst': {'Segmentation': SBD_MASKS['d']}}, 'has no GTcls.Segmentation'),
    ({'GTcls': {'Boundaries': np.zeros(3)}}, 'has no GTcls.Segmentation'),
    ({'GTcls': {'Segmentation': SBD_MASKS['d'] + 30}}, 'holds value 30'),
    ({'GTcls': {'Segmentation': np.zeros((H, W, 2), np.uint8)}}, 'shape'),
    ({'GTcls': {'Segmentation': np.zeros((H + 1, W), np.uint8)}}, r'mask size .* expected \(20, 28\)'),
    (b'not a mat file', 'Cannot read'),
])
def test_voc12_aug_bad_mat_names_the_file_and_leaves_no_list(voc_sbd, content, expect):
    voc, sbd = voc_sbd
    if isinstance(content, bytes): (sbd/'cls'/'d.mat').write_bytes(content)
    else: savemat(sbd/'cls'/'d.mat', content)
    with pytest.raises(DataError, match=expect) as e: prepare_voc12_aug(sbd, voc, progress=False)
    assert 'd.mat' in str(e.value)
    assert not (voc/'ImageSets/Segmentation/train_aug.txt').exists()  # the split is never half-announced
    assert not list((voc/'SegmentationClassAug').glob('.*tmp'))         # no temporary files left behind

def test_load_sbd_mask_float_and_missing_scipy(tmp_path, monkeypatch):
    savemat(tmp_path/'f.mat', {'GTcls': {'Segmentation': SBD_MASKS['e'].astype(np.float64)}})
    m = load_sbd_mask(tmp_path/'f.mat')
    assert m.dtype == np.uint8 and np.array_equal(m, SBD_MASKS['e'])
    savemat(tmp_path/'h.mat', {'GTcls': {'Segmentation': SBD_MASKS['e'] + 0.5}})
    with pytest.raises(DataError, match='holds value'): load_sbd_mask(tmp_path/'h.mat')
    monkeypatch.setitem(sys.modules, 'scipy.io', None)
    with pytest.raises(ConfigError, match='pip install scipy'): load_sbd_mask(tmp_path/'f.mat')

# ---------------------------------------------------------------- coco14
def _poly(x0, y0, x1, y1): return [[x0, y0, x1, y0, x1, y1, x0, y1]]

def _rle(b):
    "Uncompressed COCO RLE of a binary mask: run lengths over the column-major pixels, zeros first."
    flat = np.asarray(b, np.uint8).reshape(-1, order='F')
    counts = np.diff(np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size]).tolist()
    return {'size': list(b.shape), 'counts': ([0] if flat[0] else []) + counts}

def _crowd_box(y0, y1, x0, x1, h=12, w=16):
    b = np.zeros((h, w), bool); b[y0:y1, x0:x1] = True; return b

CATS = [dict(id=1, name='person'), dict(id=3, name='car'), dict(id=62, name='chair'), dict(id=90, name='toothbrush')]

def _coco_json(split='train', ids=(9, 25, 30, 42, 51)):
    "5 images: 9 = person + toothbrush on it + crowd; 25 = car + compressed-RLE chair + crowd; 30 = nothing; 42 = only a crowd; 51 = only a degenerate polygon."
    from pycocotools import mask as mu
    ims = [dict(id=k, file_name=f'COCO_{split}2014_{k:012d}.jpg', height=12, width=16) for k in ids]
    chair = mu.encode(np.asfortranarray(_crowd_box(8, 12, 0, 4).astype(np.uint8)))
    anns = [dict(id=1, image_id=9, category_id=90, iscrowd=0, segmentation=_poly(4, 4, 6, 6)),    # small, listed first
            dict(id=2, image_id=9, category_id=1, iscrowd=0, segmentation=_poly(2, 2, 10, 10)),
            dict(id=3, image_id=9, category_id=1, iscrowd=1, segmentation=_rle(_crowd_box(0, 12, 8, 16))),
            dict(id=4, image_id=25, category_id=3, iscrowd=0, segmentation=_poly(0, 0, 5, 5) + _poly(10, 0, 12, 2)),
            dict(id=5, image_id=25, category_id=62, iscrowd=0, segmentation=dict(chair, counts=chair['counts'].decode())),
            dict(id=6, image_id=25, category_id=1, iscrowd=1, segmentation=_rle(_crowd_box(6, 12, 6, 16))),
            dict(id=7, image_id=42, category_id=1, iscrowd=1, segmentation=_rle(_crowd_box(0, 4, 0, 4))),
            dict(id=8, image_id=51, category_id=3, iscrowd=0, segmentation=[[1, 1, 3, 3]])]
    return dict(images=ims, annotations=[a for a in anns if a['image_id'] in ids], categories=CATS)

@pytest.fixture
def coco(tmp_path):
    pytest.importorskip('pycocotools')
    (tmp_path/'annotations').mkdir()
    for split in ('train', 'val'):
        d = _coco_json(split) if split == 'train' else _coco_json(split, ids=(9, 30))
        (tmp_path/'annotations'/f'instances_{split}2014.json').write_text(json.dumps(d))
        for im in d['images']: _jpeg(tmp_path/f'{split}2014'/im['file_name'], 12, 16)
    return tmp_path

def test_coco_category_order():
    cm = coco_category_map()
    assert len(COCO_CATEGORY_IDS) == 80 and COCO_CATEGORY_IDS == sorted(COCO_CATEGORY_IDS)
    assert list(cm.values()) == list(range(1, 81)) and (cm[1], cm[3], cm[62], cm[90]) == (1, 3, 57, 80)

def test_coco14_masks_lists_and_dataset(coco):
    from pycocotools.coco import COCO
    ann = coco/'annotations'/'instances_train2014.json'
    s = prepare_coco14(ann, coco/'COCO2014', image_dirs=coco/'train2014', progress=False)
    assert s['train'] == dict(images=5, listed=2, without_objects=3, with_crowd=2, linked=2)
    root = coco/'COCO2014'
    assert read_split(root, 'train') == ['COCO_train2014_000000000009', 'COCO_train2014_000000000025']
    assert sorted(p.stem for p in (root/'SegmentationClass').iterdir()) == read_split(root, 'train')   # no mask for left-out images
    # oracle: pycocotools' own COCO API rasterises each annotation
    api = COCO(str(ann))
    obj = {a['id']: api.annToMask(a).astype(bool) for a in api.loadAnns(api.getAnnIds()) if a['id'] != 8}   # 8: pycocotools reads a 4-number polygon as a box
    m9 = load_mask(root/'SegmentationClass'/'COCO_train2014_000000000009.png')
    exp = np.zeros((12, 16), np.uint8)
    exp[obj[3]] = IGNORE; exp[obj[2]] = 1; exp[obj[1]] = 80           # crowd under objects, small object on top
    np.testing.assert_array_equal(m9, exp)
    m25 = load_mask(root/'SegmentationClass'/'COCO_train2014_000000000025.png')
    exp = np.zeros((12, 16), np.uint8); exp[obj[6]] = IGNORE; exp[obj[4]] = 3; exp[obj[5]] = 57
    np.testing.assert_array_equal(m25, exp)
    assert obj[4][1, 11] and m25[1, 11] == 3                            # the second polygon of a multi-part object
    assert (root/'JPEGImages'/'COCO_train2014_000000000009.jpg').is_symlink()
    ds = get_dataset('coco14', root, 'train')
    assert [np.flatnonzero(ds.labels[i]).tolist() for i in ds.ids] == [[0, 79], [2, 56]]
    assert ds[0]['image'].shape == (3, 12, 16)

def test_render_coco_mask_order_independent():
    pytest.importorskip('pycocotools')
    anns = _coco_json()['annotations'][:3]
    a, b = render_coco_mask(anns, 12, 16), render_coco_mask(anns[::-1], 12, 16)
    np.testing.assert_array_equal(a, b)
    assert a[5, 5] == 80 and a[3, 3] == 1 and a[1, 12] == IGNORE and a[1, 1] == 0

def test_coco14_two_splits_images_in_place_and_overwrite(coco):
    root = coco/'COCO2014'
    for split in ('train', 'val'):                                      # images already in JPEGImages: no image_dirs needed
        for p in (coco/f'{split}2014').iterdir(): _jpeg(root/'JPEGImages'/p.name, 12, 16)
    s = prepare_coco14([coco/'annotations'/'instances_train2014.json', coco/'annotations'/'instances_val2014.json'], root, progress=False)
    assert (s['train']['listed'], s['val']['listed'], s['val']['linked']) == (2, 1, 0)
    assert read_split(root, 'val') == ['COCO_val2014_000000000009']
    get_dataset('coco14', root, 'val')
    assert (root/'cls_labels_SegmentationClass.json').is_file()
    with pytest.raises(ConfigError, match=r'val\.txt already exists'):
        prepare_coco14({'val': coco/'annotations'/'instances_val2014.json'}, root, progress=False)
    prepare_coco14({'val': coco/'annotations'/'instances_val2014.json'}, root, overwrite=True, progress=False)
    assert not (root/'cls_labels_SegmentationClass.json').exists()     # stale label cache dropped

def _edit(d, what):
    if what == 'no_annotations': del d['annotations']
    if what == 'unknown_category': d['categories'].append(dict(id=12, name='street sign'))
    if what == 'renamed_category': d['categories'][1]['name'] = 'automobile'
    if what == 'ann_without_image': d['annotations'][0]['image_id'] = 999
    if what == 'ann_bad_category': d['annotations'][0]['category_id'] = 91
    if what == 'image_without_size': del d['images'][0]['height']
    return d

@pytest.mark.parametrize('what,expect', [('corrupt', 'Corrupt JSON'), ('no_annotations', "'annotations'"),
    ('unknown_category', 'category id 12'), ('renamed_category', "'automobile'.*'car'"),
    ('ann_without_image', 'image_id 999'), ('ann_bad_category', 'category_id 91'), ('image_without_size', 'height')])
def test_coco14_bad_json_names_the_file_writes_nothing(coco, what, expect):
    ann = coco/'annotations'/'instances_train2014.json'
    if what == 'corrupt': ann.write_text('{"images": [')
    else: ann.write_text(json.dumps(_edit(json.loads(ann.read_text()), what)))
    with pytest.raises(DataError, match=expect) as e: prepare_coco14(ann, coco/'COCO2014', image_dirs=coco/'train2014', progress=False)
    assert 'instances_train2014.json' in str(e.value)
    assert not (coco/'COCO2014').exists()

def test_coco14_bad_rle_names_annotation_and_leaves_no_list(coco):
    ann = coco/'annotations'/'instances_train2014.json'
    d = json.loads(ann.read_text()); d['annotations'][5]['segmentation']['size'] = [5, 5]
    ann.write_text(json.dumps(d))
    with pytest.raises(DataError, match=r'instances_train2014\.json: annotation 6: RLE size'):
        prepare_coco14(ann, coco/'COCO2014', image_dirs=coco/'train2014', progress=False)
    assert not (coco/'COCO2014'/'ImageSets').exists()

def test_coco14_arguments_checked_up_front(coco, monkeypatch):
    ann = coco/'annotations'/'instances_train2014.json'
    out = coco/'COCO2014'
    (coco/'instances.json').write_text(ann.read_text())
    with pytest.raises(ConfigError, match=r'instances_<split>2014\.json'): prepare_coco14(coco/'instances.json', out)
    with pytest.raises(ConfigError, match="Two annotation files for split 'train'"): prepare_coco14([ann, ann], out)
    with pytest.raises(DataError, match=r'instances_val2014\.json'):
        prepare_coco14(coco/'elsewhere'/'instances_val2014.json', out)
    with pytest.raises(DataError, match='Image folder not found'): prepare_coco14(ann, out, image_dirs=coco/'train2015')
    with pytest.raises(DataError, match=r'COCO_train2014_000000000009\.jpg .*3 of 3'): prepare_coco14(ann, out, progress=False)
    assert not out.exists()
    monkeypatch.setitem(sys.modules, 'pycocotools', None)
    with pytest.raises(ConfigError, match='pip install pycocotools'): prepare_coco14(ann, out, image_dirs=coco/'train2014')

# ---------------------------------------------------------------- CLI
def test_cli_prepare_both(voc_sbd, coco, capsys):
    voc, sbd = voc_sbd
    p = argparse.ArgumentParser(prog='wsss-nb'); add_prepare_parser(p.add_subparsers(dest='cmd', required=True))
    a = p.parse_args(['prepare', 'voc12_aug', '--sbd', str(sbd.parent), '--root', str(voc), '--quiet'])
    assert a.cmd == 'prepare' and run_prepare(a)['train_aug'] == 4
    a = p.parse_args(['prepare', 'coco14', '--annotations', str(coco/'annotations'/'instances_train2014.json'),
                      str(coco/'annotations'/'instances_val2014.json'), '--images', str(coco/'train2014'),
                      str(coco/'val2014'), '--root', str(coco/'COCO2014'), '--quiet'])
    s = run_prepare(a)
    assert (s['train']['listed'], s['val']['listed']) == (2, 1)
    out = capsys.readouterr().out
    assert 'train_aug.txt lists 4 ids' in out and '2 of 5 images listed' in out and '1 of 2 images listed' in out
    with pytest.raises(SystemExit): p.parse_args(['prepare', 'voc12_aug'])                 # --sbd is required
    with pytest.raises(SystemExit): p.parse_args(['prepare', 'coco'])
