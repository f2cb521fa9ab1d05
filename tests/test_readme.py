"The README's generated parts are current: the methods table is `wsss-nb methods` (read from the method registry)."
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
