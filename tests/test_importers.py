"""`wsss_nb.importers`: released files in the originals' layouts (key names, shapes, file naming) become finished stages,
and the stages after them run; a wrong key, a wrong shape, an image outside the split and a map at the wrong size each
give one clear error."""
import argparse, json
from pathlib import Path
import numpy as np
import pytest
import torch
from conftest import assert_cam_files, assert_label_files
from wsss_nb.core import DataError, ConfigError
from wsss_nb.data import get_dataset, save_mask
from wsss_nb.importers import (import_cams, import_pseudo, import_classifier, import_affinity, import_deeplab,
                               add_import_parser, map_state_dict, file_sha256)

FIXTURES = Path(__file__).parent/'fixtures'

@pytest.fixture
def cfg(smoke_data, tmp_path):
    return dict(run='voc', out_root=str(tmp_path/'outputs'), dataset='synthetic', data_root=str(smoke_data), train_split='train',
                eval_split='val', method='cam', backbone='efficientnet_lite0', output_stride=16,
                seg_backbone='efficientnet_lite0', seg_rates=[2, 4], seg_msc=False, seg_neck=0)

@pytest.fixture
def ds(smoke_data): return get_dataset('synthetic', smoke_data, 'train')

def _rename(sd, names):
    "Our keys -> the original's, by prefix (first match)."
    return {next(v + k[len(p):] for p, v in names.items() if k.startswith(p)): t.clone() for k, t in sd.items() if 'num_batches_tracked' not in k}

def _done(st): return json.loads((st.path/'_done.json').read_text())

