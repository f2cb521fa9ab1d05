"Bad input gives one clear error that names the file or key, and nothing already written is lost."
import shutil
import numpy as np
import pytest
from PIL import Image
from wsss_nb.core import ConfigError, DataError, WSSSError

def _copy(src, tmp):
    dst = tmp/'ds'; shutil.copytree(src, dst); return dst

def test_missing_dataset_root(tmp_path):
    from wsss_nb.data import get_dataset
    with pytest.raises(DataError) as e: get_dataset('voc12', tmp_path/'VOC2012', 'train')
    assert 'VOC2012' in str(e.value) and 'JPEGImages' in str(e.value)   # names the path and shows the expected tree

def test_corrupt_image(smoke_data, tmp_path):
    from wsss_nb.data import get_dataset
    root = _copy(smoke_data, tmp_path)
    ds = get_dataset('synthetic', root, 'train')
    bad = root/'JPEGImages'/f'{ds.ids[3]}.jpg'
    bad.write_bytes(b'this is not a jpeg')
    with pytest.raises(DataError) as e: ds[3]
    assert bad.name in str(e.value)

def test_mask_of_wrong_size(smoke_data, tmp_path):
    from wsss_nb.data import get_dataset
    root = _copy(smoke_data, tmp_path)
    ds = get_dataset('synthetic', root, 'train')
    m = root/'SegmentationClass'/f'{ds.ids[2]}.png'
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(m)
    with pytest.raises(DataError) as e: ds.load_raw(ds.ids[2])
    assert m.name in str(e.value) and '64' in str(e.value)

@pytest.mark.parametrize('name', ['resnet5O', 'vgg'])
def test_unknown_backbone(name):
    from wsss_nb.backbones import get_backbone
    with pytest.raises(ConfigError) as e: get_backbone(name)
    assert name in str(e.value) and 'resnet50' in str(e.value)

def test_unknown_method_and_refiner():
    from wsss_nb.cam import get_method
    from wsss_nb.refine import get_refiner
    with pytest.raises(ConfigError, match="Valid method names: .*cam"): get_method('cma')
    with pytest.raises(ConfigError, match="crf"): get_refiner('dcrf')

def test_unknown_config_key(tmp_path, capsys):
    from wsss_nb.cli import main
    cfg = tmp_path/'bad.yaml'
    cfg.write_text('run: x\ncls_epoch: 3\nseg_iterations: 5\n')
    assert main(['run', str(cfg)]) == 2
    err = capsys.readouterr().err
    assert 'cls_epoch' in err and 'seg_iterations' in err and 'bad.yaml' in err and 'cls_epochs' in err   # valid names listed

def test_bad_component_options_fail_before_any_stage(tmp_path, capsys):
    "A typo in method_args or refiner_args fails the run at once, naming the file and the valid names; nothing is written."
    from wsss_nb.cli import main
    cfg = tmp_path/'typo.yaml'
    cfg.write_text(f'run: x\nout_root: {tmp_path/"out"}\nmethod: mcis\nmethod_args: {{extra_bn: true}}\n'
                   'refiner: saliency\nrefiner_args: {variant: mcis, sal_cutt: 32}\n')
    assert main(['run', str(cfg)]) == 2
    err = capsys.readouterr().err
    assert 'typo.yaml' in err and 'sal_cutt' in err and 'sal_cut' in err.replace('sal_cutt', '')
    assert not (tmp_path/'out').exists()
    cfg.write_text(f'run: x\nout_root: {tmp_path/"out"}\nmethod: mcis\nmethod_args: {{extra_bm: true}}\n')
    assert main(['run', str(cfg)]) == 2
    err = capsys.readouterr().err
    assert 'extra_bm' in err and 'extra_bn' in err.replace('extra_bm', '') and not (tmp_path/'out').exists()

def test_bad_threshold_value(smoke_data, tmp_path):
    from wsss_nb.stages.make_pseudo import _bg_threshold
    with pytest.raises(ConfigError, match='bg_threshold'): _bg_threshold('high', None)
    with pytest.raises(ConfigError, match='bg_threshold'): _bg_threshold(1.5, None)

def test_cli_list(capsys):
    from wsss_nb.cli import main
    assert main(['list']) == 0
    out = capsys.readouterr().out
    for name in ('synthetic', 'voc12', 'efficientnet_lite0', 'resnet101', 'cam', 'crf'): assert name in out
