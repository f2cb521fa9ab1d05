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
