"""Runner checkpoints load through mmengine with weights_only kept on; the allowlist is scoped
to those loads; crafted pickles are still refused."""
import os
import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch

import hrnet_mm  # noqa: F401  (registers the local checkpoint loader on import)

from .conftest import REPO, cli_env


@pytest.fixture(scope='session')
def runner_checkpoint(tmp_path_factory):
    """A tiny model trained with mmengine's real Runner for 2 iterations: its checkpoint. A
    fresh process without hrnet_mm writes it, as a stock config would (once: the tests that
    read it run on one worker, not always one after the other, so a module-scoped fixture
    would write it twice)."""
    tmp_path = tmp_path_factory.mktemp('runner')
    script = f'''
import numpy as np, torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
class Toy(BaseModel):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)
    def forward(self, x, y=None, mode='loss'):
        out = self.lin(x)
        return dict(loss=((out - y) ** 2).mean()) if mode == "loss" else out
class Data(torch.utils.data.Dataset):
    metainfo = dict(classes=('a', 'b'), sigmas=np.array([0.1, 0.2]), flip=np.int64(3))
    def __len__(self):
        return 8
    def __getitem__(self, i):
        return dict(x=torch.rand(2), y=torch.rand(1))
runner = Runner(model=Toy(), work_dir={str(tmp_path)!r},
                train_dataloader=dict(dataset=Data(), sampler=dict(type='DefaultSampler'),
                                      batch_size=4, collate_fn=dict(type='default_collate')),
                optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
                train_cfg=dict(by_epoch=False, max_iters=2),
                default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2,
                                                   by_epoch=False)))
runner.train()
'''
    subprocess.run([sys.executable, '-c', script], check=True, cwd=tmp_path, env=cli_env(),
                   stdout=subprocess.DEVNULL)
    return osp.join(tmp_path, 'iter_2.pth')


@pytest.mark.slow  # mmengine's Runner trains, in a fresh interpreter
@pytest.mark.xdist_group('runner_checkpoint')
def test_runner_checkpoint_loads_with_weights_only(runner_checkpoint):
    from mmengine.runner import load_checkpoint
    from mmengine.runner.checkpoint import _load_checkpoint
    path = runner_checkpoint
    ckpt = _load_checkpoint(path, map_location='cpu')  # as the Runner reads it
    assert ckpt['meta']['iter'] == 2
    hub = ckpt['message_hub']['log_scalars']
    assert hub['train/loss'].mean() > 0
    assert list(ckpt['meta']['dataset_meta']['sigmas']) == [0.1, 0.2]
    model = torch.nn.Module()
    model.lin = torch.nn.Linear(2, 1)
    load_checkpoint(model, path, map_location='cpu')
    assert torch.equal(model.lin.weight, ckpt['state_dict']['lin.weight'])


@pytest.mark.slow  # mmengine's Runner trains, in a fresh interpreter
@pytest.mark.xdist_group('runner_checkpoint')
def test_the_allowlist_is_not_process_wide(runner_checkpoint):
    """Importing hrnet_mm widens nothing outside mmengine's checkpoint loading."""
    from mmengine.logging.history_buffer import HistoryBuffer
    assert HistoryBuffer not in torch.serialization.get_safe_globals()
    path = runner_checkpoint
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, map_location='cpu')  # a plain load keeps torch's own allowlist


class _RunsCode:
    """A pickle payload that calls os.system on load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


class _GetattrEscape:
    """getattr(HistoryBuffer, '__init__') ... the route a crafted file would take to code."""

    def __reduce__(self):
        from mmengine.logging.history_buffer import HistoryBuffer
        return (getattr, (HistoryBuffer, '__init__'))


@pytest.mark.parametrize('payload', ['system', 'getattr'])
def test_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path, payload):
    marker = tmp_path / 'pwned'
    obj = _RunsCode(marker) if payload == 'system' else _GetattrEscape()
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': obj}, path)
    from mmengine.runner.checkpoint import _load_checkpoint
    with pytest.raises(pickle.UnpicklingError):
        _load_checkpoint(str(path), map_location='cpu')  # with the Runner allowlist active
    assert not marker.exists()


def test_no_blanket_weights_only_false_anywhere():
    offenders = []
    for root, _, files in os.walk(REPO):
        if any(part in root for part in ('.venv', '.git', 'work_dirs', 'data')):
            continue
        for name in files:
            if name.endswith('.py') and name != 'test_checkpoint.py':
                with open(osp.join(root, name), encoding='utf-8') as f:
                    if 'weights_only=False' in f.read():
                        offenders.append(osp.join(root, name))
    assert not offenders
