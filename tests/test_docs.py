"`wsss_nb.docs`: the static HTML site (one self-contained page per notebook, an index), the CLI parser, the README thumbnail and the links of nbs/index.ipynb."
import argparse, base64, io, json, re
from pathlib import Path
import nbformat, pytest
from nbformat.v4 import new_notebook, new_markdown_cell, new_code_cell, new_output
from PIL import Image
from conftest import ROOT
from wsss_nb.docs import build_docs, add_docs_parser, run_docs, execute_notebooks, network_loads, escaped_markup, find_mathjax, _exporter
from wsss_nb.core import ConfigError

def _png(colour=(255, 0, 0))->bytes:
    buf = io.BytesIO(); Image.new('RGB', (4, 4), colour).save(buf, format='PNG'); return buf.getvalue()

def _tiny_site(folder:Path)->Path:
    "index, a lesson with a PNG output and a Markdown image, a pipeline notebook; a draft and a checkpoint nbdev skips."
    nbs = folder/'nbs'; (nbs/'pipelines').mkdir(parents=True); (nbs/'images').mkdir(); (nbs/'.ipynb_checkpoints').mkdir()
    (nbs/'images'/'dot.png').write_bytes(_png((0, 0, 255)))
    png = base64.b64encode(_png()).decode()
    notebooks = {
        'index.ipynb': [new_markdown_cell('# tiny site\n> Start here.\n\n![pipeline](images/dot.png) then [the lesson](02_fig.ipynb).')],
        '02_fig.ipynb': [new_markdown_cell('# fig\n> A lesson with a figure, after [stage 1](pipelines/01_stage.ipynb#step).'),
                         new_code_cell('#| hide\nhidden_setup = 1'),
                         new_code_cell('fig', outputs=[new_output('display_data', data={'image/png': png, 'text/plain': '<Figure>'})])],
        'pipelines/01_stage.ipynb': [new_markdown_cell('# Stage 1\n## step\nBack to [fig](../02_fig.ipynb).'), new_code_cell('1 + 1')],
        '_draft.ipynb': [new_markdown_cell('# draft')],
        '.ipynb_checkpoints/02_fig-checkpoint.ipynb': [new_markdown_cell('# old')]}
    for name, cells in notebooks.items(): nbformat.write(new_notebook(cells=cells), nbs/name)
    return nbs

def test_build_docs_pages_images_and_index(tmp_path):
    nbs = _tiny_site(tmp_path)
    pages = build_docs(tmp_path/'site', nbs)
    site = tmp_path/'site'
    assert [p.relative_to(site).as_posix() for p in pages] == ['index.html', 'overview.html', '02_fig.html', 'pipelines/01_stage.html']
    assert sorted(p.relative_to(site).as_posix() for p in site.rglob('*.html')) == ['02_fig.html', 'index.html', 'overview.html', 'pipelines/01_stage.html']
    fig = (site/'02_fig.html').read_text()
    assert 'data:image/png;base64,' + base64.b64encode(_png()).decode() in fig                      # the output, inline
    assert 'hidden_setup' not in fig                                                                # `#| hide` cells are left out
    assert 'href="pipelines/01_stage.html#step"' in fig and 'href="index.html"' in fig               # notebook links -> pages; nav bar
    overview = (site/'overview.html').read_text()
    assert base64.b64encode(_png((0, 0, 255))).decode() in overview and 'src="images/dot.png"' not in overview   # Markdown image embedded
    assert 'href="02_fig.html"' in overview
    assert 'href="../02_fig.html"' in (site/'pipelines/01_stage.html').read_text()
    index = (site/'index.html').read_text()
    assert re.findall(r'href="([^"]+)"', index) == ['overview.html', '02_fig.html', 'pipelines/01_stage.html']
    assert '02 &middot; fig</a> &mdash; A lesson with a figure' in index and '<h2>Appendix: pipelines</h2>' in index and '<h2>The pipeline, stage by stage</h2>' in index

OFFLINE_LESSONS = ('01_data', '20_docs')   # real lessons with import cells (the imports block) and formulas or figures

