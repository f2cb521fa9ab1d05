"Bad input gives one clear error that names the file or key, and nothing already written is lost."
import os, shutil
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

# ---- issue 20: runs a user can trust ----
import json, subprocess, sys, yaml
from conftest import ROOT

def _smoke_cfg(tmp, data, **kw):
    cfg = dict(run='r', dataset='synthetic', data_root=str(data), make_data=False, out_root=str(tmp/'out'), device='cpu',
               cls_epochs=1, cls_batch_size=8, cls_crop_size=64, cam_scales=[1.0], seg_iters=2, seg_batch_size=4,
               seg_crop_size=64, seg_rates=[2, 4], **kw)
    f = tmp/'cfg.yaml'; f.write_text(yaml.safe_dump(cfg)); return f

@pytest.mark.slow
def test_diverged_stage_is_one_line_not_done_and_reruns(smoke_data, tmp_path, capsys):
    "Through the real CLI and papermill: a NaN loss stops the stage with one line naming the step, lr and key; no done marker."
    from wsss_nb.cli import main
    f = _smoke_cfg(tmp_path, smoke_data, cls_lr=1e30)
    assert main(['run', str(f), '--stages', '01_train_cls', '--quiet']) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip() and not l.startswith('[IPKernelApp]')]   # the kernel's own warning
    assert len(err) == 1, err                                   # one line, no papermill traceback
    nb = tmp_path/'out'/'r'/'notebooks'/'01_train_cls.failed.ipynb'
    assert err[0].startswith('wsss-nb: 01_train_cls failed: cls: loss became ') and 'at step ' in err[0], err[0]
    assert '(lr 1e+30): lower `cls_lr`' in err[0] and err[0].endswith(f'(notebook: {nb})')
    assert nb.is_file() and 'loss became' in nb.read_text()     # the traceback stays in the executed notebook
    assert not (tmp_path/'out'/'r'/'cls'/'_done.json').exists()
    f = _smoke_cfg(tmp_path, smoke_data, cls_lr=0.01)           # the fix: a rerun redoes the stage, no manual deletion
    assert main(['run', str(f), '--stages', '01_train_cls', '--quiet']) == 0
    assert (tmp_path/'out'/'r'/'cls'/'_done.json').is_file() and (tmp_path/'out'/'r'/'notebooks'/'01_train_cls.ipynb').is_file()

def test_diverged_segmentation_stops_early(smoke_data, tmp_path):
    import wsss_nb.stages as S
    kw = dict(run='r', out_root=tmp_path, data_root=smoke_data, labels='gt', iters=60, batch_size=4, crop_size=64, rates=[2],
              lr=1e30, device='cpu', progress=False)
    with pytest.raises(WSSSError, match=r'seg_gt: loss became .* at step \d+ \(lr 1e\+30\): lower `seg_lr`'):
        S.train_segmentation(**kw)
    assert not (tmp_path/'r'/'seg_gt'/'_done.json').exists() and not (tmp_path/'r'/'seg_gt'/'last.pt').exists()

