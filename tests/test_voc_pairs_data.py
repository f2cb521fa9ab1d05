"""The 9 real VOC pairs the lessons read live in the repository (nbs/data/voc12-pairs9), unchanged, and no lesson reads
outside the repository (issue 27 point 6): a fresh clone re-executes the lessons on the same files."""
import hashlib, json, re
from pathlib import Path
import pytest
from conftest import ROOT, PAIRS

def _sums()->dict:
    "{relative path: sha256} from the folder's SHA256SUMS (`sha256sum` format: '<hex>  ./<path>')."
    out = {}
    for line in (PAIRS/'SHA256SUMS').read_text().splitlines():
        h, name = line.split(maxsplit=1)
        out[name.removeprefix('./')] = h
    return out

def test_pairs_checksums():
    "Every file matches its sha256, and SHA256SUMS lists every file of the folder (nothing added, nothing missing)."
    sums = _sums()
    files = sorted(str(p.relative_to(PAIRS)) for p in PAIRS.rglob('*') if p.is_file() and p.name != 'SHA256SUMS')
    assert sorted(sums) == files, f"SHA256SUMS lists {sorted(set(sums) ^ set(files))} differently from the folder"
    bad = [f for f in files if hashlib.sha256((PAIRS/f).read_bytes()).hexdigest() != sums[f]]
    assert not bad, f"{PAIRS}: files changed since SHA256SUMS was written: {bad}"

def test_pairs_are_nine_image_mask_pairs():
    ids = (PAIRS/'ImageSets'/'Segmentation'/'trainval.txt').read_text().split()
    assert len(ids) == 9
    for i in ids: assert (PAIRS/'JPEGImages'/f'{i}.jpg').is_file() and (PAIRS/'SegmentationClass'/f'{i}.png').is_file()
    assert sum(p.stat().st_size for p in PAIRS.rglob('*') if p.is_file()) < 2_000_000     # about 1 MB: no lossless originals

def test_checksum_check_fails_on_a_changed_file(tmp_path):
    "The check above can fail: a one-byte change of a copy gives another sha256."
    f = PAIRS/'SegmentationClass'/'2007_000033.png'
    b = bytearray(f.read_bytes()); b[-1] ^= 1
    assert hashlib.sha256(bytes(b)).hexdigest() != _sums()['SegmentationClass/2007_000033.png']

_OUTSIDE = re.compile(r"\.\./shared|/shared/|\.\./\.\./")

def outside_reads(src:str)->list:
    "Lines of a cell's source that name a path outside the repository (the shared data folder, or above nbs/'s parent)."
    return [l for l in src.splitlines() if _OUTSIDE.search(l)]

def test_outside_reads_examples():
    assert outside_reads("voc_dir = Path('../../shared/data/voc12-pairs9')")
    assert outside_reads("root = '/work/shared/data/voc12-gt-masks'")
    assert not outside_reads("voc_dir = Path('data/voc12-pairs9')  # the shared settings")

def test_no_notebook_reads_outside_the_repository():
    "No notebook's source (code or markdown) names ../shared, /shared/ or a path above the repository."
    bad = {}
    for nb in sorted((ROOT/'nbs').rglob('*.ipynb')):
        if '.ipynb_checkpoints' in nb.parts: continue
        for c in json.loads(nb.read_text())['cells']:
            hits = outside_reads(''.join(c['source']))
            if hits: bad.setdefault(str(nb.relative_to(ROOT)), []).extend(hits)
    assert not bad, f"notebooks that read outside the repository: {bad}"
