"""Make the smalldocs site follow nbdev's page names, so every link nbdev writes resolves, on this machine and when published.

nbdev names each page after the notebook's `output-file` (`00_boxes.ipynb` -> `boxes.html`, and `boxes.html.md` for
the module docstrings' `Docs:` line); smalldocs names them after the notebook (`00_boxes.html`) and ignores
`output-file`. This writes `boxes.html` beside `00_boxes.html` (the same page), `boxes.html.md` (the page as markdown),
and makes the `show_doc` cross-references, which nbdev writes as absolute URLs on the doc host, relative."""
import json, re, sys
from pathlib import Path

def output_files(proc:Path)->dict:
    "notebook stem -> nbdev's output-file name, from the front matter nbdev-proc-nbs wrote"
    res = {}
    for nb in proc.glob('*.ipynb'):
        cells = json.loads(nb.read_text())['cells']
        m = re.search(r'^output-file:\s*(\S+)', ''.join(cells[0]['source']) if cells else '', re.M)
        if m: res[nb.stem] = m[1]
    return res

def doc_url()->str:
    "https://host/baseurl/ of the docs, as nbdev's config gives them (it derives them from the repository when not set)"
    from nbdev.config import get_config
    c = get_config()
    return c.doc_host.rstrip('/') + '/' + c.doc_baseurl.strip('/') + '/'

def main(root='.'):
    root = Path(root); proc, site = root/'_proc', root/'_proc'/'_docs'
    url, outs = doc_url(), output_files(proc)
    for f in site.glob('*.html'):
        s = f.read_text()
        t = s.replace(url, '')                     # the doc host's pages are this site's
        if t != s: f.write_text(t)
    ids = {f.name: set(re.findall(r'\bid="([^"]+)"', f.read_text())) for f in site.glob('*.html')}
    ids.update({out: ids.get(f'{stem}.html', set()) for stem,out in outs.items()})
    n_fixed = 0
    def fix(m):
        "A link to an anchor its page lacks: to the class it is a method of, if that has one, else plain text"
        nonlocal n_fixed
        page,anchor,inner = m[1],m[2],m[4]
        if anchor in ids.get(page, {anchor}): return m[0]
        n_fixed += 1
        owner = anchor.rsplit('.', 1)[0]
        return m[0].replace(f'#{anchor}"', f'#{owner}"') if '.' in anchor and owner in ids.get(page, ()) else inner
    for f in site.glob('*.html'):
        s = f.read_text()
        t = re.sub(r'<a href="([\w.-]+\.html)#([^"]+)"([^>]*)>(.*?)</a>', fix, s, flags=re.S)
        if t != s: f.write_text(t)
    n_css = 0                                      # the vendored Bootswatch themes @import their fonts from Google: nothing is fetched from the web
    for f in site.rglob('*.css'):
        s = f.read_text()
        t = re.sub(r'@import\s+url\((["\']?)(?:https?:)?//[^)]*\1\)\s*;?', '', s)
        if t != s: f.write_text(t); n_css += 1
    import nbformat
    from nbconvert import MarkdownExporter
    md = MarkdownExporter()
    def as_md(stem):
        "The notebook as markdown, without its hidden cells and nbdev's `#|` directives"
        nb = nbformat.read(root/'nbs'/f'{stem}.ipynb', as_version=4)
        nb.cells = [c for c in nb.cells if not re.search(r'^#\|\s*hide\b', c.source, re.M)]
        for c in nb.cells:
            if c.cell_type == 'code': c.source = re.sub(r'^#\|.*\n?', '', c.source, flags=re.M)
        nb.cells = [c for c in nb.cells if c.source.strip()]
        return md.from_notebook_node(nb)[0]
    for stem,out in outs.items():
        if out == f'{stem}.html' or not (site/f'{stem}.html').exists(): continue
        (site/out).write_text((site/f'{stem}.html').read_text())
        (site/f'{out}.md').write_text(as_md(stem))
    print(f"site: {len(outs)} pages also under nbdev's names; links to {url} made relative; "
          f"{n_fixed} links to anchors that do not exist sent to their class or unlinked; "
          f"remote @imports (web fonts) taken out of {n_css} stylesheet(s): the theme's fallback fonts are the system's")

if __name__ == '__main__': main(*sys.argv[1:])
