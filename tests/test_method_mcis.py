"MCIS through the stages (pair training, co-attention CAM recipe, saliency pseudo-labels) and the quirk flags of the released code."
import numpy as np
import pytest, yaml
from conftest import ROOT, assert_cam_files, assert_label_files, faithful_and_fixed
from wsss_nb.core import load_json
from wsss_nb.cam import get_method
from wsss_nb.data import get_dataset
from wsss_nb.stages import train_classifier, make_cams, make_pseudo_labels

def test_mcis_pipeline(smoke_data, tmp_path):
    common = dict(run='mcis', out_root=tmp_path, dataset='synthetic', data_root=smoke_data, split='train',
                  device='cpu', max_images=8, progress=False)
    cls = train_classifier(**common, method='mcis', method_args=dict(extra_channels=32, extra_bn=True), backbone='efficientnet_lite0',
                           pretrained=None, epochs=3, batch_size=2, crop_size=48, amp=False)
    hist = load_json(cls.path/'history.json')
    assert len(hist) == 3 * (8 // 2)
    assert all(np.isfinite(h[k]) for h in hist for k in ('loss', 'single', 'co', 'contrast', 'self_pairs'))
    per_epoch = len(hist) // 3          # 3 epochs: the contrastive start is min(2, 3 // 2) = 1
    assert all(h['contrast'] == 0 for h in hist[:per_epoch])
    assert any(h['contrast'] > 0 for h in hist[per_epoch:])
    assert all(h['self_pairs'] > 0 for h in hist)
    ckpt_meta = load_json(cls.path/'_params.json')['params']['method_args']
    assert ckpt_meta['extra_bn'] is True

    cams = make_cams(**common, scales=[1.0], amp=False)
    ds = get_dataset('synthetic', smoke_data, 'train'); ds.ids = ds.ids[:8]
    assert_cam_files(cams.path, ds)

    pseudo = make_pseudo_labels(**common, refiner='saliency', refiner_args={'variant': 'mcis'}, bg_threshold=0.3)
    assert_label_files(pseudo.path/'labels', ds)

def test_mcis_method_args():
    m = get_method('mcis', lr_steps=[5/11, 10/11], infer_size=256)
    assert m.lr_milestones(11) == [5, 10] and m.infer_size == 256
    with pytest.raises(ValueError, match='Valid names'): get_method('mcis', contrast_start=2)

# --- quirk flags of the released code (GuoleiSun/MCIS_wsss), each pinned on a tiny case --------------------------------
import torch
import torch.nn.functional as F
from PIL import Image
from wsss_nb.core import ConfigError
from wsss_nb.data import SegTransform, load_image, normalize
from wsss_nb.methods.mcis import (COPY_KEYS, PairBatchSampler, finish_maps, original_copies, resize_uint8)
from wsss_nb.stages import collate

def _pil(raw, h, w): return normalize(np.array(Image.fromarray(raw).resize((w, h), Image.BILINEAR)))

def test_original_copies_are_real_resizes_of_the_image():
    "copies_from: original = Classifier/utils/LoadData.py: Resize(256)+flip, Resize(192), Resize(512) of the image (PIL bilinear)."
    raw = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    x, (flip, small, large) = original_copies(raw, (16, 16))
    assert torch.equal(x, _pil(raw, 16, 16)) and torch.equal(flip, x.flip(-1))
    assert torch.equal(small, _pil(raw, 12, 12))                       # int(16*0.75) = 12, from the image, not from x
    assert torch.equal(large, _pil(raw, 32, 32))                       # the 2x copy is a direct 2x resize of the image ...
    up = F.interpolate(x[None], size=(32, 32), mode='bilinear', align_corners=False)[0]
    assert (large - up).abs().max() > 0.5                              # ... not the 16-px input upsampled ('batch' copies)
    assert np.array_equal(resize_uint8(raw, (37, 53)), raw)            # same size: untouched

def test_training_copies_are_unjittered(smoke_data):
    "In training the exemplar is jittered, its copies are not (the original applies ColorJitter in tsfm_train only)."
    ds = get_dataset('synthetic', smoke_data, 'train', with_mask=False,
                     transform=SegTransform(crop_size=24, resize=(24, 24), jitter=0.3))
    m = get_method('mcis', copies_from='original')
    batch = next(iter(m.train_loader(ds, 2, seed=0, collate_fn=collate)))
    raw = load_image(ds.image_path(batch['id'][0]))
    assert torch.equal(batch['copy_flip'][0], _pil(raw, 24, 24).flip(-1))
    assert torch.equal(batch['copy_small'][0], _pil(raw, 18, 18))
    assert torch.equal(batch['copy_large'][0], _pil(raw, 48, 48))
    assert not torch.equal(batch['image'][0], _pil(raw, 24, 24))       # the exemplar itself is jittered
    assert set(COPY_KEYS) <= set(batch) and not set(COPY_KEYS) & set(next(iter(get_method('mcis').train_loader(ds, 2, collate_fn=collate))))
    ds.transform = SegTransform(crop_size=16, resize=(24, 24))          # crops: the copies would not show the exemplar's view
    with pytest.raises(ConfigError, match='cls_crop_size'): m.train_loader(ds, 2)
    with pytest.raises(ConfigError, match='MCIS.train_loader'):
        m.loss(m.build_model(_Tiny(), ds.num_classes - 1), {k: batch[k] for k in ('image', 'image2', 'label', 'label2')})

class _Tiny(torch.nn.Module):
    out_channels, output_stride = 8, 2
    def __init__(self): super().__init__(); self.c = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
    def forward(self, x): return torch.relu(self.c(x))

def test_infer_copies_from_the_image():
    "At test time too (test_data_loader): input, partners and copies are PIL resizes of the image, not of a resized tensor."
    raw = np.random.default_rng(1).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    image = normalize(raw)
    orig, batch = get_method('mcis', copies_from='original', infer_size=16), get_method('mcis', infer_size=16)
    x = orig._prep(image, 'cpu')
    assert torch.equal(x[0], _pil(raw, 16, 16))
    views = orig._views(image, x, 'cpu')
    assert torch.equal(views[2][0], _pil(raw, 32, 32)) and torch.equal(views[1][0], _pil(raw, 12, 12))
    xb = batch._prep(image, 'cpu')
    assert not torch.equal(batch._views(image, xb, 'cpu')[2][0], views[2][0])
    torch.manual_seed(0)
    net = orig.build_model(_Tiny(), 3).eval()
    ds = [dict(image=image, label=torch.tensor([1., 0, 0]))]
    from wsss_nb.cam import MethodContext
    ctx = MethodContext(dataset=ds, index=0)
    assert orig.infer(net, image, ctx).shape == (3, 30, 41)

def test_partner_may_be_self():
    "The original draws the partner from all images of the class, the exemplar included (random.choice / random.choices)."
    labels = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 1], [0, 1]], np.float32)
    pairs = lambda allow: [p for e in range(200) for p in PairBatchSampler(labels, 2, seed=0, allow_self=allow).pairs(e)]
    same = np.mean([m == n for m, n in pairs(True) if m < 2])            # class 0 has 2 images: itself with p = 1/2
    assert abs(same - 0.5) < 0.05
    assert abs(np.mean([m == n for m, n in pairs(True) if m >= 2]) - 0.25) < 0.05   # class 1 has 4 images: p = 1/4
    assert not any(m == n for m, n in pairs(False))
    from wsss_nb.cam import MethodContext
    ds = [dict(image=torch.zeros(3, 4, 4), label=torch.from_numpy(l)) for l in labels]
    for allow, expect in ((True, True), (False, False)):
        m = get_method('mcis', partner_may_be_self=allow, n_partners=40); m._bind(ds)
        assert (0 in m._partners(MethodContext(dataset=ds), 0, 0)) == expect

