"Shared fixtures: a smoke-sized synthetic dataset and a scratch output root."
import os
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ROOT/'nbs'/'pipelines'
SHARED = ROOT.parent/'shared'/'data'

# Tests run on CPU with few threads, like CI (2 cores).
os.environ.setdefault('OMP_NUM_THREADS', '2')

@pytest.fixture(scope='session')
def smoke_data(tmp_path_factory):
    "A tiny synthetic dataset (16 train / 6 val images of 64 px), generated once per session."
    from wsss_nb.synthetic import make_synthetic
    return make_synthetic(tmp_path_factory.mktemp('data')/'synthetic', n_train=16, n_val=6, size=64, seed=0)
