"""Every shipped config parses, builds through mmseg's registry and runs forward small."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from .conftest import REPO, averaging_weights, run_tool, run_tool_main

CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', '*.py'))
                 + glob.glob(osp.join(REPO, 'configs', 'examples', '*.py')))


def build_uninitialised(path):
    """``(cfg, model)`` built as the tools build a config, without the seconds of weight
    initialisation a W48 takes (:func:`hrnet_mm.builder.build_model_shapes`), with
    :func:`averaging_weights`."""
    from hrnet_mm.builder import build_model_shapes
    cfg, _, model = build_model_shapes(path)
    assert cfg.custom_imports['imports'] == ['hrnet_mm']
    return cfg, averaging_weights(model)


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_builds_and_runs_forward(path):
    """Built as the tools build it, the model is ours, runs forward at a small size with the
    outputs the toolbox's heads expect, and has the parameter count and codebase its metafile
    entry declares (what `mim search` shows; the examples have no entry)."""
    cfg, model = build_uninitialised(path)
    assert type(model.backbone).__module__.startswith('hrnet_mm')
    if osp.dirname(path) == osp.join(REPO, 'configs'):
        entry = {m['Config']: m for m in _metafile()['Models']}[osp.relpath(path, REPO)]
        assert entry['Metadata']['Codebase'] == cfg.default_scope
        assert entry['Metadata']['Parameters'] == sum(p.numel() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        if cfg.default_scope == 'mmseg':
            out = model._forward(torch.rand(1, 3, 64, 128))
            head = cfg.model.decode_head
            num_classes = (head[-1] if isinstance(head, list) else head)['num_classes']
            assert out.shape == (1, num_classes, 16, 32)
        elif cfg.default_scope == 'mmpose':
            w, h = cfg.codec['input_size']
            out = model._forward(torch.rand(1, 3, h, w))
            hw, hh = cfg.codec['heatmap_size']
            assert out.shape == (1, 17, hh, hw)
        else:
            feats = model.extract_feat(torch.rand(1, 3, 128, 160))
            # 1/4 of 128x160, pooled by 2**i with floor (as mmdet's HRFPN), then the per-level
            # 3x3 conv of the neck's stride
            s = model.neck.out_strides[0] // 4

            def conv(n):
                return (n - 1) // s + 1
            assert [tuple(f.shape[1:]) for f in feats] == [
                (256, conv(32 // 2 ** i), conv(40 // 2 ** i)) for i in range(5)]
            # the levels sit where the head's anchors or points expect them
            head = cfg.model.get('rpn_head') or cfg.model.bbox_head
            strides = head.get('anchor_generator', {}).get('strides') or head.get('strides')
            assert model.neck.out_strides == tuple(strides)


def _pose_flops(model):
    from mmengine.analysis import FlopAnalyzer

    class Tensors(torch.nn.Module):  # the estimator's tensor path, for the FLOP counter
        def __init__(self, estimator):
            super().__init__()
            self.estimator = estimator

        def forward(self, x):
            return self.estimator._forward(x)
    return FlopAnalyzer(Tensors(model.eval()), (torch.rand(1, 3, 256, 192),)).total()


def test_pose_w32_has_the_papers_size():
    """28.5M parameters as the paper; FLOPs exactly mmpose's HRNet-W32 (mmengine counts 7.69 G
    multiply-adds, convs 7.65 G, where the paper states 7.1 G: within 10%)."""
    from mmengine.hub import get_config
    cfg, model = build_uninitialised(osp.join(REPO, 'configs', 'hrnet_w32_coco_256x192.py'))
    params = sum(p.numel() for p in model.parameters())
    assert round(params / 1e6, 1) == 28.5, params
    stock = get_config('mmpose::body_2d_keypoint/topdown_heatmap/coco/'
                       'td-hm_hrnet-w32_8xb64-210e_coco-256x192.py')
    stock.model.backbone.init_cfg = None
    from mmpose.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpose'):
        theirs = MODELS.build(stock.model)
    assert sum(p.numel() for p in theirs.parameters()) == params
    flops = _pose_flops(model)
    assert flops == _pose_flops(theirs)
    assert abs(flops / 1e9 - 7.1) / 7.1 < 0.1, flops


@pytest.mark.parametrize('name, width', [('hrnet_w48_cityscapes.py', 48),
                                         ('hrnet_w18_cityscapes.py', 18)])
def test_widths_are_stated_once_and_reach_every_part(name, width):
    cfg = Config.fromfile(osp.join(REPO, 'configs', name))
    streams = [width * 2 ** i for i in range(4)]
    assert cfg.model.backbone.arch == f'w{width}'
    assert cfg.model.neck.in_channels == streams
    assert cfg.model.decode_head.in_channels == sum(streams)
    assert cfg.model.pretrained == f'open-mmlab://msra/hrnetv2_w{width}'


def test_unreachable_imagenet_weights_say_how_to_train_without_them(tmp_path):
    from hrnet_mm import HRNet
    missing = str(tmp_path / 'hrnetv2_w18_small.pth')
    net = HRNet('w18_small', pretrained=missing)
    with pytest.raises(RuntimeError, match=r'model\.pretrained=None'):
        net.init_weights()


def _metafile():
    import yaml
    with open(osp.join(REPO, 'model-index.yml')) as f:
        index = yaml.safe_load(f)
    assert index['Import'] == ['configs/metafile.yml']
    with open(osp.join(REPO, 'configs', 'metafile.yml')) as f:
        return yaml.safe_load(f)


def test_metafile_lists_every_config():
    """model-index.yml -> configs/metafile.yml (read by mim): one entry per config, in
    OpenMMLab's format (each entry's parameter count is checked against its built model by
    test_config_builds_and_runs_forward)."""
    meta = _metafile()
    assert [c['Name'] for c in meta['Collections']] == ['hrnet_mm']
    models = meta['Models']
    listed = {m['Config'] for m in models}
    assert listed == {osp.relpath(p, REPO) for p in glob.glob(osp.join(REPO, 'configs', '*.py'))}
    # FCN-HRNetV2-W48 at 512x1024: mmengine's FlopAnalyzer counts mmseg's own model
    # (fcn_hr48_4xb2-80k_cityscapes-512x1024.py) at 187,866,660,864, of which 155,713,536 in the
    # same-size bilinear resizes mmseg runs after each exchange unit's upsampling (exact
    # copies, which hrnet_mm skips)
    w48 = next(m for m in models if m['Name'] == 'hrnet_w48_cityscapes')
    assert w48['Metadata']['FLOPs'] == 187_866_660_864 - 155_713_536
    for entry in models:
        assert entry['In Collection'] == 'hrnet_mm'
        assert {'Codebase', 'Task', 'Training Data', 'Parameters', 'FLOPs'} <= set(
            entry['Metadata']), entry['Name']


def test_metafile_results_are_their_sources_numbers():
    """Every stated result names its source; the toolboxes' are read back from the toolboxes'
    own installed metafiles."""
    import sys
    sys.path.insert(0, osp.join(REPO, 'tools'))
    from metafile import REFERENCES, reference_results
    for entry in _metafile()['Models']:
        for result in entry.get('Results', []):
            assert result['Source'] and result['Metrics'], entry['Name']
        if entry['Name'] in REFERENCES:
            assert entry['Results'] == reference_results(entry['Name']), entry['Name']
    w48 = next(m for m in _metafile()['Models'] if m['Name'] == 'hrnet_w48_cityscapes')
    assert w48['Results'][0]['Metrics']['mIoU'] == 79.93  # mmseg's 80k figure


@pytest.mark.slow
@pytest.mark.xdist_group('metafile')  # one process: configs that share a network count it once
@pytest.mark.parametrize('path', sorted(glob.glob(osp.join(REPO, 'configs', '*.py'))),
                         ids=osp.basename)
def test_metafile_entry_is_recounted(path):
    """Each config's entry as tools/metafile.py writes it now, FLOPs recounted at the entry's
    input size: what `python tools/metafile.py --check` compares, one config per test."""
    import sys
    sys.path.insert(0, osp.join(REPO, 'tools'))
    from metafile import entry
    listed = {m['Config']: m for m in _metafile()['Models']}
    assert listed[osp.relpath(path, REPO)] == entry(path)


def test_flops_are_counted_from_shapes_with_torchs_convolution_back_after():
    """tools/get_flops.py traces with uncomputed convolutions: the count mmengine makes on the
    trace is the hand count, with them computed or not, and torch's own kernel computes again
    afterwards, an error inside included. Would catch a wrong output size (stride, padding,
    dilation), a lost memory format, or a convolution left answering zeros."""
    import sys
    sys.path.insert(0, osp.join(REPO, 'tools'))
    from get_flops import shapes_only_convolutions
    from mmengine.analysis import FlopAnalyzer
    net = torch.nn.Sequential(
        torch.nn.Conv2d(4, 8, 3, stride=2, padding=2, dilation=2, groups=2),
        torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 1)).to(memory_format=torch.channels_last)
    x = torch.randn(1, 4, 9, 11).contiguous(memory_format=torch.channels_last)
    # output 5x6: 8 x (4/2) x 3x3 weights at 30 places, then 3 x 8 at 30: 4320 + 720
    with torch.no_grad():
        computed = net(x)
        assert FlopAnalyzer(net, (x,)).total() == 5040
        with shapes_only_convolutions():
            assert FlopAnalyzer(net, (x,)).total() == 5040
            out = net(x)
        assert out.shape == computed.shape and out.stride() == computed.stride()
        assert not out.any()
        with pytest.raises(ValueError), shapes_only_convolutions():
            raise ValueError
        torch.testing.assert_close(net(x), computed)


@pytest.mark.slow
def test_metafile_check_names_the_stale_entry(tmp_path, monkeypatch):
    """The --check command on one config, in a copy of the repository: up to date as
    shipped; with its FLOPs changed in the copy's metafile, it fails naming the config and the
    fix (the tool's main() in this process, as the command line runs it, without a second
    interpreter)."""
    import shutil
    config = 'configs/hrnet_w32_coco_256x192.py'
    repo = tmp_path / 'repo'
    shutil.copytree(osp.join(REPO, 'configs'), repo / 'configs')
    shutil.copytree(osp.join(REPO, 'tools'), repo / 'tools')
    check = [str(repo / 'tools' / 'metafile.py'), '--check', config]
    monkeypatch.chdir(repo)
    assert 'up to date for 1 config' in run_tool(check[0], check[1:])
    meta = repo / 'configs' / 'metafile.yml'
    text = meta.read_text()
    flops = str(next(m for m in _metafile()['Models']
                     if m['Config'] == config)['Metadata']['FLOPs'])
    assert text.count(f'FLOPs: {flops}') == 1
    meta.write_text(text.replace(f'FLOPs: {flops}', f'FLOPs: {int(flops) + 1}'))
    code, tool = run_tool_main(check[0], check[1:], monkeypatch)
    assert tool['REPO'] == str(repo)  # the copy's metafile is the one checked
    assert isinstance(code, str), code  # it exits with a message
    assert f'the entry of {config} is out of date: python tools/metafile.py' in code


def test_mim_search_lists_every_config():
    """As a user finds us: `mim search hrnet_mm` reads the installed package's .mim."""
    import re
    from .conftest import run_cli
    out = run_cli(['mim', 'search', 'hrnet_mm'])
    names = {osp.splitext(osp.basename(p))[0]
             for p in glob.glob(osp.join(REPO, 'configs', '*.py'))}
    missing = [n for n in names if not re.search(rf'\b{re.escape(n)}\b', out)]
    assert not missing, out[-3000:]