def test_verbose_prints_the_traceback_then_the_line(tmp_path, capsys, monkeypatch):
    import wsss_nb.cli as cli
    def fail(*a, **k): raise cli.StageFailed('02_make_cams', 'IndexError', 'index 40 is out of bounds', tmp_path/'x.failed.ipynb', 'Traceback (most recent call last):\n  ...\nIndexError: index 40')
    monkeypatch.setattr(cli, 'run_pipeline', fail)
    f = tmp_path/'c.yaml'; f.write_text('run: x\n')
    assert cli.main(['run', str(f)]) == 2
    assert capsys.readouterr().err.strip() == f'wsss-nb: 02_make_cams failed: IndexError: index 40 is out of bounds (notebook: {tmp_path/"x.failed.ipynb"})'
    assert cli.main(['run', str(f), '--verbose']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith('Traceback') and err[-1].startswith('wsss-nb: 02_make_cams failed: IndexError')

@pytest.mark.slow
@pytest.mark.parametrize('module', ['wsss_nb', 'wsss_nb.cli'])
def test_python_dash_m_is_the_cli(module, tmp_path):
    p = subprocess.run([sys.executable, '-m', module, 'list'], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0 and 'methods:' in p.stdout, p.stderr
    p = subprocess.run([sys.executable, '-m', module, 'run', str(tmp_path/'missing.yaml')], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2 and 'missing.yaml' in p.stderr

def test_nested_override_merges(tmp_path, monkeypatch, capsys):
    "`method_args.rounds=2` (or a dict) on the command line keeps the config's other method_args; `:=` replaces."
    import wsss_nb.cli as cli
    seen = {}
    monkeypatch.setattr(cli, 'run_pipeline', lambda cfg, **k: seen.update(cfg) or {})
    f = tmp_path/'c.yaml'; f.write_text('run: x\nmethod: sccam\nmethod_args: {rounds: 4, k: 10}\n')
    assert cli.main(['run', str(f), 'method_args.rounds=2']) == 0 and seen['method_args'] == {'rounds': 2, 'k': 10}
    assert cli.main(['run', str(f), 'method_args={rounds: 3}']) == 0 and seen['method_args'] == {'rounds': 3, 'k': 10}
    assert cli.main(['run', str(f), 'method_args:={rounds: 3}']) == 0 and seen['method_args'] == {'rounds': 3}
    capsys.readouterr()
    assert cli.main(['params']) == 0 and 'key.sub=value' in capsys.readouterr().out   # documented in `wsss-nb params`

@pytest.mark.parametrize('override, says', [('seg_iters=abc', "seg_iters='abc' (expected an integer"),
                                            ('cam_scales=0.5', 'cam_scales=0.5 (expected a list'),
                                            ('cls_batch_size=-8', 'cls_batch_size=-8 (expected > 0)'),
                                            ('cls_lr=0', 'cls_lr=0 (expected > 0)'),
                                            ('seg_msc=maybe', "seg_msc='maybe' (expected true/false")])
def test_wrong_types_and_ranges_fail_before_any_stage(override, says, tmp_path, capsys):
    from wsss_nb.cli import main
    f = tmp_path/'c.yaml'; f.write_text(f'run: x\nout_root: {tmp_path/"out"}\n')
    assert main(['run', str(f), override]) == 2
    err = capsys.readouterr().err
    assert says in err and 'c.yaml' in err, err
    assert not (tmp_path/'out').exists()                 # nothing ran

def test_every_shipped_config_passes_the_type_check():
    from wsss_nb.cli import check_types, _all_defaults
    from wsss_nb.core import load_config
    for f in sorted((ROOT/'configs').glob('*.yaml')): check_types(load_config(f), _all_defaults(), str(f))

@pytest.mark.slow
def test_second_run_on_a_locked_folder_fails_at_once(tmp_path, capsys, monkeypatch):
    "A live process holding out_root/run: the CLI fails before any stage, naming it; a dead holder's lock is taken over."
    import socket, wsss_nb.cli as cli
    ran = []
    monkeypatch.setattr(cli, '_execute', lambda nb, *a, **k: ran.append(nb))
    f = tmp_path/'c.yaml'; f.write_text(f'run: x\nout_root: {tmp_path/"out"}\n')
    (tmp_path/'out'/'x').mkdir(parents=True)
    other = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        (tmp_path/'out'/'x'/'.lock').write_text(json.dumps(dict(pid=other.pid, host=socket.gethostname())))
        assert cli.main(['run', str(f), '--stages', '01_train_cls']) == 2
        err = capsys.readouterr().err
        assert f'in use by process {other.pid}' in err and str(tmp_path/'out'/'x') in err and ran == []
    finally: other.kill(); other.wait()
    assert cli.main(['run', str(f), '--stages', '01_train_cls']) == 0     # its process is gone: the lock is taken over
    assert ran == ['01_train_cls'] and not (tmp_path/'out'/'x'/'.lock').exists()   # and released at the end

def test_replaced_weight_file_reruns_the_stage(smoke_data, tmp_path, capsys):
    "The classifier's fingerprint holds the weight file's content: a new file behind the same path reruns it."
    import torch
    import wsss_nb.stages as S
    from wsss_nb.backbones import get_backbone
    w = tmp_path/'lite0.pth'
    torch.save(get_backbone('efficientnet_lite0', pretrained='imagenet').state_dict(), w)
    kw = dict(run='r', out_root=tmp_path/'out', data_root=smoke_data, epochs=1, batch_size=8, crop_size=64, pretrained=str(w),
              device='cpu', progress=False)
    S.train_classifier(**kw); capsys.readouterr()
    S.train_classifier(**kw); assert 'already done' in capsys.readouterr().out
    sd = torch.load(w); k = next(k for k, v in sd.items() if v.is_floating_point()); sd[k] = sd[k] + 0.01
    torch.save(sd, w)                                           # same path, other weights
    st = S.train_classifier(**kw)
    assert 'already done' not in capsys.readouterr().out and st.done

def test_weight_files_checked_before_stage_01(tmp_path, capsys):
    "A missing weight file, or one whose keys do not fit the backbone, fails before any stage, naming the key and the file."
    import torch
    from wsss_nb.cli import main
    torch.save({'conv.weight': torch.zeros(1)}, tmp_path/'wrong.pth')
    for line, says in ((f'pretrained: {tmp_path/"gone.pth"}', 'pretrained='),
                       (f'seg_pretrained: {tmp_path/"wrong.pth"}', "does not load into seg_backbone='efficientnet_lite0'"),
                       (f'method: sccam\nmethod_args: {{round0_weights: {tmp_path/"r38.pth"}}}', 'method_args.round0_weights=')):
        f = tmp_path/'c.yaml'; f.write_text(f'run: x\nout_root: {tmp_path/"out"}\n{line}\n')
        assert main(['run', str(f)]) == 2
        err = capsys.readouterr().err
        assert says in err and 'c.yaml' in err, err
        assert not (tmp_path/'out').exists()

def test_deeplab_pytorch_files_checked_before_stage_01(tmp_path, capsys):
    "`seg_backbone: deeplab_resnet101`: deeplab-pytorch's COCO init layout (no `base.`, a 91-class `fc`, no ASPP) passes the check;"
    " a body key missing from it fails before any stage, naming `seg_pretrained` and the file."
    import torch
    from pathlib import Path
    from wsss_nb.cli import main, check_weight_files
    from wsss_nb.core import ConfigError
    rows = [l.split() for l in (Path(__file__).parent/'fixtures'/'deeplab_pytorch_resnet101_msc.txt').read_text().splitlines() if l.strip()]
    sd = {k[len('base.'):]: torch.zeros([int(d) for d in s.split('x')]) if s != '-' else torch.tensor(0)   # '-': a scalar counter
          for k, s in rows if not k.startswith('base.aspp.')}
    sd['fc.weight'], sd['fc.bias'] = torch.zeros(91, 2048, 1, 1), torch.zeros(91)
    torch.save(sd, tmp_path/'deeplabv1_resnet101-coco.pth')
    params = dict(backbone='efficientnet_lite0', pretrained=None, seg_backbone='deeplab_resnet101', seg_output_stride=8,
                  seg_rates=[6, 12, 18, 24], seg_pretrained=str(tmp_path/'deeplabv1_resnet101-coco.pth'))
    check_weight_files(params)   # fits: no error
    del sd['layer3.block1.reduce.conv.weight']; torch.save(sd, tmp_path/'cut.pth')
    try: check_weight_files({**params, 'seg_pretrained': str(tmp_path/'cut.pth')}, where='c.yaml'); raise AssertionError('no error')
    except ConfigError as e: assert 'seg_pretrained=' in str(e) and 'cut.pth' in str(e) and 'layer3.block1.reduce.conv.weight' in str(e), e

def test_label_cache_is_keyed_by_mask_content(smoke_data, tmp_path):
    "The image-level label cache is written, then a mask is edited to class 40: the next load decodes it again and fails naming the file."
    from wsss_nb.data import get_dataset
    from wsss_nb.core import load_json
    root = _copy(smoke_data, tmp_path)
    ids = get_dataset('synthetic', root, 'train').ids
    m = root/'SegmentationClass'/f'{ids[1]}.png'
    mk = np.array(Image.open(m)); Image.fromarray(mk).save(m, compress_level=0)   # stored uncompressed: an edit keeps the size
    ds = get_dataset('synthetic', root, 'train')
    cache = root/'cls_labels_SegmentationClass.json'
    assert cache.is_file() and set(load_json(cache)) >= set(ds.ids)
    st = m.stat()
    mk[0, 0] = 40; Image.fromarray(mk).save(m, compress_level=0)
    os.utime(m, ns=(st.st_atime_ns, st.st_mtime_ns))        # the old mtime restored (as `cp -p` or an unpacked archive would)
    assert m.stat().st_size == st.st_size and m.stat().st_mtime_ns == st.st_mtime_ns   # only the content tells
    with pytest.raises(DataError) as e: get_dataset('synthetic', root, 'train')
    assert str(m) in str(e.value) and '40' in str(e.value), e.value

def test_damaged_finished_stage_is_named_and_redone(smoke_data, tmp_path, capsys):
    "A CAM deleted from the finished `cams` stage: the next stage names the file and the remedy; rerunning `cams` redoes it."
    import wsss_nb.stages as S
    kw = dict(run='r', out_root=tmp_path/'out', data_root=smoke_data, dataset='synthetic', device='cpu', progress=False)
    S.train_classifier(epochs=1, batch_size=8, crop_size=64, max_images=4, **kw)
    cams = S.make_cams(scales=[1.0], max_images=4, **kw)
    gone = sorted(cams.path.glob('*.npz'))[1]; gone.unlink()
    with pytest.raises(DataError) as e: S.make_pseudo_labels(bg_threshold=0.3, max_images=4, **kw)
    msg = str(e.value)
    assert f'cams/{gone.name} is missing from the finished stage cams/' in msg and "rerun stage 'cams'" in msg, msg
    capsys.readouterr()
    again = S.make_cams(scales=[1.0], max_images=4, **kw)             # not "already done": the missing CAM is written again
    assert 'already done' not in capsys.readouterr().out and again.done and gone.is_file()
    assert S.make_pseudo_labels(bg_threshold=0.3, max_images=4, **kw).done

def test_saliency_and_split_files_checked_before_stage_01(smoke_data, tmp_path, capsys):
    "A refiner or method that needs saliency without maps, or a split file that is not there: exit 2 before any stage, one line naming the key."
    from wsss_nb.cli import main
    root = _copy(smoke_data, tmp_path)
    shutil.rmtree(root/'Saliency')
    (tmp_path/'sal').mkdir()
    base = f'run: x\nout_root: {tmp_path/"out"}\ndataset: synthetic\nmake_data: false\ndata_root: {root}\n'
    for line, says in (('refiner: saliency', "saliency_dir=None: refiner 'saliency' needs saliency maps"),
                       (f'method: l2g\nrefiner: none\nsaliency_dir: {tmp_path/"nope"}', "saliency_dir=" + str(tmp_path/'nope') + ": folder not found; method 'l2g'"),
                       (f'refiner: saliency\nsaliency_dir: {tmp_path/"sal"}', "is missing (16 of 16 ids of train_split='train')"),
                       ('train_split: trian', "train_split='trian': split file"),
                       ('eval_split: test', "eval_split='test': split file")):
        f = tmp_path/'c.yaml'; f.write_text(base + line + '\n')
        assert main(['run', str(f)]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and 'c.yaml' in err and len(err.splitlines()) == 1, err
        assert not (tmp_path/'out').exists()

def test_mcis_largefov_init_checked_before_stage_01(tmp_path):
    "`voc12_mcis`'s network: a LargeFOV state dict (what `wsss-nb convert caffemodel … --net largefov` writes) passes; an ASPP file does not."
    import torch
    from wsss_nb.cli import check_weight_files
    from wsss_nb.core import ConfigError
    from wsss_nb.deeplab import DeepLabLargeFOVResNet101, DeepLabV2ResNet101
    torch.save(DeepLabLargeFOVResNet101(21).state_dict(), tmp_path/'mcis_dpl_init.pth')
    params = dict(backbone='vgg16', pretrained=None, seg_backbone='mcis_largefov_resnet101', seg_output_stride=8, seg_rates=[12],
                  seg_pretrained=str(tmp_path/'mcis_dpl_init.pth'))
    check_weight_files(params)
    sd = DeepLabV2ResNet101(21).state_dict(); sd['layer2.block1.conv3x3.conv.weight'] = torch.zeros(1)
    torch.save(sd, tmp_path/'aspp.pth')
    try: check_weight_files({**params, 'seg_pretrained': str(tmp_path/'aspp.pth')}); raise AssertionError('no error')
    except ConfigError as e: assert 'seg_pretrained=' in str(e) and 'aspp.pth' in str(e), e

# ---- devices checked before stage 01 (issue 20, point 6) ----
@pytest.mark.parametrize('device, gpus, says', [
    ('cuda', 0, "device='cuda' but CUDA is not available here"),
    ('cuda:1', 0, "device='cuda:1' but CUDA is not available here"),
    ('cuda:2', 2, "device='cuda:2' but this machine has 2 CUDA device(s) (cpu, cuda:0, cuda:1): pick an index below 2"),
    ('gpu', 0, "device='gpu' is not a device (expected 'auto', 'cpu', 'cuda' or 'cuda:N'; this machine has: cpu)"),
    ('cuda:x', 1, "device='cuda:x' is not a device"),
])
def test_device_checked_before_stage_01(device, gpus, says, tmp_path, capsys, monkeypatch):
    "A device the machine does not have: one line naming the key, the value and what is there, before any stage runs."
    import torch, wsss_nb.cli as cli
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: gpus)
    ran = []; monkeypatch.setattr(cli, '_execute', lambda nb, *a, **k: ran.append(nb))
    f = tmp_path/'c.yaml'; f.write_text(f'run: x\nout_root: {tmp_path/"out"}\n')
    assert cli.main(['run', str(f), f'device={device}']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f'wsss-nb: error: {f}: ') and says in err[0], err
    assert ran == [] and not (tmp_path/'out').exists()

def test_good_devices_pass(monkeypatch):
    import torch
    from wsss_nb.cli import check_device
    for d in ('auto', 'cpu'): check_device({'device': d})
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True); monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    for d in ('cuda', 'cuda:0', 'cuda:1'): check_device({'device': d})
