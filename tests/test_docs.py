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
