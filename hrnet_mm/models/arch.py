"""What an HRNet is, as data: the presets, the ``extra`` stage tables the toolboxes use, and
what each toolbox's own HRNet does with a setting its config leaves out.

The ``arch_zoo`` table and the ``extra`` override follow mmpretrain's HRNet. Everything here
is checked before a layer is built: a table that does not describe an HRNet raises
:class:`HRNetConfigError`, which names the fix.
"""
import copy
from typing import Dict, Mapping, Optional, Tuple

from mmengine.registry import DefaultScope

from .blocks import BLOCKS


#: The fields of a stage's row, in the order of mmpretrain's ``arch_zoo`` and the toolboxes'
#: ``extra`` dicts.
STAGE_FIELDS = ('num_modules', 'num_branches', 'block', 'num_blocks', 'num_channels')


# One row per stage: (num_modules, num_branches, block, num_blocks, num_channels).
# Stage 1 is a single stream of bottlenecks; each later stage adds one lower-resolution stream.
def _standard(w: int) -> dict:
    return _stages([(1, 1, 'BOTTLENECK', (4,), (64,)),
                    (1, 2, 'BASIC', (4, 4), (w, 2 * w)),
                    (4, 3, 'BASIC', (4, 4, 4), (w, 2 * w, 4 * w)),
                    (3, 4, 'BASIC', (4, 4, 4, 4), (w, 2 * w, 4 * w, 8 * w))])


def _stages(rows) -> dict:
    return {f'stage{i + 1}': dict(zip(STAGE_FIELDS, row)) for i, row in enumerate(rows)}


ARCH_ZOO: Dict[str, dict] = {
    'w18_small': _stages([(1, 1, 'BOTTLENECK', (1,), (32,)),
                          (1, 2, 'BASIC', (2, 2), (16, 32)),
                          (1, 3, 'BASIC', (2, 2, 2), (16, 32, 64)),
                          (1, 4, 'BASIC', (2, 2, 2, 2), (16, 32, 64, 128))]),
    'w18_small_v2': _stages([(1, 1, 'BOTTLENECK', (2,), (64,)),
                             (1, 2, 'BASIC', (2, 2), (18, 36)),
                             (3, 3, 'BASIC', (2, 2, 2), (18, 36, 72)),
                             (2, 4, 'BASIC', (2, 2, 2, 2), (18, 36, 72, 144))]),
    **{f'w{w}': _standard(w) for w in (18, 30, 32, 40, 44, 48, 64)},
}

STEM_CHANNELS = 64
STEM_STRIDE = 4
UPSAMPLE_MODES = ('bilinear', 'nearest')
STAGE_NAMES = ('stage1', 'stage2', 'stage3', 'stage4')
TOOLBOXES = ('mmseg', 'mmpose', 'mmdet')

_KAIMING_INIT = [dict(type='Kaiming', layer='Conv2d'),
                 dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])]

# What each toolbox's own HRNet does with a setting its config leaves out (their
# models/backbones/hrnet.py); ``None`` is hrnet_mm's own choice, used outside any toolbox.
TOOLBOX_DEFAULTS: Dict[Optional[str], dict] = {
    None: dict(upsample_mode='bilinear', multiscale_output=True, norm_eval=False,
               init_cfg=_KAIMING_INIT),
    'mmseg': dict(upsample_mode='bilinear', multiscale_output=True, norm_eval=False,
                  init_cfg=_KAIMING_INIT),
    'mmdet': dict(upsample_mode='nearest', multiscale_output=True, norm_eval=True,
                  init_cfg=_KAIMING_INIT),
    # mmpose reads multiscale_output from extra['stage4'] (default False: V1) and its upsampling
    # from extra['upsample']; its convs start from N(0, 0.001).
    'mmpose': dict(upsample_mode='nearest', multiscale_output=False, norm_eval=False,
                   init_cfg=[dict(type='Normal', std=0.001, layer=['Conv2d']),
                             dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])]),
}


class HRNetConfigError(ValueError, AssertionError):
    """A stage table or ``extra`` dict that does not describe an HRNet.

    A ``ValueError``; also an ``AssertionError``, which is what mmseg's, mmdet's and mmpose's
    HRNets raise for the same tables, so code written against them keeps catching it.
    """


def resolve_compat(compat: Optional[str]) -> Optional[str]:
    """``'auto'`` becomes the toolbox whose registry scope is current (``mim train mmseg``,
    a config's ``default_scope``), or None outside the three toolboxes."""
    if compat == 'auto':
        scope = DefaultScope.get_current_instance()
        name = scope.scope_name if scope is not None else None
        return name if name in TOOLBOXES else None
    if compat is not None and compat not in TOOLBOXES:
        raise ValueError(f"compat must be 'auto', None or one of {TOOLBOXES}, got {compat!r}")
    return compat


