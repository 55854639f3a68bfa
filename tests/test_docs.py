"The docs site: built from the notebooks (nbdev-proc-nbs + smalldocs) and opened in headless Chromium."
import subprocess, threading, functools, json, shutil
from http.server import ThreadingHTTPServer, SimpleHTTPRequestHandler
from pathlib import Path
import pytest

root = Path(__file__).resolve().parents[1]
site = root/'_proc'/'_docs'
nbs = sorted(p.stem for p in (root/'nbs').glob('*.ipynb'))

@pytest.fixture(scope='module')
def built():
    "Build the site once per test module; on failure show the end of what the build printed."
    r = subprocess.run(['bash', str(root/'tools'/'build_docs.sh')], capture_output=True, text=True)
    assert r.returncode == 0, f"tools/build_docs.sh failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}"
    return site

@pytest.fixture(scope='module')
def url(built):
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    srv = ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown()

@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    for exe in ('chromium', 'chromedriver'):
        assert shutil.which(exe), f"{exe} not found: `apt-get install -y chromium chromium-driver` (tools/test.sh does)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which('chromium')
    for a in ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
              '--disable-sync', '--disable-dev-shm-usage', '--window-size=1280,1600',
              f'--user-data-dir={tmp_path_factory.mktemp("chrome")}']: opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(shutil.which('chromedriver')), options=opts)
    yield drv
    drv.quit()

def test_every_notebook_has_a_page(built):
    missing = [n for n in nbs if not (site/f'{n}.html').exists()]
    assert not missing, f"no page for {missing}"

def _nav_targets(browser):
    links = browser.find_elements('css selector', '#quarto-sidebar a, nav a')
    return {Path(a.get_attribute('href').split('#')[0]).stem for a in links if a.get_attribute('href')}

def _check_page(browser, url, name, title):
    from selenium.webdriver.common.by import By
    browser.get(f'{url}/{name}.html')
    h1 = browser.find_element(By.TAG_NAME, 'h1').text
    assert title in h1, f"{name}: title {h1!r}"
    figs = [i for i in browser.find_elements(By.TAG_NAME, 'img')
            if i.get_attribute('src').startswith('data:image/png') and browser.execute_script('return arguments[0].naturalWidth', i) > 50]
    assert figs, f"{name}: no rendered figure"
    missing = set(nbs) - _nav_targets(browser)
    assert not missing, f"{name}: navigation lacks links to {missing}"
    return browser

def test_home_page(browser, url):
    from selenium.webdriver.common.by import By
    browser.get(f'{url}/index.html')
    assert 'fastai_det' in browser.find_element(By.TAG_NAME, 'h1').text
    assert 'fastai-det' in browser.page_source
    missing = set(nbs) - _nav_targets(browser)
    assert not missing, f"home: navigation lacks links to {missing}"

def test_lesson_page(browser, url):
    _check_page(browser, url, '00_boxes', 'Boxes')
    # the API reference (show_doc) is rendered
    assert 'box_iou' in browser.page_source and 'def' in browser.page_source
    browser.save_screenshot(str(site/'_screenshot_00_boxes.png'))

def _links(html:str)->list:
    "Every (tag, url) of `<a href>`, `<img src>`, `<script src>` and `<link href>` in `html`"
    from html.parser import HTMLParser
    class P(HTMLParser):
        def __init__(s): super().__init__(); s.out = []
        def handle_starttag(s, tag, attrs):
            a = dict(attrs)
            for t,k in (('a','href'), ('img','src'), ('script','src'), ('link','href')):
                if tag == t and a.get(k): s.out.append((tag, a[k]))
    p = P(); p.feed(html); return p.out

def test_every_link_and_image_of_the_site_resolves(built):
    "Walk every page: each local link reaches a file and, with an anchor, an element of that id; nothing is fetched from the web"
    import re
    from nbdev.config import get_config
    c = get_config(); host = c.doc_host.rstrip('/') + '/' + c.doc_baseurl.strip('/') + '/'
    pages = {f.name: f.read_text() for f in site.glob('*.html')}
    ids = {k: set(re.findall(r'\bid="([^"]+)"', v)) for k,v in pages.items()}
    dead, remote, n = [], [], 0
    for name, html in pages.items():
        for tag, u in _links(html):
            n += 1
            if u.startswith(host): dead.append((name, u, 'absolute link to the doc host')); continue
            if u.startswith(('http://', 'https://', '//')):
                if tag in ('script', 'link', 'img'): remote.append((name, u))      # fetched when the page opens
                continue
            if u.startswith(('mailto:', 'data:', 'javascript:')): continue
            path, _, anchor = u.partition('#')
            target = (site/name).parent/path if path else site/name
            if not target.exists(): dead.append((name, u, 'no such file')); continue
            if anchor and target.suffix == '.html' and anchor not in ids[target.name]: dead.append((name, u, 'no such anchor'))
    assert n > 500, n
    assert not dead, f"{len(dead)} dead links, e.g. {dead[:5]}"
    assert not remote, f"pages load from the web: {remote[:5]}"

