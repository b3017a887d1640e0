"""tools/gpu_check.py, the one command that checks the GPU path: on a host without CUDA it
checks nothing and exits 2; its checks run end to end at toy sizes on the CPU (--cpu-smoke),
so a GPU host finds a script that runs. On a CUDA host the real run is its own test."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch

from .conftest import REPO, cli_env, run_cli

CHECK = [sys.executable, osp.join(REPO, 'tools', 'gpu_check.py')]


def test_without_cuda_it_says_so_and_checks_nothing(tmp_path, monkeypatch, capsys):
    """The tool's main in this process, on a host that shows no CUDA device (simulated, so
    that a GPU host runs this test too). Would catch: a check run, or a file written, where
    nothing can be checked; a status of 0 that a script would read as success."""
    import runpy
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    out = tmp_path / 'check.json'
    status = runpy.run_path(CHECK[1])['main'](['--out', str(out)])
    said = capsys.readouterr().out
    assert status == 2, said
    assert 'no CUDA device' in said and 'nothing was checked' in said
    assert not out.exists()


@pytest.mark.slow
def test_every_check_runs_at_toy_sizes_on_the_cpu(tmp_path):
    """Would catch: a check that crashes, a row without its bound, exactness lost against
    mmseg's real modules (bit for bit on the CPU), bf16 training that does not learn."""
    out = tmp_path / 'check.json'
    log = run_cli(CHECK + ['--cpu-smoke', '--out', str(out)], timeout=600)
    report = json.loads(out.read_text())
    rows = report['rows']
    assert {r['check'] for r in rows} == {'a', 'b', 'c', 'd', 'e'}
    exact = [r for r in rows if r['check'] == 'a']
    assert len(exact) == 3 and all(r['value'] == 0 for r in exact), exact
    training = [r for r in rows if r['check'] == 'b']
    assert len(training) == 2 and all(r['ok'] for r in training), training
    for r in training:
        assert r['losses'][-1] < 0.5 * r['losses'][0]
    assert all(r['ok'] for r in rows if r['check'] == 'c')
    targets = [r for r in rows if r['check'] == 'd' and r.get('unit') == 'x']
    assert [r['bound'] for r in targets] == [3.0, 1.3]  # printed, not judged on a CPU
    assert 'W18 logits, train mode, vs mmseg' in log and f'JSON: {out}' in log


@pytest.mark.cuda
def test_the_gpu_path(tmp_path):
    """On a CUDA host: the whole check, every judged row holding."""
    out = tmp_path / 'check.json'
    proc = subprocess.run(CHECK + ['--out', str(out)], cwd=REPO, env=cli_env(gpus=True),
                          text=True, capture_output=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    assert torch.cuda.is_available()