def test_pages_render_offline(tmp_path):
    "Real lesson pages: the imports block is HTML (not `&lt;details` text) and nothing loads from a network (issue 27 point 8)."
    if find_mathjax() is None: pytest.skip('no local MathJax (pip install jupyter-server-mathjax): formulas would come from a CDN')
    nbs = tmp_path/'nbs'; nbs.mkdir()
    for name in ('index',) + OFFLINE_LESSONS: shutil.copy(ROOT/'nbs'/f'{name}.ipynb', nbs)
    shutil.copytree(ROOT/'nbs'/'images', nbs/'images')
    pages = build_docs(tmp_path/'site', nbs)
    assert len(pages) == 2 + len(OFFLINE_LESSONS)
    for page in pages:
        text = page.read_text()
        assert escaped_markup(text) == [], f'{page.name}: escaped markup shown as text: {escaped_markup(text)[:3]}'
        assert network_loads(text) == [], f'{page.name}: loads from a network: {network_loads(text)[:3]}'
    for name in OFFLINE_LESSONS:
        assert '<details class="wsss-imports"><summary>imports of this notebook</summary><pre>' in (tmp_path/'site'/f'{name}.html').read_text()

def test_offline_checks_catch_what_they_should():
    "The two checks above on hand-written pages: each catches its failure (nbconvert's default lab page has both)."
    assert network_loads('<script src="https://cdnjs.cloudflare.com/x.js"></script>') and network_loads('<link rel="stylesheet" href="http://a/b.css">')
    assert network_loads('const m = (await import("https://cdnjs.cloudflare.com/ajax/libs/mermaid/11/mermaid.esm.min.mjs")).default;')
    assert not network_loads('<script src="mathjax/MathJax.js?config=TeX"></script><a href="https://arxiv.org/abs/1">paper</a>')
    assert escaped_markup('&lt;details class="wsss-imports"&gt;&lt;summary&gt;imports&lt;/summary&gt;') and not escaped_markup('a &lt; b')
    from nbconvert import HTMLExporter
    from nbformat.v4 import new_raw_cell
    plain, _ = HTMLExporter(template_name='lab').from_notebook_node(new_notebook(cells=[
        new_raw_cell('<details class="wsss-imports"><summary>s</summary></details>', metadata={'raw_mimetype': 'text/html'})]))
    assert escaped_markup(plain) and network_loads(plain)

def test_missing_template_is_one_line():
    with pytest.raises(ConfigError) as e: _exporter('no_such_template')
    msg = str(e.value)
    assert '\n' not in msg and 'no_such_template' in msg and 'pip install --force-reinstall nbconvert' in msg and 'JUPYTER_PATH' in msg

def test_docs_cli_parser(tmp_path, capsys):
    p = argparse.ArgumentParser(prog='wsss-nb'); add_docs_parser(p.add_subparsers(dest='cmd'))
    a = p.parse_args(['docs', '--out', 'site', '--execute'])
    assert (a.cmd, a.out, a.execute, a.nbs, a.func) == ('docs', 'site', True, None, run_docs)
    assert p.parse_args(['docs']).out == '_docs' and not p.parse_args(['docs']).execute
    nbs = _tiny_site(tmp_path)
    assert run_docs(p.parse_args(['docs', '--out', str(tmp_path/'out'), '--nbs', str(nbs)])) == 0
    assert (tmp_path/'out'/'index.html').is_file() and '3 pages' in capsys.readouterr().out

@pytest.mark.slow
def test_execute_notebooks_like_nbdev_test(tmp_path):
    "Outputs stored, cwd = the notebook's folder, a `#| notest` cell left out with its stale output cleared."
    nb = tmp_path/'01_x.ipynb'
    nbformat.write(new_notebook(cells=[new_code_cell('import os\nprint(os.path.basename(os.getcwd()))'),
                                       new_code_cell('#| notest\nraise SystemExit("must not run")', outputs=[new_output('stream', name='stdout', text='stale')])],
                                metadata={'kernelspec': {'name': 'python3', 'display_name': 'python3', 'language': 'python'}}), nb)
    assert execute_notebooks([nb], timeout=120) == [nb.resolve()]
    cells = nbformat.read(nb, as_version=4).cells
    assert cells[0].outputs[0].text.strip() == tmp_path.name and cells[1].outputs == []

def test_readme_thumbnail():
    thumb = ROOT/'nbs'/'images'/'pipeline.png'
    assert thumb.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and thumb.stat().st_size < 100_000
    w, h = Image.open(thumb).size
    assert w <= 1200 and h <= 400

