"""The layering of docs/ARCHITECTURE.md, checked on the source: the arrows that must never exist, and no
import cycles between modules (every import counts, including those inside functions)."""
import ast
import os

import pytest

from helpers import ROOT

CLIS = {'train', 'generate', 'fid'}
CLI_SIDE = {'cli_common'}   # click declarations and printing shared by the CLIs and scripts
LIBRARY = ('infonoise', 'training', 'torch_utils', 'dnnlib')


def _modules():
    """module name -> file path, for every .py file of the project (not tests, not the venv)."""
    out = {}
    for top in (*LIBRARY, 'scripts'):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith('.py'):
                    rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, '.')
                    out[rel[:-len('.__init__')] if rel.endswith('.__init__') else rel] = os.path.join(folder, name)
    for cli in CLIS | CLI_SIDE:
        out[cli] = os.path.join(ROOT, cli + '.py')
    return out


MODULES = _modules()


def _imports(path, module):
    """Project modules imported anywhere in a file (absolute and relative imports)."""
    tree = ast.parse(open(path, encoding='utf-8').read())
    package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = package.split('.')
                base = '.'.join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names = [f'{base}.{a.name}' for a in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition('.')[0]
            if name and name != module:
                found.add(name)
    return found


GRAPH = {m: _imports(p, m) for m, p in MODULES.items()}


def _top(module):
    return module.split('.')[0]


@pytest.mark.parametrize('module', sorted(m for m in MODULES if _top(m) == 'infonoise'))
def test_infonoise_imports_nothing_else_from_the_repo(module):
    assert {_top(m) for m in GRAPH[module]} <= {'infonoise'}, GRAPH[module]


def test_torch_utils_and_dnnlib_never_import_training():
    for module, deps in GRAPH.items():
        if _top(module) in ('torch_utils', 'dnnlib'):
            assert not {m for m in deps if _top(m) in ('training', 'infonoise', 'scripts', *CLIS)}, module


def test_library_never_imports_a_cli_or_a_script_and_clis_never_import_each_other():
    for module, deps in GRAPH.items():
        if _top(module) in LIBRARY:
            assert not {m for m in deps if _top(m) in ('scripts', *CLIS, *CLI_SIDE)}, module
        if module in CLIS | CLI_SIDE or _top(module) == 'scripts':
            assert not (deps & CLIS), module


def _external_imports_and_calls(path):
    """(top-level names of every imported module, names of every called plain function) in a file."""
    tree = ast.parse(open(path, encoding='utf-8').read())
    imported, called = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split('.')[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            imported.add((node.module or '').split('.')[0])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            called.add(node.func.id)
    return imported, called


@pytest.mark.parametrize('module', sorted(m for m in MODULES if _top(m) in LIBRARY))
def test_library_imports_no_click_and_never_prints(module):
    imported, called = _external_imports_and_calls(MODULES[module])
    assert 'click' not in imported, f'{module} imports click: CLI declarations belong in cli_common.py'
    assert 'print' not in called, f'{module} calls print: library code logs or returns values'


def test_the_architecture_check_sees_click_and_print(tmp_path):
    path = tmp_path / 'm.py'
    path.write_text('def f():\n    from click import echo\n    print(echo)\n', encoding='utf-8')
    assert _external_imports_and_calls(str(path)) == ({'click'}, {'print'})


def test_no_import_cycles():
    state, stack = {}, []

    def visit(m):
        state[m] = 'open'
        stack.append(m)
        for d in sorted(GRAPH[m]):
            if state.get(d) == 'open':
                pytest.fail('import cycle: ' + ' -> '.join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 'done'
    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