def split_extra(extra: Optional[Mapping]) -> Tuple[Dict[str, dict], dict]:
    """``(stage tables, options)`` from a toolbox-style ``extra`` dict.

    Reads every key the toolboxes' ``extra`` dicts carry: ``stage1``..``stage4`` with the five
    stage fields, mmpose's ``stage4['multiscale_output']`` and ``upsample=dict(mode,
    align_corners)``. Anything else is refused rather than ignored.
    """
    if extra is None:
        return {}, {}
    if not isinstance(extra, Mapping):
        raise TypeError(f'extra must be a dict of stage tables, got {type(extra).__name__}')
    stages: Dict[str, dict] = {}
    options: dict = {}
    for key, value in copy.deepcopy(dict(extra)).items():
        if key in STAGE_NAMES:
            if not isinstance(value, Mapping):
                raise TypeError(f'extra[{key!r}] must be a dict, got {value!r}')
            value = dict(value)
            if key == 'stage4' and 'multiscale_output' in value:
                options['multiscale_output'] = value.pop('multiscale_output')
            unknown = sorted(set(value) - set(STAGE_FIELDS))
            if unknown:
                also = " (stage4 also takes mmpose's multiscale_output)"
                raise HRNetConfigError(f'extra[{key!r}] has unknown keys {unknown}; a stage '
                                       f'takes {list(STAGE_FIELDS)}{also}')
            stages[key] = value
        elif key == 'upsample':
            if not isinstance(value, Mapping):
                raise TypeError(f"extra['upsample'] must be dict(mode=..., align_corners=...), "
                                f'got {value!r}')
            unknown = sorted(set(value) - {'mode', 'align_corners'})
            if unknown:
                raise HRNetConfigError(f"extra['upsample'] has unknown keys {unknown}; it "
                                       "takes 'mode' and 'align_corners' (mmpose)")
            if 'mode' in value:
                options['upsample_mode'] = value['mode']
            if 'align_corners' in value:
                options['align_corners'] = value['align_corners']
        else:
            raise HRNetConfigError(f'extra has an unknown key {key!r}; it takes '
                                   f"{list(STAGE_NAMES)} and mmpose's 'upsample'")
    return stages, options


def resolve_arch(arch: Optional[str], extra: Optional[Mapping] = None) -> Tuple[dict, dict]:
    """``(stage table, options)``: the preset's table, deep-copied, with ``extra``'s stage
    tables laid over it, and the other settings ``extra`` carries (see :func:`split_extra`).

    ``arch=None`` takes the stages from ``extra`` alone (mmseg/mmpose/mmdet-style full
    ``extra`` dicts).
    """
    if isinstance(arch, Mapping):
        raise TypeError("HRNet's first argument is the preset name; pass a stage dict as "
                        'extra=... (with arch=None)')
    stages, options = split_extra(extra)
    if arch is None:
        if not stages:
            raise HRNetConfigError('HRNet needs arch= (one of %s) or a full extra= dict'
                                   % ', '.join(ARCH_ZOO))
        cfg: dict = {}
    elif arch not in ARCH_ZOO:
        raise HRNetConfigError(f'Unknown HRNet arch {arch!r}; valid presets are: '
                               + ', '.join(ARCH_ZOO))
    else:
        cfg = copy.deepcopy(ARCH_ZOO[arch])
    for name, stage in stages.items():
        cfg.setdefault(name, {}).update(stage)
    _check_stages(cfg)
    for stage in cfg.values():
        stage['num_blocks'] = tuple(stage['num_blocks'])
        stage['num_channels'] = tuple(stage['num_channels'])
    return cfg, options


def _check_stages(cfg: dict) -> None:
    if sorted(cfg) != list(STAGE_NAMES):
        raise HRNetConfigError(f'HRNet needs exactly the stages {list(STAGE_NAMES)}, '
                               f'got {sorted(cfg)}')
    prev_branches = 0
    for name in STAGE_NAMES:
        s = cfg[name]
        missing = set(STAGE_FIELDS) - set(s)
        if missing:
            raise HRNetConfigError(f'extra[{name!r}] lacks {sorted(missing)}')
        if s['block'] not in BLOCKS:
            raise HRNetConfigError(f"extra[{name!r}]['block'] is {s['block']!r}; use one "
                                   f'of {sorted(BLOCKS)}')
        n = s['num_branches']
        if len(s['num_blocks']) != n or len(s['num_channels']) != n:
            raise HRNetConfigError(
                f"extra[{name!r}] has num_branches={n} but num_blocks={tuple(s['num_blocks'])} "
                f"and num_channels={tuple(s['num_channels'])}: give one entry per branch")
        if name == 'stage1' and n != 1:
            raise HRNetConfigError("extra['stage1'] must have num_branches=1 (one stream)")
        if n < prev_branches:
            raise HRNetConfigError(f'extra[{name!r}] has {n} branches, fewer than the stage '
                                   f'before ({prev_branches}); streams are only ever added')
        if s['num_modules'] < 1 or min(s['num_blocks']) < 1 or min(s['num_channels']) < 1:
            raise HRNetConfigError(f'extra[{name!r}] needs num_modules, num_blocks and '
                                   f'num_channels of at least 1, got {s}')
        prev_branches = n


def pick_setting(name: str, explicit, from_extra, default, extra_key: str):
    """An explicit argument, else ``extra``'s value, else the toolbox default; both set and
    different is a contradiction, not a silent override."""
    if explicit is not None and from_extra is not None and explicit != from_extra:
        raise ValueError(f'HRNet got {name}={explicit!r} but extra sets {extra_key} to '
                         f'{from_extra!r}; set it in one place')
    for value in (explicit, from_extra):
        if value is not None:
            return value
    return default
