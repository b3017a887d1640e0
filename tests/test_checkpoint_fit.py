"""Checkpoints that do not belong to the backbone are refused, saying what they are.

mmengine loads non-strictly (Pretrained init, ``load_from``, ``mim test --checkpoint``) and only
warns about missing keys, so a ResNet checkpoint would run with a half-initialised HRNet.
hrnet_mm refuses unless the backbone is built with ``partial_load=True``.
"""
import os.path as osp
import subprocess

import pytest
import torch

from hrnet_mm import CheckpointMismatchError, HRNet

from .conftest import REPO, cli_env, quiet


def save(tmp_path, name, state_dict):
    path = str(tmp_path / name)
    torch.save(dict(state_dict=state_dict, meta=dict()), path)
    return path


def mmseg_model(path):
    from .test_parity import build_stock
    return build_stock('mmseg', path, swap=False)


def pretrained(path, **kw):
    return HRNet(init_cfg=dict(type='Pretrained', checkpoint=path, **kw.pop('ckpt_kw', {})), **kw)


@pytest.mark.slow
def test_resnet_checkpoint_through_mim_test_is_refused(street_data, tmp_path):
    """A PSPNet-ResNet checkpoint given to `mim test` on an HRNet config: an error, not a run."""
    ckpt = save(tmp_path, 'pspnet_r18.pth',
                mmseg_model('pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py').state_dict())
    args = ['mim', 'test', 'mmsegmentation', osp.join(REPO, 'configs', 'hrnet_w48_cityscapes.py'),
            '--checkpoint', ckpt, '--work-dir', str(tmp_path / 'test'), '--cfg-options',
            f'test_dataloader.dataset.data_root={street_data}', 'model.pretrained=None']
    proc = subprocess.run(args, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert 'Testing finished successfully' not in out
    assert 'CheckpointMismatchError' in out and 'a ResNet-style backbone' in out, out[-3000:]
    assert "under prefix 'backbone.'" in out and 'partial_load=True' in out


def test_resnet_weights_as_pretrained_init_are_refused(tmp_path):
    model = mmseg_model('pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py')
    path = save(tmp_path, 'r18.pth', model.backbone.state_dict())
    net = pretrained(path, arch='w18')
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match='ResNet-style backbone') as err:
        quiet(net)
    assert 'layer1' in str(err.value)  # says what the checkpoint holds
    # nothing was half-loaded: the tensors that would have fitted (layer1) are untouched
    assert torch.equal(net.layer1[0].conv1.weight, before['layer1.0.conv1.weight'])


def test_other_layout_is_refused_naming_its_arch(tmp_path):
    path = save(tmp_path, 'hr18s.pth', HRNet('w18_small_v2').state_dict())
    with pytest.raises(CheckpointMismatchError, match=r"arch='w18_small_v2'"):
        quiet(pretrained(path, arch='w18'))


def test_segmentor_checkpoint_without_prefix_says_which_prefix(tmp_path):
    seg = mmseg_model('hrnet/fcn_hr18s_4xb2-80k_cityscapes-512x1024.py')
    path = save(tmp_path, 'fcn_hr18s.pth', seg.state_dict())
    with pytest.raises(CheckpointMismatchError, match=r"prefix='backbone\.'"):
        quiet(pretrained(path, arch='w18_small_v2'))
    # ... and with that prefix it loads every tensor.
    net = quiet(pretrained(path, arch='w18_small_v2', ckpt_kw=dict(prefix='backbone.')))
    theirs = seg.backbone.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in net.state_dict().items())


def test_checkpoint_without_num_batches_tracked_still_loads(tmp_path):
    """(written before torch 0.4.1, as some public ImageNet checkpoints are)"""
    src = HRNet('w18_small')
    state = {k: v for k, v in src.state_dict().items() if not k.endswith('num_batches_tracked')}
    net = quiet(pretrained(save(tmp_path, 'old.pth', state), arch='w18_small'))
    assert torch.equal(net.conv1.weight, src.conv1.weight)


def test_partial_load_is_an_explicit_switch(tmp_path):
    """RGB weights into a 4-channel backbone: refused by default, loaded with partial_load."""
    rgb = HRNet('w18_small')
    path = save(tmp_path, 'rgb.pth', rgb.state_dict())
    with pytest.raises(CheckpointMismatchError, match=r'1 differ in shape .*conv1\.weight'):
        quiet(pretrained(path, arch='w18_small', in_channels=4))
    net = quiet(pretrained(path, arch='w18_small', in_channels=4, partial_load=True))
    assert net.conv1.weight.shape[1] == 4  # kept its own init
    theirs = rgb.state_dict()
    same = [k for k, v in net.state_dict().items() if k != 'conv1.weight']
    assert all(torch.equal(net.state_dict()[k], theirs[k]) for k in same)


def test_strict_load_of_a_matching_checkpoint_is_unchanged():
    a, b = HRNet('w18_small'), HRNet('w18_small')
    b.load_state_dict(a.state_dict(), strict=True)
    assert all(torch.equal(v, a.state_dict()[k]) for k, v in b.state_dict().items())
