"""Checkpoints from elsewhere, crashes, and bad input: clear errors, nothing lost."""
import os
import os.path as osp
import signal
import subprocess
import sys
import time
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from hrnet_mm import HRNet, HRNetConcatNeck, HRNetPyramidNeck
from hrnet_mm.convert import ConversionError, convert

from .conftest import REPO, cli_env, quiet, randomize_norms, run_cli, run_tool_main, toolbox_tool

CONVERT = [sys.executable, osp.join(REPO, 'tools', 'convert_checkpoint.py')]


def convert_tool(args, capsys, monkeypatch):
    """``python tools/convert_checkpoint.py ARGS`` run in this process (:func:`run_tool_main`;
    the slow official-seg test runs it as a command): ``(exit, stdout, stderr)``."""
    code, _ = run_tool_main(CONVERT[1], args, monkeypatch)
    out, err = capsys.readouterr()
    return code, out, err


def _randomized(arch):
    net = quiet(HRNet(arch))
    randomize_norms(net)
    return net.eval()


def _official_seg_checkpoint(net, num_classes=19):
    """An HRNet-Semantic-Segmentation style checkpoint (``model.`` prefix, ``last_layer``)."""
    c = sum(net.out_channels)
    g = torch.Generator().manual_seed(1)
    state = OrderedDict((f'model.{k}', v) for k, v in net.state_dict().items())
    state['model.last_layer.0.weight'] = torch.randn(c, c, 1, 1, generator=g) * 0.05
    state['model.last_layer.0.bias'] = torch.randn(c, generator=g)
    state['model.last_layer.1.weight'] = torch.rand(c, generator=g) + 0.5
    state['model.last_layer.1.bias'] = torch.randn(c, generator=g)
    state['model.last_layer.1.running_mean'] = torch.randn(c, generator=g)
    state['model.last_layer.1.running_var'] = torch.rand(c, generator=g) + 0.5
    state['model.last_layer.1.num_batches_tracked'] = torch.tensor(7)
    state['model.last_layer.3.weight'] = torch.randn(num_classes, c, 1, 1, generator=g)
    state['model.last_layer.3.bias'] = torch.randn(num_classes, generator=g)
    state['loss.criterion.weight'] = torch.ones(num_classes)
    return state


def _official_forward(net, state, x):
    """What the official seg_hrnet.py computes: bilinear concat, then last_layer."""
    feats = net(x)
    size = feats[0].shape[-2:]
    cat = torch.cat([feats[0]] + [F.interpolate(f, size=size, mode='bilinear',
                                                align_corners=False) for f in feats[1:]], 1)
    s = {k[len('model.last_layer.'):]: v for k, v in state.items() if 'last_layer' in k}
    y = F.conv2d(cat, s['0.weight'], s['0.bias'])
    y = F.batch_norm(y, s['1.running_mean'], s['1.running_var'], s['1.weight'], s['1.bias'])
    return F.conv2d(F.relu(y), s['3.weight'], s['3.bias'])


@pytest.mark.slow
def test_official_segmentation_checkpoint_converts_to_same_predictions(tmp_path):
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules()
    net = _randomized('w18')
    state = _official_seg_checkpoint(net)
    src, dst = tmp_path / 'official.pth', tmp_path / 'ours.pth'
    torch.save(state, src)
    out = run_cli(CONVERT + ['official-seg', str(src), str(dst), '--arch', 'w18'])
    assert 'dropped 1 tensors (loss)' in out
    assert "upsample_mode='bilinear'" in out
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'hrnet_w18_cityscapes.py'))
    cfg.model.pretrained = None
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).eval()
    model.load_state_dict(torch.load(dst)['state_dict'], strict=True)
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        ours, theirs = model._forward(x), _official_forward(net, state, x)
    # float32 rounding only: within 1e-5 of the logits' scale (random weights make them large)
    assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()


