"""Issue 25, point 2: a wrong file is refused before anything runs, saying what it is and where it belongs. Each original's
layout is built from the key lists in tests/fixtures (shapes as the originals save them; every tensor a stride-0 view of one
value, so the files are tiny), and each importer, converter and config slot is given one it does not take."""
import argparse, json
from pathlib import Path
import numpy as np
import pytest
import torch
from conftest import ROOT
from wsss_nb.core import ConfigError, DataError
from wsss_nb.importers import identify_weights, expect_weights, import_cams, import_deeplab, import_classifier, import_pseudo, add_import_parser
from test_importers import _voc_layout, _write_cams, FIXTURES

def _t(shape): return torch.zeros(()) if not shape else torch.zeros(1).expand(*shape)   # the shape, one stored value

def _save(layout, path, wrap=None):
    sd = {k: _t(tuple(s)) for k, s in layout.items()}
    torch.save(wrap(sd) if wrap else sd, path)
    return path

def _resnet38(prefix=''):
    from wsss_nb.backbones import get_backbone
    with torch.device('meta'): return {prefix + k: tuple(v.shape) for k, v in get_backbone('resnet38', pretrained=None, output_stride=8).state_dict().items()}

def _deeplab_pytorch(trained=True):
    rows = [l.split() for l in (FIXTURES/'deeplab_pytorch_resnet101_msc.txt').read_text().splitlines() if l.strip()]
    sd = {k: tuple(int(d) for d in s.split('x')) if s != '-' else () for k, s in rows}
    if trained: return sd
    sd = {k[len('base.'):]: s for k, s in sd.items() if not k.startswith('base.aspp.')}
    return {**sd, 'fc.weight': (91, 2048, 1, 1), 'fc.bias': (91,)}

HEADS = json.loads((FIXTURES/'released_heads.json').read_text())

@pytest.fixture(scope='module')
def files(tmp_path_factory):
    "One file (or folder) per known layout."
    d, f = tmp_path_factory.mktemp('layouts'), {}
    ckpt = lambda sd: dict(epoch=0, global_counter=0, state_dict=sd)
    f['cls:mcis'] = _save(_voc_layout('mcis'), d/'pascal_voc_epoch_10.pth', ckpt)
    f['cls:group'] = _save(_voc_layout('group'), d/'pascal_voc_epoch_14.pth', ckpt)
    f['cls:msa'] = _save(_voc_layout('msa'), d/'msa.pth')
    f['cls:l2g_csa'] = _save(_voc_layout('l2g_csa'), d/'csa.pth', lambda sd: dict(state_dict=sd, local_dict=sd))
    f['cls:l2g'] = _save({**_resnet38('module.'), **HEADS['l2g']}, d/'l2g.pth', lambda sd: dict(state_dict=sd, local_dict=sd))
    f['cls:psa_cls'] = _save({**_resnet38(), **HEADS['psa_cls']}, d/'res38_cls.pth')
    f['cls:sccam'] = _save({**_resnet38(), **HEADS['sccam']}, d/'sccam.pth')
    f['psa_aff'] = _save({**_resnet38(), **HEADS['psa_aff']}, d/'res38_aff.pth')
    f['resnet38'] = _save(_resnet38(), d/'resnet38_ilsvrc.pth')
    f['deeplab_trained'] = _save(_deeplab_pytorch(), d/'deeplabv2_resnet101_msc-vocaug-20000.pth')
    f['deeplab_init'] = _save(_deeplab_pytorch(trained=False), d/'deeplabv1_resnet101-coco.pth')
    from wsss_nb.deeplab import DeepLabLargeFOVResNet101
    with torch.device('meta'): fov = {k: tuple(v.shape) for k, v in DeepLabLargeFOVResNet101(21).state_dict().items()}
    f['largefov'] = _save(fov, d/'mcis_res_fov2a.pth')
    f['spixelnet'] = _save(json.loads((FIXTURES/'spixelnet1l_bn_keys.json').read_text())['keys'], d/'Q_model_final.pth', lambda sd: dict(state_dict=sd))
    import torchvision
    with torch.device('meta'): f['torchvision_resnet'] = _save({k: tuple(v.shape) for k, v in torchvision.models.resnet50().state_dict().items()}, d/'resnet50.pth')
    from wsss_nb.convert import save_mxnet_params, save_caffemodel
    save_mxnet_params({'arg:conv1a_weight': np.zeros((64, 3, 3, 3), np.float32)}, d/'ilsvrc-cls_rna-a1_cls1000_ep-0001.params'); f['mxnet'] = d/'ilsvrc-cls_rna-a1_cls1000_ep-0001.params'
    save_caffemodel([('conv1', 'Convolution', [np.zeros((64, 3, 7, 7), np.float32)])], d/'init.caffemodel'); f['caffemodel'] = d/'init.caffemodel'
    return f

