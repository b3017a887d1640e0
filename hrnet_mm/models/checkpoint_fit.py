"""Whether a checkpoint fits an :class:`~hrnet_mm.HRNet`, and if not, what it is.

:func:`check_checkpoint_fits` refuses a checkpoint that lacks any of the backbone's tensors or
holds one of another shape, where mmengine's non-strict loading would warn and carry on with a
half-loaded backbone. The error names what the checkpoint holds (an HRNet of another layout,
read back from its keys; HRNet keys under another prefix; a ResNet) and the fix (``arch=``,
``prefix=``, the config it was trained with).
"""
import re
from typing import Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from .arch import ARCH_ZOO, STAGE_FIELDS

# A key every HRNet (ours, mmseg's, mmdet's, mmpose's, mmpretrain's) has.
ANCHOR = 'stage2.0.branches.0.0.conv1.weight'


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the backbone it is loaded into."""


def _tensor_keys(state_dict: Mapping) -> List[str]:
    return [k for k, v in state_dict.items() if isinstance(v, torch.Tensor)]


def infer_stages(state_dict: Mapping, prefix: str = '') -> Optional[dict]:
    """The ``stage1..stage4`` table of the HRNet under ``prefix``, or None if there is none."""
    if not isinstance(state_dict.get(prefix + ANCHOR), torch.Tensor):
        return None
    keys = [k[len(prefix):] for k in _tensor_keys(state_dict) if k.startswith(prefix)]
    stages = {}
    layer1 = sorted({int(m.group(1)) for k in keys
                     for m in [re.match(r'layer1\.(\d+)\.conv1\.weight$', k)] if m})
    if layer1:
        w = state_dict[prefix + 'layer1.0.conv1.weight']
        bottleneck = prefix + 'layer1.0.conv3.weight' in state_dict
        stages['stage1'] = dict(num_modules=1, num_branches=1,
                                block='BOTTLENECK' if bottleneck else 'BASIC',
                                num_blocks=(len(layer1),), num_channels=(w.shape[0],))
    for s in (2, 3, 4):
        found = [tuple(int(g) for g in m.groups()) for k in keys
                 for m in [re.match(rf'stage{s}\.(\d+)\.branches\.(\d+)\.(\d+)\.conv1\.weight$',
                                    k)] if m]
        if not found:
            continue
        num_modules = max(f[0] for f in found) + 1
        num_branches = max(f[1] for f in found if f[0] == 0) + 1
        num_blocks = tuple(max(f[2] for f in found if f[:2] == (0, b)) + 1
                           for b in range(num_branches))
        channels = tuple(state_dict[f'{prefix}stage{s}.0.branches.{b}.0.conv1.weight'].shape[0]
                         for b in range(num_branches))
        bottleneck = f'{prefix}stage{s}.0.branches.0.0.conv3.weight' in state_dict
        stages[f'stage{s}'] = dict(num_modules=num_modules, num_branches=num_branches,
                                   block='BOTTLENECK' if bottleneck else 'BASIC',
                                   num_blocks=num_blocks, num_channels=channels)
    return stages


def same_stages(a: Mapping, b: Mapping) -> bool:
    """Two stage tables describe the same network (lists and tuples alike)."""
    if sorted(a) != sorted(b):
        return False
    norm = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
    return all(norm(a[s].get(f)) == norm(b[s].get(f)) for s in a for f in STAGE_FIELDS)


def match_preset(stages: Mapping, zoo: Mapping[str, dict]) -> Optional[str]:
    """The preset name whose table equals ``stages``, if any."""
    for name, table in zoo.items():
        if same_stages(stages, table):
            return name
    return None


def _fmt(stages: Mapping) -> str:
    parts = []
    for s in sorted(stages):
        t = stages[s]
        parts.append(f"{s}: {t['num_modules']}x{t['block'].lower()} "
                     f"blocks={tuple(t['num_blocks'])} channels={tuple(t['num_channels'])}")
    return '; '.join(parts)


def _groups(keys: List[str], prefix: str, limit: int = 6) -> List[str]:
    seen: Dict[str, None] = {}
    for k in keys:
        if k.startswith(prefix):
            seen.setdefault(prefix + k[len(prefix):].split('.')[0], None)
    return list(seen)[:limit]


def describe_checkpoint(state_dict: Mapping, prefix: str,
                        zoo: Mapping[str, dict]) -> Tuple[str, str]:
    """``(what the checkpoint looks like, how to fix the load)`` for an HRNet at ``prefix``."""
    keys = _tensor_keys(state_dict)
    stages = infer_stages(state_dict, prefix)
    if stages is not None:
        preset = match_preset(stages, zoo) if len(stages) == 4 else None
        if preset is not None:
            return (f"an HRNet with the stage layout of arch='{preset}'",
                    f"build the backbone with arch='{preset}' (or use the config the checkpoint "
                    'was trained with)')
        return (f'an HRNet of another layout ({_fmt(stages)})',
                'build the backbone with that layout as extra=dict(stage1=..., ..., stage4=...) '
                'and arch=None, or use the config the checkpoint was trained with')
    elsewhere = sorted({k[:-len(ANCHOR)] for k in keys if k.endswith(ANCHOR)})
    if elsewhere:
        found = elsewhere[0]
        return (f"an HRNet whose keys are under the prefix {found!r}, not {prefix!r}",
                f"load it with prefix={found!r} (e.g. init_cfg=dict(type='Pretrained', "
                f"checkpoint=..., prefix={found!r}))")
    groups = _groups(keys, prefix) or _groups(keys, '')
    # ResNet-style: layer1..layer4 (and mmseg's stem) under some prefix.
    resnets = sorted({m.group(1) for k in keys
                      for m in [re.match(r'(^|.*\.)(layer[234]|stem)\.', k)] if m})
    if resnets:
        where = prefix if prefix in resnets else resnets[0]
        what = f'a ResNet-style backbone (stem/layer1-4) under the prefix {where!r}'
    else:
        what = 'not an HRNet'
    what += f" (its keys start with {', '.join(groups)})" if groups else ' (it holds no tensors)'
    return what, 'use the config (and backbone) the checkpoint was trained with'


def check_checkpoint_fits(backbone: nn.Module, state_dict: Mapping, prefix: str) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state_dict`` holds every tensor of
    ``backbone`` (an HRNet) under ``prefix``, each of the same shape."""
    own = backbone.state_dict()
    # Checkpoints from before torch 0.4.1 lack num_batches_tracked; torch fills it in.
    required = [k for k in own if not k.endswith('num_batches_tracked')]
    missing = [k for k in required if prefix + k not in state_dict]
    wrong = [(k, tuple(state_dict[prefix + k].shape), tuple(v.shape))
             for k, v in own.items()
             if isinstance(state_dict.get(prefix + k), torch.Tensor)
             and state_dict[prefix + k].shape != v.shape]
    if not missing and not wrong:
        return
    what, fix = describe_checkpoint(state_dict, prefix, ARCH_ZOO)
    problems = []
    if missing:
        problems.append(f'{len(missing)} of its {len(required)} tensors are missing from '
                        f'the checkpoint (e.g. {prefix}{missing[0]})')
    if wrong:
        k, theirs, ours = wrong[0]
        problems.append(f'{len(wrong)} differ in shape (e.g. {prefix}{k}: {theirs} in the '
                        f'checkpoint vs {ours} here)')
    raise CheckpointMismatchError(
        f"checkpoint does not fit hrnet_mm.HRNet(arch={backbone.arch!r}) under prefix "
        f"{prefix!r}: {' and '.join(problems)}. The checkpoint looks like {what}. "
        f'Fix: {fix}. For a deliberate partial load (e.g. RGB weights into '
        'in_channels=4), build the backbone with partial_load=True.')
