"""The ``hrnet_mm`` registry scope.

``MODELS`` is a child of mmengine's root registry with scope ``hrnet_mm``. Because mmseg's,
mmdet's and mmpose's own ``MODELS`` are children of the same root, a config built under any of
their default scopes resolves ``type='hrnet_mm.HRNet'`` here (mmengine imports
``hrnet_mm.registry`` on demand and searches the root's children), while a plain
``type='HRNet'`` keeps meaning that toolbox's own HRNet.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import Registry

MODELS = Registry(
    'model', parent=MMENGINE_MODELS, scope='hrnet_mm',
    locations=['hrnet_mm.models', 'hrnet_mm.deploy'])

HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='hrnet_mm',
                 locations=['hrnet_mm.inference', 'hrnet_mm.memory'])

OPTIM_WRAPPERS = Registry('optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS, scope='hrnet_mm',
                          locations=['hrnet_mm.amp'])
