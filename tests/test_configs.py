"Every shipped config is runnable as far as can be checked without running it: known keys, methods, refiners, backbones."
from wsss_nb.core import load_config
from pathlib import Path
import pytest, yaml
from wsss_nb.cam import get_method, methods
from wsss_nb.refine import get_refiner
from wsss_nb.backbones import backbones
import wsss_nb.deeplab   # registers deeplab_resnet101 (the VOC configs' seg_backbone) as a backbone
from wsss_nb.cli import valid_keys

CONFIGS = sorted((Path(__file__).parents[1]/'configs').glob('*.yaml'))

def test_configs_exist():
    names = {p.stem for p in CONFIGS}
    for method in methods.names():   # every registered method, read from the registry
        assert f'voc12_{method}' in names, f'configs/voc12_{method}.yaml missing'
        assert (f'demo_{method}' if method != 'cam' else 'demo') in names, f'demo config for {method} missing'

@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_config_is_valid(path):
    cfg = load_config(path)
    assert not set(cfg) - valid_keys(), f'{path.name}: unknown keys {sorted(set(cfg) - valid_keys())}'
    assert cfg['run'] == path.stem, f'{path.name}: run {cfg["run"]!r} should be the file name, so runs do not collide'
    get_method(cfg.get('method', 'cam'), **cfg.get('method_args', {}))        # raises on an unknown method or argument
    get_refiner(cfg.get('refiner', 'crf'), **cfg.get('refiner_args', {}))     # likewise for the refiner
    for key in ('backbone', 'seg_backbone'):
        if key in cfg: assert cfg[key] in backbones.names(), f'{path.name}: {key} {cfg[key]!r} is not registered'

@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_config_passes_the_schema(path):
    "Every shipped config passes the schema's checks, registered names included (what `wsss-nb run` checks first)."
    from wsss_nb.cli import registry_names
    from wsss_nb.params import check_params
    check_params(load_config(path), str(path), registry_names())