def test_index_notebook_links_exist():
    "Every notebook linked and every `wsss_nb.*` module named in nbs/index.ipynb exists."
    md = '\n'.join(''.join(c['source']) for c in json.loads((ROOT/'nbs'/'index.ipynb').read_text())['cells'] if c['cell_type'] == 'markdown')
    links = re.findall(r'\]\(([^)#]+\.ipynb)', md)
    assert len(links) > 20
    assert [l for l in links if not (ROOT/'nbs'/l).is_file()] == []
    mods = set(re.findall(r'`wsss_nb\.([\w.]+?)(?:\.\*)?`', md))
    assert {'cam', 'pseudo', 'deeplab', 'metrics', 'docs'} <= mods
    assert [m for m in mods if not ((ROOT/'wsss_nb'/m.replace('.', '/')).with_suffix('.py').is_file() or (ROOT/'wsss_nb'/m).is_dir())] == []

# --- the site in a real browser -------------------------------------------------------------------------------------
import html as _html, shutil, subprocess

def _chromium():
    for name in ('chromium', 'chromium-browser', 'google-chrome'):
        if (exe := shutil.which(name)): return exe
    return None

def _visible_text(dom:str)->str:
    "Text a reader sees: no scripts, styles, code listings or MathJax's own (hidden) copies of the TeX."
    dom = re.sub(r'(?is)<(script|style|pre|code|textarea)\b.*?</\1>', ' ', dom)
    dom = re.sub(r'(?is)<span class="MJX_Assistive_MathML".*?</span>', ' ', dom)
    return _html.unescape(re.sub(r'<[^>]+>', ' ', dom))

LESSONS_IN_BROWSER = ('06_pseudo', '11_sccam')   # two lessons with formulas and figures, plus the contents and start pages

@pytest.mark.slow
def test_site_in_headless_chromium(tmp_path):
    "The contents page, the start page and two lessons, after their JavaScript ran: math typeset (no raw `$...$`), images there, no error box."
    exe = _chromium()
    if exe is None: pytest.skip('no chromium on PATH (Debian: apt-get install -y chromium)')
    from wsss_nb.docs import find_mathjax
    if find_mathjax() is None: pytest.skip('no local MathJax (pip install jupyter-server-mathjax, or apt-get install libjs-mathjax)')
    nbs = tmp_path/'nbs'; nbs.mkdir()
    for name in ('index',) + LESSONS_IN_BROWSER: shutil.copy(ROOT/'nbs'/f'{name}.ipynb', nbs)
    shutil.copytree(ROOT/'nbs'/'images', nbs/'images')
    site = tmp_path/'site'; build_docs(site, nbs)
    for page in ['index.html', 'overview.html'] + [f'{n}.html' for n in LESSONS_IN_BROWSER]:
        r = subprocess.run([exe, '--headless', '--no-sandbox', '--disable-gpu', '--allow-file-access-from-files',
                            '--virtual-time-budget=20000', '--dump-dom', (site/page).as_uri()], capture_output=True, text=True, timeout=120)
        dom = r.stdout
        assert r.returncode == 0 and '</html>' in dom, f'{page}: chromium failed: {r.stderr[-500:]}'
        text = _visible_text(dom)
        raw = re.findall(r'\$\$?[^$\n]{1,120}\$\$?', text)
        assert not raw, f'{page}: formulas left as raw TeX: {raw[:3]}'
        assert 'Math Processing Error' not in dom and 'class="MathJax_Error"' not in dom, f'{page}: MathJax failed'
        for src in re.findall(r'<img\b[^>]*?\bsrc="([^"]*)"', dom):
            assert src.startswith('data:image/') or (site/page).parent.joinpath(src).is_file(), f'{page}: missing image {src[:80]}'
        assert 'data-mime-type="application/vnd.jupyter.stderr"' not in dom, f'{page}: a warning/stderr box is shown'
        assert not re.search(r'jp-OutputArea-output[^>]*>\s*<pre>\s*(<span[^>]*>)?\s*-{5,}', dom) and 'Traceback (most recent call last)' not in text, f'{page}: an error box'
        assert not re.search(r'\bIn\s*\[\s*\d*\s*\]:', text), f'{page}: an input prompt is shown'
        if page.startswith(LESSONS_IN_BROWSER):
            assert 'MathJax' in dom and re.search(r'class="(MathJax|MJX)', dom), f'{page}: no typeset formula'
            body = dom.index('<body')
            assert dom.index('<h1', body) < dom.index('jp-CodeCell', body), f'{page}: the title is not first'
            assert re.search(r'<img\b[^>]*src="data:image/png', dom), f'{page}: no figure'
