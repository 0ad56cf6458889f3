"""The documentation: README's length, relative links (files and #anchors) in README.md and
docs/*.md, and docs/config.md as tools/config_doc.py writes it from the config schema."""
import glob
import os
import re

import pytest

from tools import config_doc
from utils.config_utils import DEFAULTS, HELP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, 'README.md')] + sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md')))
README_MAX_LINES = 400

LINK = re.compile(r'\]\(([^)\s]+)\)')


def prose(text):
    """The text without fenced code blocks and inline code, where `](` means no link."""
    text = re.sub(r'^```.*?^```', '', text, flags=re.S | re.M)
    return re.sub(r'`[^`\n]*`', '', text)


def anchors(path):
    """The #anchors GitHub makes of a markdown file's headings (duplicates get -1, -2...)."""
    with open(path, encoding='utf-8') as f:
        text = re.sub(r'^```.*?^```', '', f.read(), flags=re.S | re.M)
    seen, out = {}, set()
    for heading in re.findall(r'^#{1,6} +(.+?) *$', text, flags=re.M):
        slug = re.sub(r'[^\w\- ]', '', heading.lower().replace('`', '')).replace(' ', '-')
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f'{slug}-{n}')
    return out


def broken_links(page):
    """['target: why'] for every relative link of `page` that leads nowhere."""
    with open(page, encoding='utf-8') as f:
        targets = LINK.findall(prose(f.read()))
    broken = []
    for target in targets:
        if re.match(r'^[a-z]+:', target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition('#')
        full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(full):
            broken.append(f'{target}: no such file')
        elif anchor and full.endswith('.md') and anchor not in anchors(full):
            broken.append(f'{target}: no such heading')
    return broken


def test_readme_is_short():
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        lines = f.read().splitlines()
    assert len(lines) <= README_MAX_LINES
    assert lines[2] == '```bash'  # the set-up commands come first
    assert lines[3].startswith('bash run.sh demo') and lines[4].startswith('bash run.sh test')


@pytest.mark.parametrize('page', PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_lead_somewhere(page):
    assert broken_links(page) == []


def test_every_docs_page_is_in_the_index():
    with open(os.path.join(ROOT, 'docs', 'README.md'), encoding='utf-8') as f:
        listed = set(LINK.findall(f.read()))
    pages = {os.path.basename(p) for p in PAGES if os.sep + 'docs' + os.sep in p}
    assert sorted(pages - listed - {'README.md'}) == []


def test_the_link_check_finds_broken_links(tmp_path):
    (tmp_path / 'other.md').write_text('# A heading, with `code`\n', encoding='utf-8')
    page = tmp_path / 'page.md'
    page.write_text('[ok](other.md#a-heading-with-code) [gone](missing.md) '
                    '[bad anchor](other.md#nowhere) [web](https://example.org/x)\n'
                    '```\n[in code](missing_too.md)\n```\n', encoding='utf-8')
    assert broken_links(str(page)) == ['missing.md: no such file',
                                       'other.md#nowhere: no such heading']


def test_every_config_key_has_a_meaning():
    missing = [f'{s}.{k}' for s, keys in DEFAULTS.items() for k in keys
               if not config_doc.meaning(s, k)]
    assert missing == []
    known = {f'{s}.{k}' for s, keys in DEFAULTS.items() for k in keys}
    stale = [name for name in HELP
             if name not in known and not any(name in keys for keys in DEFAULTS.values())]
    assert stale == []


def test_config_doc_is_what_the_generator_writes():
    with open(config_doc.DOC_PATH, encoding='utf-8') as f:
        assert f.read() == config_doc.render(), 'run: python -m tools.config_doc'
    rows = [line for line in config_doc.render().splitlines() if line.startswith('| `')]
    assert len(rows) == len({k for keys in DEFAULTS.values() for k in keys})
    assert '| `seg_num` | `8` | > 0 | segments (frames) per clip |' in rows
    assert any(r.startswith('| `batch_size` | `128` | `128` | `16` | `1` |') for r in rows)


def test_config_doc_check_reports_a_stale_page(tmp_path, monkeypatch, capsys):
    stale = tmp_path / 'config.md'
    stale.write_text('# Config keys\n', encoding='utf-8')
    monkeypatch.setattr(config_doc, 'DOC_PATH', str(stale))
    assert config_doc.main(['--check']) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'docs/config.md is stale' in err
    assert config_doc.main([]) == 0 and config_doc.main(['--check']) == 0
    assert stale.read_text(encoding='utf-8') == config_doc.render()