def test_every_layout_is_named(files):
    "Each file is recognised as what it is (and only that), with a place where it belongs."
    for kind, f in files.items():
        k = identify_weights(f)
        assert k.kind == kind and k.where and k.what, (kind, k)
    assert identify_weights(files['deeplab_trained']).what.startswith('a trained DeepLab-v2 segmentation model') and '21-class' in identify_weights(files['deeplab_trained']).what
    assert 'COCO init' in identify_weights(files['deeplab_init']).what and 'seg_pretrained' in identify_weights(files['deeplab_init']).where

def test_classifier_formats_refuse_each_other(files):
    "The six classifier layouts: each given as another format names its own format and the command for it."
    fmts = ['psa_cls', 'sccam', 'l2g', 'l2g_csa', 'mcis', 'group', 'msa']
    for got in fmts:
        for want in fmts:
            if got == want: assert expect_weights(files[f'cls:{got}'], {f'cls:{want}'}, 'x').kind == f'cls:{got}'; continue
            with pytest.raises(DataError, match=rf"import cls --format {want}: .* is a '\w+' classifier checkpoint in the '{got}' layout.*--format {got}`"):
                expect_weights(files[f'cls:{got}'], {f'cls:{want}'}, f'import cls --format {want}')

@pytest.fixture
def cfg(smoke_data, tmp_path):
    return dict(run='voc', out_root=str(tmp_path/'outputs'), dataset='synthetic', data_root=str(smoke_data), train_split='train',
                eval_split='val', method='cam', backbone='efficientnet_lite0', output_stride=16, seg_backbone='deeplab_resnet101', seg_msc=True)

def test_probe_coco_init_to_import_deeplab(files, cfg):
    with pytest.raises(DataError) as e: import_deeplab(files['deeplab_init'], cfg)
    msg = str(e.value)
    assert msg.startswith('import deeplab: ') and "deeplab-pytorch's COCO init" in msg and 'it belongs: seg_pretrained' in msg, msg
    assert not (Path(cfg['out_root'])/'voc_released').exists()

def test_probe_png_cam_folder_as_psa(cfg, smoke_data, tmp_path):
    from wsss_nb.data import get_dataset
    ds = get_dataset('synthetic', smoke_data, 'train')
    _write_cams('png', tmp_path/'pngs', ds)
    with pytest.raises(DataError, match=r"import cams --format psa: .*pngs is a folder of PNG CAMs .*`wsss-nb import cams DIR CONFIG --format png`"):
        import_cams(tmp_path/'pngs', 'psa', cfg)
    _write_cams('irn', tmp_path/'irn', ds)
    with pytest.raises(DataError, match=r"is a folder of IRN .npy CAM dicts.*--format irn"): import_cams(tmp_path/'irn', 'psa', cfg)
    with pytest.raises(DataError, match=r"import pseudo: .*pngs is a folder of PNG CAMs"): import_pseudo(tmp_path/'pngs', cfg)
    with pytest.raises(DataError, match=r"import cams --format png: .*is a folder of label PNGs .*`wsss-nb import pseudo DIR CONFIG`"):
        import_cams(smoke_data/'SegmentationClass', 'png', cfg)

def test_probe_mxnet_params_as_pretrained(files, tmp_path, capsys):
    from wsss_nb.cli import main
    f = tmp_path/'c.yaml'; f.write_text(f'run: x\nout_root: {tmp_path/"out"}\nbackbone: resnet38\npretrained: {files["mxnet"]}\n')
    assert main(['run', str(f)]) == 2
    err = capsys.readouterr().err
    assert 'pretrained=' in err and 'is an MXNet NDArray file (.params)' in err and '`wsss-nb convert mxnet-resnet38 FILE weights/resnet38_ilsvrc.pth`' in err, err
    assert not (tmp_path/'out').exists()

def test_probe_pth_to_convert_caffemodel(files, tmp_path):
    from wsss_nb.convert import add_convert_parser
    p = argparse.ArgumentParser(); add_convert_parser(p.add_subparsers())
    a = p.parse_args(['convert', 'caffemodel', str(files['deeplab_init']), str(tmp_path/'out.pth')])
    with pytest.raises(DataError, match=r"convert caffemodel: .*deeplabv1_resnet101-coco.pth is a PyTorch file, not a Caffe .caffemodel: deeplab-pytorch's COCO init"): a.func(a)
    a = p.parse_args(['convert', 'mxnet-resnet38', str(files['caffemodel']), str(tmp_path/'out.pth')])
    with pytest.raises(DataError, match=r"is not an MXNet NDArray file"): a.func(a)   # a .caffemodel has no magic to tell by: the reader's own error
    a = p.parse_args(['convert', 'mxnet-resnet38', str(files['resnet38']), str(tmp_path/'out.pth')])
    with pytest.raises(DataError, match=r"convert mxnet-resnet38: .* is a PyTorch file, not an MXNet .params: a ResNet-38 ImageNet state dict.*it belongs: pretrained"): a.func(a)
    assert not (tmp_path/'out.pth').exists()

