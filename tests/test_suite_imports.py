"""Every name a test imports from hrnet_mm or from another test module exists, including the
imports inside test functions that only run on a GPU host. Would catch: a helper renamed in
``tests/conftest.py`` or ``hrnet_mm`` while a test that this host skips (CUDA-only) still imports
the old name, and fails the day it runs on a GPU."""
import ast
import importlib
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
FILES = sorted(p.name for p in TESTS.glob('*.py'))


def imported_names(path):
    """(module, name, line) for each ``from X import name`` in the file where X is a test module
    (relative) or hrnet_mm, at any depth of the file."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 1:
            module = 'tests' + ('.' + node.module if node.module else '')
        elif node.level == 0 and (node.module or '').split('.')[0] == 'hrnet_mm':
            module = node.module
        else:
            continue
        for alias in node.names:
            yield module, alias.name, node.lineno


@pytest.mark.parametrize('name', FILES)
def test_imported_names_exist(name):
    missing = []
    for module, attr, line in imported_names(TESTS / name):
        target = importlib.import_module(module)
        if attr != '*' and not hasattr(target, attr):
            try:  # a submodule: ``from hrnet_mm import models``
                importlib.import_module(f'{module}.{attr}')
            except ImportError:
                missing.append(f'{name}:{line}: {module} has no {attr}')
    assert not missing, '\n'.join(missing)


def test_the_check_sees_a_missing_name(tmp_path):
    bad = tmp_path / 'test_bad.py'
    bad.write_text('def test_gpu():\n    from .conftest import NO_SUCH_NAME\n')
    found = list(imported_names(bad))
    assert found == [('tests.conftest', 'NO_SUCH_NAME', 2)]
    assert not hasattr(importlib.import_module('tests.conftest'), 'NO_SUCH_NAME')
