"The README's generated parts are current: the methods table is `wsss-nb methods` (read from the method registry)."
import pytest
from conftest import ROOT
from wsss_nb.cli import methods_table
from wsss_nb.cam import method_names

def test_readme_methods_table_is_current():
    readme = (ROOT/'README.md').read_text()
    assert methods_table(ROOT) in readme, 'README.md: the methods table is stale; paste the output of `wsss-nb methods`'

def test_readme_names_every_method_recipe():
    readme = (ROOT/'README.md').read_text()
    for m in method_names(): assert f'`method: {m}`' in readme or m == 'cam', f'README.md has no section for method {m}'

def test_readme_reproducing_section_is_generated():
    "The authors' and measured figures in 'Reproducing the papers' are the blocks `wsss-nb reproduce METHOD --readme` renders (from AUTHORS and benchmarks/reproduce/)."
    from wsss_nb.reproduce import readme_problems
    problems = readme_problems((ROOT/'README.md').read_text(), root=ROOT)
    assert not problems, 'README.md, section "Reproducing the papers":\n' + '\n'.join(problems)

def _demo_script():
    import importlib.util
    spec = importlib.util.spec_from_file_location('demo_lesson_results', ROOT/'benchmarks'/'demo_lesson_results.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod

def test_readme_demo_table_is_the_committed_record():
    "README's demo table is generated from benchmarks/results/demo_lesson.json, the record the pipeline lessons print (issue 27 point 7)."
    import json
    m = _demo_script()
    info = json.loads((ROOT/'benchmarks'/'results'/'demo_lesson.json').read_text())
    block = m.readme_block(info)
    assert block in (ROOT/'README.md').read_text(), \
        'README.md: the demo table is not the committed record; run `python benchmarks/demo_lesson_results.py --readme`'
    s = info['scores']                                      # the row holds the record's numbers, as 09_stages prints them
    assert f"**{100*s['seg_miou']:.1f}** ({100*s['seg_miou_no_crf']:.1f}) | {100*s['seg_gt_miou']:.1f} ({100*s['seg_gt_miou_no_crf']:.1f})" in block

def test_readme_demo_block_update(tmp_path):
    "`--readme` rewrites only the block; a README without the block is one clear error."
    import json
    m = _demo_script()
    info = json.loads((ROOT/'benchmarks'/'results'/'demo_lesson.json').read_text())
    f = tmp_path/'README.md'
    f.write_text(f"before\n{m.README_BEGIN}\n| 0 | stale | 62.6 |\n{m.README_END}\nafter\n")
    assert m.update_readme(f, info) and not m.update_readme(f, info)
    t = f.read_text()
    assert t.startswith('before\n') and t.endswith('\nafter\n') and 'stale' not in t and m.readme_block(info) in t
    f.write_text('no block')
    with pytest.raises(SystemExit, match='expected one demo block'): m.update_readme(f, info)