def test_no_stylesheet_loads_from_the_web(built):
    "The pages' CSS fetches nothing from the web either (the vendored themes `@import` Google's fonts): `@import` and `url()` are local"
    import re
    remote = [(str(f.relative_to(site)), m[0][:80]) for f in site.rglob('*.css')
              for m in re.finditer(r'(?:@import\s+|url\()\s*["\']?(?:https?:)?//[^)"\';\s]+', f.read_text())]
    assert not remote, f"stylesheets load from the web: {remote[:5]}"

def test_pages_under_nbdev_names(built):
    "The module docstrings' `Docs:` lines name nbdev's pages (`boxes.html.md`): the site has them"
    import re, fastai_det
    pkg = Path(fastai_det.__file__).parent
    names = [m[1] for f in pkg.glob('*.py') for m in [re.search(r'^Docs: \S+/([\w.]+\.html\.md)', f.read_text(), re.M)] if m]
    assert len(names) >= 12
    missing = [o for o in names if not (site/o).exists() or not (site/o[:-3]).exists()]
    assert not missing, missing
    assert '# Boxes' in (site/'boxes.html.md').read_text()

CLIPPED = """
const out = [];
for (const e of document.querySelectorAll('body *')) {
  const s = getComputedStyle(e);
  if (['hidden', 'clip'].includes(s.overflowX) && e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0)
    out.push(e.tagName.toLowerCase() + '.' + (e.className || '') + ': ' + (e.textContent || '').trim().slice(0, 60));
}
return [document.documentElement.scrollWidth, window.innerWidth, out.slice(0, 5), out.length];
"""

def test_pages_fit_1280_px(browser, url):
    "No page is wider than a 1280-px window, and no element cuts its content off (`overflow-x: hidden/clip`): code and signatures wrap or scroll"
    wide, clipped = {}, {}
    for name in nbs:
        browser.get(f'{url}/{name}.html')
        w, inner, cut, n = browser.execute_script(CLIPPED)
        if w > inner: wide[name] = w
        if n: clipped[name] = (n, cut)
    assert not wide, f"pages wider than the {inner}-px window: {wide}"
    assert not clipped, f"elements whose content is cut off: {clipped}"

def test_previous_next_and_repository_links(built):
    "Every lesson page links to the previous and next pages of the sidebar, to the repository, and has a favicon"
    import re
    order = [l.strip()[2:] for l in (root/'nbs'/'sidebar.yml').read_text().splitlines() if l.strip().startswith('- ') and l.strip().endswith('.ipynb')]
    order = [Path(o).stem for o in order]
    assert len(order) >= 15, order
    from nbdev.config import get_config
    repo = get_config().git_url.rstrip('/')
    for i,name in enumerate(order):
        html = (site/f'{name}.html').read_text()
        nav = re.search(r'<nav class="page-navigation">(.*?)</nav>', html, re.S)
        assert nav, f"{name}: no previous/next navigation"
        hrefs = re.findall(r'href="([^"]+)"', nav[1])
        want = ([f'{order[i-1]}.html'] if i else []) + ([f'{order[i+1]}.html'] if i+1 < len(order) else [])
        assert hrefs == want, f"{name}: previous/next {hrefs}, expected {want}"
        assert f'href="{repo}"' in html, f"{name}: no link to the repository {repo}"
        assert f'{repo}/blob/main/nbs/{name}.ipynb' in html, f"{name}: no link to its notebook's source"
        fav = re.search(r'<link[^>]+rel="icon"[^>]+href="([^"]+)"|<link[^>]+href="([^"]+)"[^>]+rel="icon"', html)
        assert fav and (site/(fav[1] or fav[2])).is_file(), f"{name}: no favicon"