# ---- CAM folders ----
def _write_cams(fmt, folder, ds, stride=8, rng=np.random.default_rng(0)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in ds.ids:
        keys = np.flatnonzero(ds.labels[i]); H, W = ds.load_raw(i)[0].shape[:2]
        if fmt == 'png':       # Group-WSSS / L2G: one 8-bit PNG per image and class, at the image size
            for c in keys: save_mask((rng.random((H, W))*255).astype(np.uint8), folder/f'{i}_{c}.png')
        elif fmt == 'psa':     # PSA infer_cls.py: {class: map}, here at feature stride 8
            np.save(folder/f'{i}.npy', {int(c): rng.random((-(-H//stride), -(-W//stride))).astype(np.float32) for c in keys})
        else:                  # IRN make_cam.py: keys, stride-4 'cam', full-size 'high_res'
            np.save(folder/f'{i}.npy', {'keys': keys, 'cam': torch.rand(len(keys), -(-H//4), -(-W//4)),
                                        'high_res': rng.random((len(keys), H, W)).astype(np.float32)})

@pytest.mark.parametrize('fmt', ['png', 'psa', 'irn'])
def test_cam_import_then_pseudo_stage(fmt, cfg, ds, tmp_path):
    from wsss_nb.stages import make_pseudo_labels
    _write_cams(fmt, tmp_path/'released_cams', ds)
    st = import_cams(tmp_path/'released_cams', fmt, cfg)
    assert_cam_files(st.path, ds)
    d = _done(st)
    assert d['summary']['imported']['sha256'] == file_sha256(tmp_path/'released_cams') and 0 <= d['summary']['cam_miou'] <= 1
    p = make_pseudo_labels('voc_released', cfg['out_root'], 'synthetic', cfg['data_root'], refiner='none', progress=False)
    assert_label_files(p.path/'labels', ds)
    assert json.loads((p.path/'_params.json').read_text())['upstream']['cams'] == st.fingerprint_done()   # its fingerprint + its files' sha1
    again = import_cams(tmp_path/'released_cams', fmt, cfg)   # same file: the stage is the same (and downstream stays valid)
    assert again.fingerprint == d['fingerprint']

def test_cam_import_errors(cfg, ds, tmp_path):
    _write_cams('psa', tmp_path/'c', ds)
    np.save(tmp_path/'c'/'2007_000032.npy', {0: np.zeros((8, 8))})
    with pytest.raises(DataError, match=r"1 image\(s\) not in split 'train', e.g. '2007_000032'"): import_cams(tmp_path/'c', 'psa', cfg)
    (tmp_path/'c'/'2007_000032.npy').unlink()
    i = ds.ids[3]
    np.save(tmp_path/'c'/f'{i}.npy', {int(c): np.zeros((5, 9)) for c in np.flatnonzero(ds.labels[i])})
    with pytest.raises(DataError, match=rf"{i}.npy: maps are \(5, 9\), the image is \(64, 64\)"): import_cams(tmp_path/'c', 'psa', cfg)
    np.save(tmp_path/'c'/f'{i}.npy', {})
    with pytest.raises(DataError, match=rf"{i}.npy: no map for class"): import_cams(tmp_path/'c', 'psa', cfg)
    with pytest.raises(ConfigError, match='unknown format'): import_cams(tmp_path/'c', 'mat', cfg)

# ---- pseudo-labels ----
def test_pseudo_import_then_seg_stage(cfg, ds, tmp_path):
    from wsss_nb.stages import train_segmentation
    (tmp_path/'labels').mkdir()
    for i in ds.ids: save_mask(ds.load_raw(i)[1], tmp_path/'labels'/f'{i}.png')
    st = import_pseudo(tmp_path/'labels', cfg)
    assert_label_files(st.path/'labels', ds)
    assert _done(st)['summary']['miou_after'] == pytest.approx(1.0)
    seg = train_segmentation('voc_released', cfg['out_root'], 'synthetic', cfg['data_root'], backbone='efficientnet_lite0', pretrained=None,
                             rates=[2, 4], msc=False, iters=2, batch_size=4, crop_size=32, neck=0, progress=False, amp=False)
    assert (seg.path/'model.pt').is_file()

def test_pseudo_import_errors(cfg, ds, tmp_path):
    d = tmp_path/'labels'; d.mkdir()
    for i in ds.ids: save_mask(ds.load_raw(i)[1], d/f'{i}.png')
    save_mask(np.zeros((64, 64), np.uint8), d/'2007_000032.png')
    with pytest.raises(DataError, match=r"not in split 'train', e.g. 2007_000032.png"): import_pseudo(d, cfg)
    (d/'2007_000032.png').unlink(); save_mask(np.zeros((32, 64), np.uint8), d/f'{ds.ids[2]}.png')
    with pytest.raises(DataError, match=r"label map is \(32, 64\), the image is \(64, 64\)"): import_pseudo(d, cfg)
    save_mask(np.full((64, 64), 40, np.uint8), d/f'{ds.ids[2]}.png')
    with pytest.raises(DataError, match='label value 40 is not a class'): import_pseudo(d, cfg)
    (d/f'{ds.ids[2]}.png').unlink()
    with pytest.raises(DataError, match=rf"{ds.ids[2]}.png missing"): import_pseudo(d, cfg)

# ---- classifiers ----
def _net(cfg, method, **margs):
    from wsss_nb.cam import get_method
    from wsss_nb.backbones import get_backbone
    torch.manual_seed(0)
    return get_method(method, **margs).build_model(get_backbone(cfg['backbone'], pretrained=None, output_stride=16), 8)

PSA_CLS = {'classifier.': 'fc8.', 'backbone.': ''}

def test_psa_cls_import_then_cam_stage(cfg, ds, tmp_path):
    from wsss_nb.stages import make_cams, load_classifier
    net = _net(cfg, 'cam')
    torch.save(_rename(net.state_dict(), PSA_CLS), tmp_path/'res38_cls.pth')   # PSA resnet38_cls.Net names: bare backbone keys + fc8
    st = import_classifier(tmp_path/'res38_cls.pth', 'psa_cls', cfg)
    _, model, meta = load_classifier(st.path/'model.pt')
    for k, v in net.state_dict().items(): torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)
    assert meta['imported']['sha256'] == file_sha256(tmp_path/'res38_cls.pth')
    cams = make_cams('voc_released', cfg['out_root'], 'synthetic', cfg['data_root'], scales=[1.0], flip=False, progress=False, amp=False, max_images=4)
    assert len(list(cams.path.glob('*.npz'))) == 4

def test_cls_import_errors(cfg, tmp_path):
    sd = _rename(_net(cfg, 'cam').state_dict(), PSA_CLS)
    bad = dict(sd, **{'fc8.weight': torch.zeros(20, 1280, 1, 1)})
    torch.save(bad, tmp_path/'a.pth')
    with pytest.raises(DataError, match=r"a.pth: key 'fc8.weight' has shape \(20, 1280, 1, 1\), the network's 'classifier.weight' is \(8,"):
        import_classifier(tmp_path/'a.pth', 'psa_cls', cfg)
    torch.save({('fc8_20.weight' if k == 'fc8.weight' else k): v for k, v in sd.items()}, tmp_path/'b.pth')
    with pytest.raises(DataError, match=r"import cls --format psa_cls: .*b.pth is a 'sccam' classifier checkpoint .*it belongs: `wsss-nb import cls FILE CONFIG --format sccam`"):
        import_classifier(tmp_path/'b.pth', 'psa_cls', cfg)   # another original's layout: named, with its format
    with pytest.raises(ConfigError, match="'sccam' classifier but the config's method is 'cam'"): import_classifier(tmp_path/'b.pth', 'sccam', cfg)
    (tmp_path/'c.pth').write_bytes(b'not a torch file')
    with pytest.raises(DataError, match='cannot read'): import_classifier(tmp_path/'c.pth', 'psa_cls', cfg)

def test_sccam_round_import(cfg, tmp_path):
    from wsss_nb.stages import load_classifier
    c = dict(cfg, method='sccam', method_args=dict(n_sub=3))
    net = _net(c, 'sccam', n_sub=3)
    sd = {k: v for k, v in net.state_dict().items() if k.startswith(('backbone.', 'classifier.', 'sub_classifier.'))}
    f = tmp_path/'sccam_round3.pth'
    torch.save(_rename(sd, {'classifier.': 'fc8_20.', 'sub_classifier.': 'fc8_200.', 'backbone.': ''}), f)   # SC-CAM resnet38_cls.Net names
    st = import_classifier(f, 'sccam', c)
    _, model, _ = load_classifier(st.path/'model.pt')
    torch.testing.assert_close(model.sub_classifier.weight, net.sub_classifier.weight, rtol=0, atol=0)

def test_l2g_import(cfg, tmp_path):
    from wsss_nb.stages import load_classifier
    c = dict(cfg, method='l2g')
    net = _net(c, 'l2g')
    names = lambda part: {f'{part}.fc8.': 'module.fc8.', f'{part}.pcm.a.': 'module.f8_3.', f'{part}.pcm.b.': 'module.f8_4.',
                          f'{part}.pcm.f.': 'module.f9.', f'{part}.backbone.': 'module.'}
    g = _rename({k: v for k, v in net.state_dict().items() if k.startswith('global_net.')}, names('global_net'))
    l = _rename({k: v + 1 for k, v in net.state_dict().items() if k.startswith('local_net.') and v.is_floating_point()}, names('local_net'))
    torch.save({'state_dict': g, 'local_dict': l}, tmp_path/'l2g.pth')
    st = import_classifier(tmp_path/'l2g.pth', 'l2g', c)
    _, model, _ = load_classifier(st.path/'model.pt')
    torch.testing.assert_close(model.global_net.fc8.weight, net.global_net.fc8.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.local_net.pcm['f'].weight, net.local_net.pcm['f'].weight + 1, rtol=0, atol=0)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad(): torch.testing.assert_close(model.cam(x), net.eval().cam(x))

def test_affinity_import(cfg, tmp_path):
    from wsss_nb.refine import get_refiner
    args = dict(backbone='efficientnet_lite0', pretrained=None)
    aff = get_refiner('rw', **args)._build(None)
    psa = {'proj.0.': 'f8_3.', 'proj.1.': 'f8_4.', 'proj.2.': 'f8_5.', 'mix.': 'f9.', 'backbone.': ''}   # PSA resnet38_aff.Net names
    torch.save(_rename(aff.state_dict(), psa), tmp_path/'res38_aff.pth')
    c = dict(cfg, refiner='rw', refiner_args=args)
    out = import_affinity(tmp_path/'res38_aff.pth', c)
    ref = get_refiner('rw', **args, weights=str(out)).load(out)
    torch.testing.assert_close(ref.net.proj[2].weight, aff.proj[2].weight, rtol=0, atol=0)
    sd = _rename(aff.state_dict(), psa); sd['f8_5.weight'] = sd['f8_5.weight'][:, :3]; torch.save(sd, tmp_path/'bad.pth')
    with pytest.raises(DataError, match=r"bad.pth: key 'f8_5.weight' has shape"): import_affinity(tmp_path/'bad.pth', c)
    with pytest.raises(ConfigError, match="refiner is None, not 'rw'"): import_affinity(tmp_path/'res38_aff.pth', cfg)

def test_deeplab_import_then_evaluate(cfg, tmp_path):
    from wsss_nb.deeplab import build_deeplab
    from wsss_nb.stages import evaluate
    seg = build_deeplab('efficientnet_lite0', 9, pretrained=None, output_stride=8, rates=(2, 4), msc=False, neck=0)
    torch.save({'model': {'module.' + k: v for k, v in seg.state_dict().items()}}, tmp_path/'deeplab.pth')
    st = import_deeplab(tmp_path/'deeplab.pth', cfg)
    sc = evaluate('voc_released', cfg['out_root'], 'synthetic', cfg['data_root'], progress=False, amp=False, max_images=2)
    assert 0 <= sc['seg_miou'] <= 1
    sd = seg.state_dict(); k = next(iter(sd)); sd[k + '_extra'] = sd[k]; torch.save(sd, tmp_path/'x.pth')
    with pytest.raises(DataError, match=rf"x.pth: key '{k}_extra' has no place"): import_deeplab(tmp_path/'x.pth', cfg)

def test_import_cli(cfg, ds, tmp_path, capsys):
    import argparse, yaml
    (tmp_path/'cfg.yaml').write_text(yaml.safe_dump(cfg))
    _write_cams('psa', tmp_path/'c', ds)
    p = argparse.ArgumentParser(); add_import_parser(p.add_subparsers())
    a = p.parse_args(['import', 'cams', str(tmp_path/'c'), str(tmp_path/'cfg.yaml'), '--format', 'psa'])
    assert a.func(a) == 0
    assert 'run=voc_released --stages 03_make_pseudo 04_train_seg 05_evaluate' in capsys.readouterr().out
    a = p.parse_args(['import', 'cams', str(tmp_path/'c'), str(tmp_path/'cfg.yaml')])
    with pytest.raises(ConfigError, match='needs --format'): a.func(a)

def test_map_state_dict_names_first_bad_key():
    t = {'a.w': torch.zeros(2), 'b.w': torch.zeros(3)}
    with pytest.raises(DataError, match=r"f.pth: no key maps onto the network's 'b.w' \(1 missing\)"): map_state_dict({'a.w': torch.ones(2)}, [('', '')], t, 'f.pth')

# ---- the released layouts, from committed key lists ----
@pytest.mark.parametrize('fmt,method,margs', [('psa_cls', 'cam', {}), ('sccam', 'sccam', dict(n_sub=10, restart_each_round=False)), ('l2g', 'l2g', {})])
def test_released_heads_fit_the_resnet38_networks(fmt, method, margs):
    "The released head keys and shapes land, by the importer's rules, on keys of the same shapes (networks built on the meta device)."
    from wsss_nb.cam import get_method
    from wsss_nb.backbones import get_backbone
    from wsss_nb.importers import CLS_FORMATS
    heads = json.loads((FIXTURES/'released_heads.json').read_text())[fmt]
    with torch.device('meta'): net = get_method(method, **margs).build_model(get_backbone('resnet38', pretrained=None, output_stride=8), 20)
    target = net.state_dict()
    prefix = 'global_net.' if fmt == 'l2g' else ''
    sd = {k.removeprefix('module.'): torch.zeros(s, device='meta') for k, s in heads.items()}
    rules = [(s, d) for s, d in CLS_FORMATS[fmt]['rules'] if s]
    target = {k[len(prefix):]: v for k, v in target.items() if k.startswith(prefix) and not k[len(prefix):].startswith('backbone.')}
    target = {k: v for k, v in target.items() if k.startswith(tuple(d for _, d in rules))}
    assert map_state_dict(sd, rules, target, fmt).keys() == target.keys()

def test_released_affinity_heads_fit_the_rw_network():
    from wsss_nb.refine import get_refiner
    heads = json.loads((FIXTURES/'released_heads.json').read_text())['psa_aff']
    with torch.device('meta'): net = get_refiner('rw', backbone='resnet38', pretrained=None)._build(None)
    target = {k: v for k, v in net.state_dict().items() if not k.startswith('backbone.')}
    rules = [('f8_3.', 'proj.0.'), ('f8_4.', 'proj.1.'), ('f8_5.', 'proj.2.'), ('f9.', 'mix.')]
    assert map_state_dict({k: torch.zeros(s) for k, s in heads.items()}, rules, target, 'res38_aff.pth').keys() == target.keys()

def test_spixelnet_import(tmp_path):
    from wsss_nb.importers import import_spixelnet
    from wsss_nb.methods.msa import SpixelNet
    keys = json.loads((FIXTURES/'spixelnet1l_bn_keys.json').read_text())['keys']
    assert len(keys) == 100
    torch.manual_seed(0)
    sd = {k: (torch.tensor(3) if not s else torch.rand(s)) for k, s in keys.items()}
    torch.save({'state_dict': sd, 'epoch': 30}, tmp_path/'Q_model_final.pth')
    net = SpixelNet(); net.load_state_dict(torch.load(import_spixelnet(tmp_path/'Q_model_final.pth', tmp_path/'scn.pth')))
    assert len(net.state_dict()) == 94
    torch.testing.assert_close(net.enc[4][1][0].weight, sd['conv4b.0.weight'], rtol=0, atol=0)
    torch.testing.assert_close(net.fuse[0][0].weight, sd['conv0_1.0.weight'], rtol=0, atol=0)
    torch.testing.assert_close(net.pred.bias, sd['pred_mask0.bias'], rtol=0, atol=0)
    bad = dict(sd); bad['conv9a.0.weight'] = bad.pop('conv0a.0.weight'); torch.save(bad, tmp_path/'bad.pth')
    with pytest.raises(DataError, match=r"bad.pth: key 'conv9a.0.weight' has no place"): import_spixelnet(tmp_path/'bad.pth', tmp_path/'x.pth')

DEEPLAB_KEYS = FIXTURES/'deeplab_pytorch_resnet101_msc.txt'   # committed by the deeplab-pytorch work (issue 16)

def test_deeplab_pytorch_trained_file_import(cfg, tmp_path):
    "deeplab-pytorch's trained MSC file, as saved (key list and shapes from the fixture; ASPP sized for the smoke classes), becomes seg_pseudo/."
    from wsss_nb import deeplab
    if 'deeplab_resnet101' not in getattr(deeplab, 'SEG_NETWORKS', {}) or not DEEPLAB_KEYS.is_file():
        pytest.skip("needs wsss_nb.deeplab's deeplab-pytorch network and its key fixture (issue 16)")
    sd = {}
    for line in DEEPLAB_KEYS.read_text().split('\n'):
        if not line.strip(): continue
        k, s = line.split()
        shape = [] if s == '-' else [int(x) for x in s.split('x')]
        if '.aspp.' in k and shape[0] == 21: shape[0] = 9   # the smoke dataset has 9 classes
        sd[k] = torch.zeros(shape, dtype=torch.long) if s == '-' else torch.randn(shape)*0.01
    torch.save(sd, tmp_path/'deeplabv2_resnet101_msc-vocaug-20000.pth')
    c = dict(cfg, seg_backbone='deeplab_resnet101', seg_rates=[6, 12, 18, 24], seg_msc=True, seg_neck=None)
    st = import_deeplab(tmp_path/'deeplabv2_resnet101_msc-vocaug-20000.pth', c)
    ck = torch.load(st.path/'model.pt', weights_only=False)
    torch.testing.assert_close(ck['model']['base.aspp.c0.weight'], sd['base.aspp.c0.weight'], rtol=0, atol=0)
    k = next(k for k in sd if '.aspp.' in k and k.endswith('weight'))
    sd[k] = torch.zeros(21, *sd[k].shape[1:]); torch.save(sd, tmp_path/'voc21.pth')
    with pytest.raises(DataError, match=rf"voc21.pth: key '{k}' has shape \(21,"): import_deeplab(tmp_path/'voc21.pth', c)

def test_import_cli_spixelnet_and_affinity(cfg, tmp_path):
    import argparse, yaml
    from wsss_nb.methods.msa import SpixelNet
    from wsss_nb.importers import spixelnet_key
    inv = {}
    for k in json.loads((FIXTURES/'spixelnet1l_bn_keys.json').read_text())['keys']:
        if spixelnet_key(k): inv[spixelnet_key(k)] = k
    torch.save({inv[k]: v for k, v in SpixelNet().state_dict().items()}, tmp_path/'Q.pth')
    (tmp_path/'cfg.yaml').write_text(yaml.safe_dump(cfg))
    p = argparse.ArgumentParser(); add_import_parser(p.add_subparsers())
    a = p.parse_args(['import', 'spixelnet', str(tmp_path/'Q.pth'), str(tmp_path/'cfg.yaml')])
    assert a.func(a) == 0 and (Path(cfg['out_root'])/'voc_released'/'imported'/'spixelnet.pth').is_file()

# ---- classifiers whose format is read from the originals' train scripts (MCIS, Group-WSSS, MSA, L2G+CSA) ----
LAYOUTS = json.loads((FIXTURES/'released_classifiers.json').read_text())

def _voc_layout(fmt):
    "{key: shape} of the original's VOC file for `fmt` (the fixture's lists; MSA's trunk by torchvision's ResNet-50 names, twice)."
    spec = LAYOUTS[fmt]
    if 'keys' in spec: return {k: tuple(s) for k, s in spec['keys'].items()}
    out = {k: tuple(s) for k, s in spec['heads'].items()}
    if fmt == 'msa':
        import torchvision
        with torch.device('meta'): trunk = {f'model.{k}': tuple(v.shape) for k, v in torchvision.models.resnet50().state_dict().items() if not k.startswith('fc.')}
        out.update(trunk)
        out.update({s + k[len(t):]: v for s, t in spec['twins'].items() for k, v in trunk.items() if k.startswith(t)})
    else:
        from wsss_nb.backbones import get_backbone
        with torch.device('meta'): out.update({f'module.{k}': tuple(v.shape) for k, v in get_backbone('resnet38', pretrained=None, output_stride=8).state_dict().items()})
    return out

_VOC = {'mcis': ('vgg16', 8, dict(extra_bn=False)), 'group': ('vgg16', 8, dict(online_maps=False)),
        'msa': ('resnet50', 16, dict(scn_epochs=0)), 'l2g_csa': ('resnet38', 8, {})}

@pytest.mark.parametrize('fmt', ['mcis', 'group', 'msa', 'l2g_csa'])
def test_released_classifier_layout_fits_the_network(fmt):
    "On the meta device: our VOC network written by `save_original` has exactly the original's keys and shapes, and the importer's rules map them back onto every key."
    from wsss_nb.importers import CLS_FORMATS, to_original, _DATAPARALLEL
    bb, os_, margs = _VOC[fmt]
    with torch.device('meta'): net = get_method(fmt, **margs).build_model(get_backbone(bb, pretrained=None, output_stride=os_), 20)
    sd = net.state_dict()
    part = 'global_net.' if fmt == 'l2g_csa' else ''
    own = {k[len(part):]: v for k, v in sd.items() if k.startswith(part)}
    theirs = to_original(own, fmt)
    if fmt == 'group': theirs['extra_linear_e.weight'] = torch.zeros(20, 20, device='meta')
    for s, t in CLS_FORMATS[fmt].get('twins', ()): theirs.update({s + k[len(t):]: v for k, v in list(theirs.items()) if k.startswith(t)})
    pre = 'module.' if fmt in _DATAPARALLEL else ''
    layout = _voc_layout(fmt)
    assert {pre + k: tuple(v.shape) for k, v in theirs.items()} == layout
    back = {k[len(pre):]: torch.zeros(s, device='meta') for k, s in layout.items()}
    back = {k: v for k, v in back.items() if not k.startswith(tuple(CLS_FORMATS[fmt].get('drop', ())) + tuple(s for s, _ in CLS_FORMATS[fmt].get('twins', ())))}
    target = {k: v for k, v in own.items() if k.startswith(tuple(d for _, d in CLS_FORMATS[fmt]['rules']))}
    assert map_state_dict(back, CLS_FORMATS[fmt]['rules'], target, fmt).keys() == {k for k in target if 'num_batches_tracked' not in k}

def get_method(*a, **k):
    from wsss_nb.cam import get_method as g
    return g(*a, **k)

def get_backbone(*a, **k):
    from wsss_nb.backbones import get_backbone as g
    return g(*a, **k)

@pytest.fixture(scope='module')
def standins(tmp_path_factory):
    "Stand-in checkpoints in the originals' layouts (`save_original`) on the smoke classes, and the networks they hold."
    from wsss_nb.importers import save_original, spixelnet_key
    d, out = tmp_path_factory.mktemp('standins'), {}
    for fmt, name in [('mcis', 'pascal_voc_epoch_10.pth'), ('group', 'pascal_voc_epoch_14.pth'), ('msa', 'msa_cls.pth')]:
        bb, os_, margs = _VOC[fmt]
        torch.manual_seed(0)
        net = get_method(fmt, **margs).build_model(get_backbone(bb, pretrained=None, output_stride=os_), 8)
        out[fmt] = (save_original(net, fmt, d/name), net)
    inv = {spixelnet_key(k): k for k in json.loads((FIXTURES/'spixelnet1l_bn_keys.json').read_text())['keys'] if spixelnet_key(k)}
    torch.save({'module.' + inv[k]: v for k, v in out['msa'][1].scn.state_dict().items()}, d/'Q_model_final.pth')   # loaded under DataParallel by train_cls_image.py
    out['scn'] = d/'Q_model_final.pth'
    return out

def _cfg_for(cfg, fmt, **margs):
    bb, os_, m = _VOC[fmt]
    return dict(cfg, method=fmt, backbone=bb, output_stride=os_, method_args=dict(m, **margs))

@pytest.mark.parametrize('fmt', ['mcis', 'group', 'msa'])
def test_classifier_import_then_cam_stage(fmt, standins, cfg, tmp_path):
    "The stand-in has the original's key names (fixture); imported, it gives our network bit for bit, and stage 02 runs on it."
    import yaml
    from wsss_nb.stages import make_cams, load_classifier
    from wsss_nb.importers import _DATAPARALLEL
    f, net = standins[fmt]
    ck = torch.load(f, weights_only=False)
    keys = set(ck['state_dict'] if fmt != 'msa' else ck)
    assert keys == set(_voc_layout(fmt)), sorted(keys ^ set(_voc_layout(fmt)))[:3]
    c = _cfg_for(cfg, fmt, **({'n_partners': 1} if fmt == 'mcis' else {}))
    if fmt == 'msa':   # through the command line, with the superpixel net
        (tmp_path/'cfg.yaml').write_text(yaml.safe_dump(c))
        p = argparse.ArgumentParser(); add_import_parser(p.add_subparsers())
        a = p.parse_args(['import', 'cls', str(f), str(tmp_path/'cfg.yaml'), '--format', 'msa', '--scn', str(standins['scn'])])
        assert a.func(a) == 0
    else: import_classifier(f, fmt, c)
    _, model, meta = load_classifier(Path(cfg['out_root'])/'voc_released'/'cls'/'model.pt')
    assert meta['imported']['kind'] == f'cls:{fmt}' and meta['imported']['sha256'] == file_sha256(f)
    for k, v in net.state_dict().items():
        if k != 'scn_trained': torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0, msg=k)
    cams = make_cams('voc_released', cfg['out_root'], 'synthetic', cfg['data_root'], scales=[1.0], flip=False, progress=False, amp=False, max_images=1)
    assert len(list(cams.path.glob('*.npz'))) == 1

def _edit(f, fmt, tmp_path, change, name='bad.pth'):
    "A copy of the stand-in `f` with `change(state dict)` applied."
    ck = torch.load(f, weights_only=False)
    sd = dict(ck['state_dict'] if 'state_dict' in ck else ck); change(sd)
    torch.save(dict(ck, state_dict=sd) if 'state_dict' in ck else sd, tmp_path/name)
    return tmp_path/name

@pytest.mark.parametrize('fmt,key', [('mcis', 'module.extra_gate.weight'), ('group', 'module.extra_proja.weight'), ('msa', 'get_qfeats.1.0.weight')])
def test_classifier_import_bad_key_and_shape(fmt, key, standins, cfg, tmp_path):
    f, _ = standins[fmt]
    c, kw = _cfg_for(cfg, fmt), dict(scn=standins['scn']) if fmt == 'msa' else {}
    short = key.removeprefix('module.')
    renamed = _edit(f, fmt, tmp_path, lambda sd: sd.update({key.replace('.weight', '_x.weight'): sd.pop(key)}), 'renamed.pth')
    with pytest.raises(DataError, match=rf"renamed.pth: key '{short.replace('.weight', '_x.weight')}' has no place"): import_classifier(renamed, fmt, c, **kw)
    shaped = _edit(f, fmt, tmp_path, lambda sd: sd.update({key: torch.zeros(3, *sd[key].shape[1:])}), 'shaped.pth')
    with pytest.raises(DataError, match=rf"shaped.pth: key '{short}' has shape \(3,"): import_classifier(shaped, fmt, c, **kw)

def test_classifier_import_format_errors(standins, cfg, tmp_path):
    "What an original's file or the config cannot be: one clear error each, before anything is written."
    f, _ = standins['mcis']
    with pytest.raises(ConfigError, match='without BatchNorm'): import_classifier(f, 'mcis', _cfg_for(cfg, 'mcis', extra_bn=True))
    with pytest.raises(ConfigError, match="the file is a 'mcis' classifier but the config's method is 'group'"): import_classifier(f, 'mcis', _cfg_for(cfg, 'group'))
    torch.save(torch.load(f, weights_only=False)['state_dict'], tmp_path/'bare.pth')
    with pytest.raises(DataError, match="bare.pth: expected a checkpoint dict with key 'state_dict'"): import_classifier(tmp_path/'bare.pth', 'mcis', _cfg_for(cfg, 'mcis'))
    with pytest.raises(ConfigError, match='no online maps'): import_classifier(standins['group'][0], 'group', _cfg_for(cfg, 'group', online_maps=True))
    with pytest.raises(ConfigError, match='set backbone: vgg16'): import_classifier(standins['group'][0], 'group', dict(_cfg_for(cfg, 'group'), backbone='resnet50'))
    with pytest.raises(ConfigError, match='set backbone: resnet38'): import_classifier(standins['group'][0], 'l2g_csa', dict(cfg, method='l2g_csa'))
    m, c = standins['msa'][0], _cfg_for(cfg, 'msa')
    with pytest.raises(ConfigError, match=r'pass its file \(Q_model_final.pth\)'): import_classifier(m, 'msa', c)
    with pytest.raises(ConfigError, match='for --format msa only'): import_classifier(f, 'mcis', _cfg_for(cfg, 'mcis'), scn=standins['scn'])
    declared = _edit(m, 'msa', tmp_path, lambda sd: sd.update({'get_tran_conv4.0.0.weight': torch.zeros(256, 128, 3, 3)}), 'declared.pth')
    with pytest.raises(DataError, match=r"declared.pth: key 'get_tran_conv4.0.0.weight' has shape \(256, 128, 3, 3\).*declares this conv with 128 inputs"):
        import_classifier(declared, 'msa', c, scn=standins['scn'])
    twin = _edit(m, 'msa', tmp_path, lambda sd: sd.update({'stage2.0.1.bn2.weight': sd['stage2.0.1.bn2.weight'] + 1}), 'twin.pth')
    with pytest.raises(DataError, match="twin.pth: key 'stage2.0.1.bn2.weight' differs from its twin 'model.layer1.1.bn2.weight'"): import_classifier(twin, 'msa', c, scn=standins['scn'])
    assert not (Path(cfg['out_root'])/'voc_released'/'cls').exists()

@pytest.mark.skipif(not __import__('os').environ.get('WSSS_SLOW'), reason='two ResNet-38 networks (~4.7 GB, ~2 min on 2 cores); set WSSS_SLOW=1 to run')
def test_l2g_csa_import_then_cam_stage_resnet38(cfg, tmp_path):
    "The thesis layout on the real ResNet-38 (SE/DRS exist only there): imported bit for bit, then stage 02 runs."
    from wsss_nb.importers import save_original
    from wsss_nb.stages import make_cams, load_classifier
    torch.manual_seed(0)
    net = get_method('l2g_csa').build_model(get_backbone('resnet38', pretrained=None, output_stride=8), 8)
    f = save_original(net, 'l2g_csa', tmp_path/'pascal_voc_epoch_9.pth')
    ck = torch.load(f, weights_only=False)
    assert {k for k in ck['state_dict'] if 'se_layer' in k or 'DRS' in k} == {k for k in _voc_layout('l2g_csa') if 'se_layer' in k or 'DRS' in k}
    c = dict(cfg, method='l2g_csa', backbone='resnet38', output_stride=8)
    st = import_classifier(f, 'l2g_csa', c)
    _, model, _ = load_classifier(st.path/'model.pt')
    for k, v in net.state_dict().items(): torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0, msg=k)
    del net, model, ck
    cams = make_cams('voc_released', cfg['out_root'], 'synthetic', cfg['data_root'], scales=[1.0], flip=False, progress=False, amp=False, max_images=1)
    assert len(list(cams.path.glob('*.npz'))) == 1

def test_subset_imports_and_scores_a_superset_folder(cfg, smoke_data, tmp_path):
    "A released train_aug folder for a run on train: refused as it is (maps outside the split), taken with subset=True; `score --subset` likewise."
    from wsss_nb.importers import score_folder
    tr, va = get_dataset('synthetic', smoke_data, 'train'), get_dataset('synthetic', smoke_data, 'val')
    _write_cams('psa', tmp_path/'c', tr); _write_cams('psa', tmp_path/'c', va)          # maps of both splits, as train_aug holds train's
    with pytest.raises(DataError, match=r"6 image\(s\) not in split 'train'"): import_cams(tmp_path/'c', 'psa', cfg)
    st = import_cams(tmp_path/'c', 'psa', cfg, subset=True)
    assert len(list(st.path.glob('*.npz'))) == len(tr.ids) and _done(st)['summary']['n_images'] == len(tr.ids)
    (tmp_path/'l').mkdir()
    for ds_ in (tr, va):
        for i in ds_.ids: save_mask(ds_.load_raw(i)[1], tmp_path/'l'/f'{i}.png')
    with pytest.raises(DataError, match='not in split'): score_folder(tmp_path/'l', 'synthetic', smoke_data, 'train')
    s = score_folder(tmp_path/'l', 'synthetic', smoke_data, 'train', subset=True)
    assert s['n_images'] == len(tr.ids) and s['miou'] == pytest.approx(1.0) and s['split'] == 'train'