@pytest.mark.parametrize('src_format', ['official-cls', 'timm'])
def test_classification_checkpoints_drop_heads_and_load(tmp_path, src_format, capsys,
                                                        monkeypatch):
    net = _randomized('w18_small')
    state = OrderedDict(net.state_dict())
    state['incre_modules.0.0.conv1.weight'] = torch.zeros(32, 16, 1, 1)
    state['downsamp_modules.0.0.weight'] = torch.zeros(256, 128, 3, 3)
    state['final_layer.0.weight'] = torch.zeros(2048, 1024, 1, 1)
    state['classifier.weight'] = torch.zeros(1000, 2048)
    src, dst = tmp_path / 'cls.pth', tmp_path / 'ours.pth'
    torch.save({'state_dict': state} if src_format == 'timm' else state, src)
    code, out, _ = convert_tool([src_format, src, dst, '--arch', 'w18_small'], capsys, monkeypatch)
    assert code == 0
    assert 'classifier, downsamp_modules, final_layer, incre_modules' in out
    assert "upsample_mode='nearest'" in out  # how the classification nets were trained
    fresh = HRNet('w18_small', init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    quiet(fresh).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(fresh(x), net(x)):
            assert torch.equal(a, b)


def test_conversion_with_the_wrong_width_fails_naming_tensors(tmp_path, capsys, monkeypatch):
    state = HRNet('w18').state_dict()
    with pytest.raises(ConversionError, match='another width'):
        convert(state, 'official-cls', 'w32')
    torch.save(state, tmp_path / 'w18.pth')
    code, _, _ = convert_tool(['official-cls', tmp_path / 'w18.pth', tmp_path / 'o.pth',
                               '--arch', 'w32'], capsys, monkeypatch)
    assert isinstance(code, str) and 'another width' in code  # status 1, said on stderr
    assert not (tmp_path / 'o.pth').exists()


def test_truncated_checkpoint_is_reported(tmp_path, capsys, monkeypatch):
    torch.save(HRNet('w18_small').state_dict(), tmp_path / 'good.pth')
    data = (tmp_path / 'good.pth').read_bytes()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 2])
    code, _, _ = convert_tool(['official-cls', tmp_path / 'cut.pth', tmp_path / 'o.pth',
                               '--arch', 'w18_small'], capsys, monkeypatch)
    assert isinstance(code, str) and 'cannot read' in code  # status 1, said on stderr
    assert not (tmp_path / 'o.pth').exists()
    net = HRNet('w18_small', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'cut.pth')))
    with pytest.raises(RuntimeError, match='could not load its pretrained weights'):
        quiet(net)


def test_checkpoint_of_another_width_is_refused_not_half_loaded():
    w18, w32 = HRNet('w18_small'), HRNet('w18')
    before = {k: v.clone() for k, v in w32.state_dict().items()}
    with pytest.raises(ValueError, match=r"stage layout of arch='w18_small'"):
        w32.load_state_dict(w18.state_dict(), strict=False)
    assert all(torch.equal(before[k], v) for k, v in w32.state_dict().items())


@pytest.mark.parametrize('make, error, message', [
    (lambda: torch.rand(1, 1, 64, 64), ValueError, r'3-channel images but got 1 channels'),
    (lambda: torch.rand(3, 64, 64), ValueError, r'add the batch dimension with x\[None\]'),
    (lambda: torch.rand(1, 1, 3, 64, 64), ValueError, 'N x C x H x W'),
    (lambda: torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8), TypeError, 'x.float()'),
    (lambda: torch.full((1, 3, 64, 64), float('nan')), ValueError, 'NaN or inf'),
    (lambda: torch.tensor([[[[float('inf')]]]]).expand(1, 3, 8, 8), ValueError, 'NaN or inf'),
    (lambda: [torch.rand(1, 3, 64, 64)], TypeError, 'torch.Tensor batch'),
])
def test_bad_input_gets_a_clear_error(make, error, message):
    net = HRNet('w18_small', check_finite=True).eval()
    with pytest.raises(error, match=message):
        net(make())