def test_uint8_maps():
    "uint8_maps: test.py's aggregate casts 255*map to uint8 (truncation), cv2.resize rounds and saturates."
    agg = torch.tensor([[[0.5, 1.0], [0.2, 0.0]]])
    assert finish_maps(agg, (2, 2), uint8=True).tolist() == [[[127., 255.], [51., 0.]]]   # 127.5 -> 127, 51.0 -> 51
    assert torch.equal(finish_maps(agg, (2, 2)), agg)
    big = finish_maps(agg, (5, 7), uint8=True)
    assert torch.equal(big, big.round()) and big.min() >= 0 and big.max() <= 255
    with pytest.raises(ConfigError, match='copies_from'): get_method('mcis', copies_from='image')

def test_faithful_flags_through_the_stages(smoke_data, tmp_path):
    "copies_from: original, partner_may_be_self and uint8_maps through the classifier and CAM stages (whole squashed images)."
    common = dict(run='mcis_orig', out_root=tmp_path, dataset='synthetic', data_root=smoke_data, split='train',
                  device='cpu', max_images=4, progress=False, amp=False)
    args = dict(extra_channels=16, extra_bn=True, copies_from='original', partner_may_be_self=True, uint8_maps=True, infer_size=32)
    kw = dict(common, method='mcis', method_args=args, backbone='efficientnet_lite0', pretrained=None, epochs=1, batch_size=2)
    with pytest.raises(ConfigError, match='cls_resize'): train_classifier(**kw, crop_size=32)
    cls = train_classifier(**kw, resize=32, crop_size=32, scale_min=1.0, scale_max=1.0, flip=False)
    hist = load_json(cls.path/'history.json')
    assert len(hist) == 2 and all(h['self_pairs'] > 0 and np.isfinite(h['loss']) for h in hist)
    cams = make_cams(**common, scales=[1.0])
    ds = get_dataset('synthetic', smoke_data, 'train'); ds.ids = ds.ids[:4]
    assert_cam_files(cams.path, ds)

def test_voc12_mcis_configs_faithful_and_fixed():
    "Every line of the faithful config has a comment; the fixed one differs only in lines marked FIX (and the run name)."
    faithful, fixed, changed = faithful_and_fixed('mcis')
    assert changed == {'run', 'method_args.partner_may_be_self', 'method_args.uint8_maps', 'eval_crf'}
    assert faithful['eval_crf'][0] == 'mcis' and fixed['eval_crf'][0] == 'deeplab'   # the MCIS test CRF, as a preset
    args = yaml.safe_load((ROOT/'configs'/'voc12_mcis.yaml').read_text())['method_args']
    assert args['copies_from'] == 'original' and args['partner_may_be_self'] and args['uint8_maps']
