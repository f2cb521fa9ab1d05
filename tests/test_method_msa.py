"MSA (method 'msa') runs through the classifier (SCN training included), CAM and pseudo-label stages; its saliency version steps."
import numpy as np
from conftest import assert_cam_files, assert_label_files
import torch
import wsss_nb.stages as S
from wsss_nb.cam import get_method
from wsss_nb.core import load_json
from wsss_nb.data import get_dataset
from wsss_nb.backbones import get_backbone

COMMON = dict(run='msa', dataset='synthetic', device='cpu', progress=False, max_images=8)   # 8 of the 16 images: CPU time

def test_msa_pipeline_smoke(smoke_data, tmp_path):
    out = tmp_path/'out'
    cls = S.train_classifier(out_root=out, data_root=smoke_data, method='msa', method_args={'scn_epochs': 1, 'scn_batch_size': 8},
                             backbone='efficientnet_lite0', pretrained=None, epochs=1, batch_size=4, crop_size=48, **COMMON)
    hist = load_json(cls.path/'history.json')
    assert len(hist) == 8//4 and all(np.isfinite(h['loss']) and np.isfinite(h['cls']) and np.isfinite(h['ipc']) for h in hist)
    assert (cls.path/'scn.pt').is_file()                                # the trained SCN is kept for resumes
    ck = torch.load(cls.path/'model.pt', map_location='cpu', weights_only=False)
    assert bool(ck['model']['scn_trained'])                              # ... and travels in the classifier's state_dict
    cams = S.make_cams(out_root=out, data_root=smoke_data, scales=[1.0], **COMMON)
    ds = get_dataset('synthetic', smoke_data, 'train'); ds.ids = ds.ids[:8]
    assert len(list(cams.path.glob('*.npz'))) == 8
    assert_cam_files(cams.path, ds)
    pseudo = S.make_pseudo_labels(out_root=out, data_root=smoke_data, refiner='none', bg_threshold=0.3, **COMMON)
    assert_label_files(pseudo.path/'labels', ds)

def test_msa_saliency_version_steps():
    torch.manual_seed(0)
    wsss = get_method('msa', ipc_target='saliency')
    assert wsss.needs_saliency and not get_method('msa').needs_saliency
    model = wsss.build_model(get_backbone('efficientnet_lite0', pretrained=None, output_stride=16), 8).train()
    opt, sched = wsss.optimizer(model, lr=1e-3, total_steps=3, steps_per_epoch=1)
    labels = torch.zeros(2, 8); labels[:, 0] = 1; labels[1, 3] = 1
    sal = torch.zeros(2, 40, 40); sal[:, 8:30, 10:28] = 1                 # 40 px: padded to 48 inside the method
    before = model.classifier.weight.detach().clone()
    out = wsss.loss(model, {'image': torch.randn(2, 3, 40, 40), 'label': labels, 'saliency': sal})
    assert set(out) == {'loss', 'cls', 'ipc'} and torch.isfinite(out['loss']) and float(out['ipc']) >= 0
    opt.zero_grad(); out['loss'].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), wsss.clip_grad_norm); opt.step(); sched.step()
    assert not torch.equal(before, model.classifier.weight)
    assert all(p.grad is None for p in model.scn.parameters())           # the SCN stays frozen
