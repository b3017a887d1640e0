"""A toolbox's model from a config, built as that toolbox builds it: one function for the
tools and the tests.

:func:`build_model` reads a config (``options`` as ``--cfg-options`` would merge them), builds
``cfg.model`` through the registry of the config's ``default_scope`` (mmseg, mmpose or mmdet),
skips the pretrained download unless asked, and reverts SyncBN to BN (one process, as mmengine's
Runner does when it does not run distributed). :func:`build_model_shapes` builds the same
model without initialising its weights, for what depends on shapes only.
"""
import importlib
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import DefaultScope


def load_config(config: Union[str, Config], options: Optional[dict] = None) -> Config:
    """``config`` (a path or a ``Config``, which is copied) with ``options`` merged in."""
    cfg = Config.fromfile(config) if isinstance(config, str) else config.copy()
    if options:
        cfg.merge_from_dict(options)
    return cfg


def build_in_scope(model_cfg: Union[dict, ConfigDict], scope: str) -> nn.Module:
    """A ``model`` section built by ``scope``'s registry (``'mmseg'``, ``'mmpose'``,
    ``'mmdet'``), SyncBN reverted to BN."""
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        return revert_sync_batchnorm(registry.build(model_cfg))


def build_model(config: Union[str, Config], options: Optional[dict] = None, *,
                pretrained: bool = False) -> Tuple[Config, str, nn.Module]:
    """``(cfg, scope, model)``: the config's model as its toolbox builds it, in eval mode.

    Args:
        config: a config file or ``Config``.
        options (dict, optional): dotted keys merged into the config, as ``--cfg-options``.
        pretrained (bool): keep the config's pretrained weights (``pretrained``, the backbone's
            ``init_cfg``); default False, so nothing is downloaded.
    """
    cfg = load_config(config, options)
    if not pretrained:
        cfg.model.pop('pretrained', None)
        if 'backbone' in cfg.model:
            cfg.model.backbone.init_cfg = None
    scope = cfg.get('default_scope', 'mmseg')
    return cfg, scope, build_in_scope(cfg.model, scope).eval()


def build_model_shapes(config: Union[str, Config],
                       options: Optional[dict] = None) -> Tuple[Config, str, nn.Module]:
    """:func:`build_model`'s ``(cfg, scope, model)`` without the weight initialisation (seconds
    for a W48): built on the meta device, then given uninitialised CPU memory. For what depends
    on shapes only: parameter and FLOP counts, output shapes (fill the weights first)."""
    with torch.device('meta'):
        cfg, scope, model = build_model(config, options)
    return cfg, scope, model.to_empty(device='cpu')
