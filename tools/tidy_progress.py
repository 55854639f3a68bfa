#!/usr/bin/env python
"""Keep only the final state of fastprogress's HTML bars and tables in saved notebook outputs.

nbdev-test captures every update of a live progress bar as its own output (Jupyter would replace them in place), so a
notebook saved with `nbdev-test --save` holds hundreds of half-finished bars. This keeps, per cell, the last update of
the training table and drops the intermediate bars, and removes the debris ('█' and carriage returns) that hidden bars leave
in printed text; everything else is left alone.

    python tools/tidy_progress.py nbs/*.ipynb
"""
import json, sys, re

def is_progress(o): return o.get('output_type') in ('display_data', 'update_display_data') and any(
    'fastprogress' in ''.join(o.get('data', {}).get('text/html', '')) or re.search(r'<progress', ''.join(o.get('data', {}).get('text/html', '')))
    for _ in [0])

DEBRIS = re.compile(r'(?:█?\r+)+')      # what a bar hidden with display=False leaves in captured stdout: '█' and carriage returns

def clean_stream(o):
    "Drop bar debris from a stream output; True if it changed"
    if o.get('output_type') != 'stream': return False
    t = ''.join(o['text']); c = DEBRIS.sub('', t)
    if c.startswith('█'): c = c.lstrip('█')
    if c == t: return False
    o['text'] = c.splitlines(keepends=True); return True

def tidy(cell):
    n_clean = sum(clean_stream(o) for o in cell.get('outputs', []))
    cell['outputs'] = [o for o in cell.get('outputs', []) if o.get('output_type') != 'stream' or ''.join(o['text'])]
    outs = cell.get('outputs', [])
    prog = [i for i,o in enumerate(outs) if is_progress(o)]
    if not prog: return n_clean
    tables = [i for i in prog if '<table' in ''.join(outs[i]['data']['text/html'])]
    keep = set(i for i in range(len(outs)) if i not in prog)
    # a table update is dropped when the next output is a later update of the same table (its rows begin with these
    # rows); the last update of each table stays, so running this twice changes nothing
    rows = lambda j: re.findall(r'<tr>.*?</tr>', ''.join(outs[j]['data']['text/html']), re.S)
    for k,i in enumerate(tables):
        nxt = tables[k+1] if k+1 < len(tables) else None
        later = nxt is not None and all(j in prog for j in range(i, nxt)) and len(rows(nxt)) >= len(rows(i)) and rows(nxt)[1:len(rows(i))] == rows(i)[1:]
        if not later: keep.add(i)
    cell['outputs'] = [o for i,o in enumerate(outs) if i in keep]
    for o in cell['outputs']:
        if o.get('output_type') == 'update_display_data': o['output_type'] = 'display_data'
        o.get('metadata', {}).pop('transient', None)
    return len(outs) - len(cell['outputs']) + n_clean

if __name__ == '__main__':
    for f in sys.argv[1:]:
        nb = json.load(open(f))
        n = sum(tidy(c) for c in nb['cells'] if c['cell_type'] == 'code')
        if n:
            json.dump(nb, open(f, 'w'), indent=1, ensure_ascii=False); open(f, 'a').write('\n')
            print(f"{f}: {n} progress updates dropped")