def test_nan_scan_is_opt_in():
    """The scan costs a pass over the batch and a sync: off unless asked for."""
    with torch.no_grad():
        out = HRNet('w18_small').eval()(torch.full((1, 3, 64, 64), float('nan')))
    assert torch.isnan(out[0]).all()


def test_too_small_to_train_one_at_a_time():
    net = HRNet('w18_small').train()
    with pytest.raises(ValueError, match='too small to train'):
        net(torch.rand(1, 3, 32, 32))
    net(torch.rand(2, 3, 32, 32))  # two images give batch norm enough values


def test_any_size_either_works_or_says_why():
    """Any image size (hypothesis draws 30), either upsample mode, training or not, one or two
    images: the backbone's 1/4 stream is ceil(size / 4), the concat neck keeps it, the pyramid
    has 5 levels; or the error says why (too small to train on one image; the pyramid's 16x16
    pooling window). (hypothesis is imported here: seconds that a worker without this test
    does not spend.)"""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    modes = ('bilinear', 'nearest')
    nets = {m: HRNet('w18_small', upsample_mode=m) for m in modes}
    necks = {m: (HRNetConcatNeck([16, 32, 64, 128], upsample_mode=m),
                 HRNetPyramidNeck([16, 32, 64, 128], 16, upsample_mode=m)) for m in modes}

    @settings(max_examples=30, deadline=None)
    @given(h=st.integers(1, 300), w=st.integers(1, 300), mode=st.sampled_from(modes),
           train=st.booleans(), batch=st.integers(1, 2))
    def check(h, w, mode, train, batch):
        net = nets[mode].train(train)
        concat, pyramid = necks[mode]
        x = torch.rand(batch, 3, h, w)
        try:
            with torch.no_grad():
                feats = net(x)
        except ValueError as err:
            assert train and batch == 1 and 'too small to train' in str(err)
            return
        assert feats[0].shape[-2:] == ((h + 3) // 4, (w + 3) // 4)
        with torch.no_grad():
            assert concat(feats)[0].shape[-2:] == feats[0].shape[-2:]
            if min(feats[0].shape[-2:]) < 16:  # HRFPN's floor pooling needs a 16x16 1/4 map
                with pytest.raises(ValueError, match='smaller than the 16x16 pooling window'):
                    pyramid(feats)
            else:
                assert len(pyramid(feats)) == 5
    check()


@pytest.mark.slow
def test_resume_after_sigkill_ends_with_the_uninterrupted_weights(street_data, tmp_path):
    """Kill -9 after the checkpoint at iteration 2, resume, compare with an uninterrupted run."""
    train = toolbox_tool('mmseg', 'train.py')
    cfg = osp.join(REPO, 'tests', 'configs', 'resume_tiny.py')
    opts = ['--cfg-options', f'train_dataloader.dataset.data_root={street_data}']
    full, crashed = str(tmp_path / 'full'), str(tmp_path / 'crashed')
    run_cli([sys.executable, train, cfg, '--work-dir', full] + opts)

    proc = subprocess.Popen([sys.executable, train, cfg, '--work-dir', crashed] + opts,
                            cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not osp.exists(osp.join(crashed, 'last_checkpoint')) and time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail('training ended before its first checkpoint')
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not osp.exists(osp.join(crashed, 'iter_6.pth')), 'killed too late to test resume'
    log = run_cli([sys.executable, train, cfg, '--work-dir', crashed, '--resume'] + opts)
    assert 'resumed' in log.lower() or 'Load checkpoint' in log
    from hrnet_mm.safe_load import load_local_checkpoint
    a = load_local_checkpoint(osp.join(full, 'iter_6.pth'), map_location='cpu')['state_dict']
    b = load_local_checkpoint(osp.join(crashed, 'iter_6.pth'), map_location='cpu')['state_dict']
    assert a.keys() == b.keys()
    diff = {k: (a[k].double() - b[k].double()).abs().max().item() for k in a}
    assert all(v == 0 for v in diff.values()), {k: v for k, v in diff.items() if v}
