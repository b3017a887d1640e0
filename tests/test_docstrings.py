"""The docstring examples run and print what they say."""
import doctest
import importlib

import pytest

MODULES = ['hrnet_mm.models.hrnet', 'hrnet_mm.models.necks', 'hrnet_mm.inference']


@pytest.mark.parametrize('name', MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f'{name} has no examples'
    assert result.failed == 0
