"""The project's rooms and the order between them (README "Layout"): a package imports
only from packages of lower layers (and from itself), no module import cycle exists, and
the product never imports its test support.  Read from the source with ast, so a lazy
import inside a function counts like one at the top."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# lowest first; a package may import packages of earlier layers only
LAYERS = (
    ('utils',),
    ('models', 'metrics'),
    ('reader',),
    ('engines', 'training'),
    ('inference',),
    ('jobs',),
    ('data',),
    ('server', 'tools'),
)
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
ENTRY_SCRIPTS = ('train.py', 'eval.py', 'predict.py', 'inference_model.py', 'serve.py')
NOT_PRODUCT = ('testing', 'tests', 'bench')


def module_name(path):
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
    return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def product_files():
    for pkg in RANK:
        for folder, _, files in os.walk(os.path.join(ROOT, pkg)):
            yield from (os.path.join(folder, f) for f in sorted(files) if f.endswith('.py'))
    yield from (os.path.join(ROOT, f) for f in ENTRY_SCRIPTS)


def imports_of(path):
    """The project modules `path` imports (absolute or relative), anywhere in the file."""
    mod = module_name(path)
    package = mod if path.endswith('__init__.py') else mod.rpartition('.')[0]
    found = set()
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = package.split('.')[:len(package.split('.')) - node.level + 1]
                base = '.'.join(parts + ([base] if base else []))
            # each name is a submodule, or a name of the module `base`: existing_module
            # tells which
            found.update(f"{base}.{a.name}" for a in node.names)
    top = set(RANK) | set(NOT_PRODUCT)
    return {m for m in found if m.split('.')[0] in top}


def existing_module(name, modules):
    """`name` or the longest prefix of it that is a module of the project."""
    while name and name not in modules:
        name = name.rpartition('.')[0]
    return name or None


@pytest.fixture(scope='module')
def graph():
    files = list(product_files())
    modules = {module_name(p): p for p in files}
    return {m: {t for t in (existing_module(n, modules) for n in imports_of(p))
                if t and t != m} for m, p in modules.items()}, modules


def test_lower_rooms_never_import_higher_ones(graph):
    edges, _ = graph
    wrong = []
    for mod, targets in edges.items():
        pkg = mod.split('.')[0]
        if pkg not in RANK:  # an entry script: may import any room
            continue
        for t in targets:
            other = t.split('.')[0]
            if other != pkg and RANK.get(other, -1) >= RANK[pkg]:
                wrong.append(f"{mod} imports {t}")
    assert not wrong, '\n'.join(sorted(wrong))


def test_the_product_never_imports_test_support(graph):
    edges, _ = graph
    wrong = [f"{m} imports {t}" for m, ts in edges.items() for t in ts
             if t.split('.')[0] in NOT_PRODUCT]
    assert not wrong, '\n'.join(sorted(wrong))


def test_no_import_cycles(graph):
    """A package's __init__ may import its own modules; a module importing its package's
    __init__ back would close a cycle and is reported with every other."""
    edges, _ = graph
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 'open'
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 'open':
                cycles.append(' -> '.join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 'done'

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, '\n'.join(cycles)


@pytest.mark.parametrize('pkg', sorted(RANK))
def test_each_room_says_what_it_holds_and_may_import(pkg):
    path = os.path.join(ROOT, pkg, '__init__.py')
    with open(path, encoding='utf-8') as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ''
    lower = sorted(p for p in RANK if RANK[p] < RANK[pkg])
    assert doc, f"{pkg}/__init__.py has no docstring"
    line = next((ln for ln in doc.splitlines() if ln.startswith('May import:')), None)
    assert line is not None, f"{pkg}/__init__.py: no 'May import:' line"
    said = {w.strip(' .,') for w in line[len('May import:'):].split()} - {'and', 'nothing'}
    assert said <= set(lower), f"{pkg}: says it may import {sorted(said - set(lower))}"
