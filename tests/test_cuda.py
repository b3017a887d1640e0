"""The GPU path, on a CUDA host (skipped with the reason elsewhere): mixed-precision training
takes CUDA's path for a model on the GPU, inference and export handle a model there, and the
backbone matches mmseg's on the GPU. tools/gpu_check.py is the full check."""
import copy

import pytest
import torch

from hrnet_mm import HRNet, MixedPrecisionOptimWrapper, prepare_for_inference

from .conftest import TINY_EXTRA, quiet

pytestmark = pytest.mark.cuda


def test_float16_training_on_the_gpu_scales_the_loss():
    model = torch.nn.Conv2d(3, 4, 3).cuda()
    wrapper = MixedPrecisionOptimWrapper(dtype='float16',
                                         optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert wrapper.loss_scaler is not None
    with wrapper.optim_context(model):
        out = model(torch.randn(1, 3, 8, 8, device='cuda'))
    assert out.dtype == torch.float16


def test_auto_follows_the_gpus_compute_capability():
    major, _ = torch.cuda.get_device_capability(0)
    expected = torch.bfloat16 if major >= 8 else torch.float16 if major >= 7 else torch.float32
    model = torch.nn.Conv2d(3, 4, 3).cuda()
    wrapper = MixedPrecisionOptimWrapper(dtype='auto',
                                         optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert wrapper.cast_dtype == expected


@pytest.mark.parametrize('precision', ['fp16', 'bf16'])
def test_prepared_gpu_model_keeps_the_outputs(precision):
    net = quiet(HRNet('w18_small')).cuda().eval()
    fast = prepare_for_inference(net, precision=precision)
    x = torch.randn(1, 3, 128, 256, device='cuda')
    with torch.no_grad():
        ref, out = net(x)[0], fast(x)[0]
    assert out.device.type == 'cuda' and out.dtype == torch.float32
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max()


def test_export_from_a_gpu_model(tmp_path):
    pytest.importorskip('onnxruntime')
    from hrnet_mm.deploy import Runtime, export_onnx
    from .conftest import build_model, REPO
    import os.path as osp
    _, model = build_model(osp.join(REPO, 'tests', 'configs', 'demo_tiny.py'))
    cpu = copy.deepcopy(model).eval()
    path = export_onnx(model.cuda().eval(), 'seg', str(tmp_path / 'm.onnx'),
                       torch.rand(1, 3, 64, 64, device='cuda'))
    assert next(model.parameters()).is_cuda  # the given model stays where it was
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        ref = cpu._forward(x)
    assert (Runtime('onnxruntime', path)(x)[0] - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_backbone_matches_mmseg_on_the_gpu():
    from mmseg.models.backbones import HRNet as SegHRNet
    torch.backends.cudnn.deterministic = True
    try:
        theirs = quiet(SegHRNet(extra=copy.deepcopy(TINY_EXTRA))).cuda()
        theirs.eval()
        ours = HRNet(arch=None, extra=copy.deepcopy(TINY_EXTRA), compat='mmseg').cuda().eval()
        ours.load_state_dict(theirs.state_dict())
        x = torch.randn(2, 3, 97, 131, device='cuda')
        with torch.no_grad():
            for a, b in zip(ours(x), theirs(x)):
                assert torch.equal(a, b)
    finally:
        torch.backends.cudnn.deterministic = False
