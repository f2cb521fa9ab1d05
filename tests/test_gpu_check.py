"""`benchmarks/gpu_check.sh` (issue 26): the one-call GPU check cannot fail on a typo. Every flag it passes to a benchmark
exists there, every step writes one of at most 8 files, and bad arguments stop it with one line before anything runs."""
import re, subprocess
import pytest
from conftest import ROOT

SCRIPT = ROOT/'benchmarks'/'gpu_check.sh'

def _flags(py:str)->set:
    "The --options a benchmark script's argparse declares."
    return set(re.findall(r"add_argument\('(--[a-z0-9-]+)'", (ROOT/'benchmarks'/py).read_text()))

def _steps()->list:
    "(step name, file, command text with its continuation lines) of every `step` call in the script."
    text = SCRIPT.read_text().replace('\\\n', ' ')
    return re.findall(r'^step (\w+) \d+ (\S+) (.*)$', text, re.M)

def test_every_benchmark_flag_exists():
    steps = _steps()
    assert {s for s, _, _ in steps} == {'env', 'pipeline_voc', 'pipeline_demo', 'demo', 'cam', 'crf', 'demo_det'}
    for name, _, cmd in steps:
        if m := re.search(r'benchmarks/(bench_\w+\.py)', cmd):
            used = set(re.findall(r'(?<![\w-])(--[a-z][a-z0-9-]*)', cmd))
            assert used <= _flags(m.group(1)), (name, used - _flags(m.group(1)))

def test_outputs_fit_the_device_tool():
    "At most 8 files come back from $OUT, named in letters, digits, '.', '_' and '-'."
    files = {f for _, f, _ in _steps()} | {'summary.md'}
    assert len(files) <= 8 and all(re.fullmatch(r'[\w.-]+', f) for f in files), files

@pytest.mark.slow
def test_bad_arguments_stop_before_any_step(tmp_path):
    for args, says in ((['--device', 'tpu'], '--device must be cuda or cpu'), (['--nope'], 'unknown argument --nope')):
        r = subprocess.run(['bash', str(SCRIPT), *args], capture_output=True, text=True, env={'OUT': str(tmp_path), 'PATH': '/usr/bin:/bin'})
        assert r.returncode == 2 and says in r.stderr and not any(tmp_path.iterdir()), (r.returncode, r.stderr)
    assert subprocess.run(['bash', '-n', str(SCRIPT)]).returncode == 0