def test_trained_segmentation_model_refused_as_seg_pretrained(files):
    "deeplab-pytorch's VOC-trained model as seg_pretrained: refused, naming what it is, unless seg_pretrained_trained: true; the COCO init passes."
    from wsss_nb.cli import check_weight_files
    params = dict(backbone='efficientnet_lite0', pretrained=None, seg_backbone='deeplab_resnet101', seg_output_stride=8,
                  seg_rates=[6, 12, 18, 24], seg_pretrained=str(files['deeplab_trained']))
    with pytest.raises(ConfigError) as e: check_weight_files(params, where='voc.yaml')
    msg = str(e.value)
    assert msg.startswith('voc.yaml: seg_pretrained=') and 'a trained DeepLab-v2 segmentation model' in msg and 'seg_pretrained_trained: true' in msg, msg
    check_weight_files({**params, 'seg_pretrained_trained': True})                      # explicitly asked for: loads (21-class head)
    check_weight_files({**params, 'seg_pretrained': str(files['deeplab_init'])})         # the COCO init is what it is for
    for kind in ('cls:mcis', 'psa_aff', 'mxnet', 'caffemodel'):
        with pytest.raises(ConfigError, match=r"seg_pretrained=.* is .*; it belongs: "): check_weight_files({**params, 'seg_pretrained': str(files[kind])})

def test_method_weights_checked_before_stage_01(files, tmp_path, capsys):
    "round0_weights, refiner_args.weights and scn_weights: a file of another layout, or a round-0 classifier that does not fit, stops the run before stage 01."
    from wsss_nb.cli import check_weight_files, main
    base = dict(backbone='resnet38', pretrained=None, seg_backbone='efficientnet_lite0', seg_pretrained=None, method='sccam',
                dataset='synthetic', data_root=str(tmp_path/'none'), train_split='train', output_stride=8)
    check_weight_files({**base, 'method_args': dict(round0_weights=str(files['cls:psa_cls']))})    # PSA's res38_cls.pth fits SC-CAM's round 0
    with pytest.raises(ConfigError, match=r"method_args.round0_weights=.*pascal_voc_epoch_14.pth is a 'group' classifier .*--format group"):
        check_weight_files({**base, 'method_args': dict(round0_weights=str(files['cls:group']))})
    with pytest.raises(ConfigError, match=r"refiner_args.weights=.*res38_aff.pth is PSA's AffinityNet .*`wsss-nb import affinity FILE CONFIG`"):
        check_weight_files({**base, 'method_args': {}, 'refiner_args': dict(weights=str(files['psa_aff']))})
    with pytest.raises(ConfigError, match=r"method_args.scn_weights=.*is a SpixelNet1l_bn .*`wsss-nb import spixelnet FILE CONFIG`"):
        check_weight_files({**base, 'method': 'msa', 'method_args': dict(scn_weights=str(files['spixelnet']))})
    f = tmp_path/'c.yaml'   # a round-0 file whose backbone is not the config's: named before stage 01, in one line
    f.write_text(f'run: x\nout_root: {tmp_path/"out"}\nmethod: sccam\nmethod_args: {{round0_weights: {files["cls:psa_cls"]}, round_epochs: [0, 1, 1]}}\n')
    assert main(['run', str(f)]) == 2
    err = capsys.readouterr().err
    assert "method_args.round0_weights=" in err and "does not fit the sccam classifier on backbone='efficientnet_lite0'" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path/'out').exists()

def test_import_with_overrides_and_no_gt_bound(cfg, smoke_data, tmp_path, capsys):
    "`wsss-nb import … key=value --no-gt-bound`: the overrides change the config the import uses, and the printed next step repeats them."
    import yaml
    from wsss_nb.data import get_dataset
    (tmp_path/'cfg.yaml').write_text(yaml.safe_dump(dict(cfg, train_split='nope')))     # wrong in the file, fixed on the command line
    _write_cams('psa', tmp_path/'c', get_dataset('synthetic', smoke_data, 'train'))
    from wsss_nb.cli import main
    assert main(['import', 'cams', str(tmp_path/'c'), str(tmp_path/'cfg.yaml'), '--format', 'psa', 'train_split=train', 'run=mine', 'refiner=none', '--no-gt-bound']) == 0
    out = capsys.readouterr().out
    assert f"next: wsss-nb run {tmp_path/'cfg.yaml'} run=mine_released train_split=train refiner=none train_gt_bound=false --stages 03_make_pseudo" in out, out
    rec = json.loads((Path(cfg['out_root'])/'mine_released'/'import.json').read_text())
    assert rec['config']['train_split'] == 'train' and rec['stages']['cams']['kind'] == 'cams:psa'
    p = argparse.ArgumentParser(); add_import_parser(p.add_subparsers())
    a = p.parse_args(['import', 'cams', str(tmp_path/'c'), str(tmp_path/'cfg.yaml'), 'train_split=train', '--format', 'psa'])
    assert a.func(a) == 0 and 'add train_gt_bound=false (or import with --no-gt-bound)' in capsys.readouterr().out
    assert main(['import', 'cams', str(tmp_path/'c'), str(tmp_path/'cfg.yaml'), '--format', 'psa', 'trian_split=train']) == 2
    assert 'trian_split' in capsys.readouterr().err
