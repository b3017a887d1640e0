"""The inference fast path keeps the outputs; the backbone traces without graph breaks."""
import copy

import pytest
import torch

from hrnet_mm import HRNet, HRNetConcatNeck, optimize_for_inference

from .conftest import quiet
from .test_parity import randomize_norm_stats


@pytest.mark.parametrize('arch', ['w18_small', 'w18'])
def test_folded_channels_last_model_gives_the_same_outputs(arch):
    model = torch.nn.Sequential(quiet(HRNet(arch)), HRNetConcatNeck(
        [18 * 2 ** i if arch == 'w18' else 16 * 2 ** i for i in range(4)], out_channels=64))
    randomize_norm_stats(model)
    model.eval()
    fast = optimize_for_inference(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    x = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        (a,), (b,) = model(x), fast(x.contiguous(memory_format=torch.channels_last))
    # Folding changes float32 rounding only: within 1e-4 of the output's own scale
    # (random weights give activations in the tens).
    assert (a - b).abs().max() <= 1e-4 * max(1.0, a.abs().max().item())


def test_backbone_traces_without_graph_breaks():
    import torch._dynamo
    torch._dynamo.reset()
    net = HRNet('w18_small').eval()
    explanation = torch._dynamo.explain(net)(torch.rand(1, 3, 64, 96))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
