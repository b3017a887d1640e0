"""mmengine's pytorch launcher on CPU processes: the process group hrnet_mm initialises is
destroyed before the interpreter finalises (a gloo group left to finalisation can abort a
finished run: "terminate called without an active exception")."""
import sys

import pytest

SCRIPT = '''
import atexit, os, sys
import torch
import torch.distributed as dist
out = os.path.join(sys.argv[1], 'rank' + os.environ['RANK'])
def report():  # registered first, so it runs after anything registered during init_dist
    with open(out, 'a') as f:
        f.write(f'alive at exit: {dist.is_initialized()}, ddp: {ddp() is not None}\\n')
atexit.register(report)
import hrnet_mm  # noqa: F401  (what custom_imports does in a config)
from mmengine.dist import init_dist
init_dist('pytorch', backend='gloo')
t = torch.ones(1)
dist.all_reduce(t)
with open(out, 'a') as f:
    f.write(f'sum {int(t.item())}\\n')
# like a finished Runner: a DDP model (holding the group) left in a reference cycle
import weakref
from torch.nn.parallel import DistributedDataParallel
model = DistributedDataParallel(torch.nn.Linear(2, 2))
model(torch.ones(1, 2)).sum().backward()
model.cycle = [model]
ddp = weakref.ref(model)
del model
'''


@pytest.mark.slow  # two ranks, each a fresh interpreter
def test_process_group_is_destroyed_at_exit(tmp_path):
    """Two ranks started as torchrun starts them (its environment: RANK, LOCAL_RANK,
    WORLD_SIZE, MASTER_ADDR, MASTER_PORT), without torchrun's own interpreter. Would catch: the
    group alive when the interpreter finalises, or a rank that exits nonzero."""
    import subprocess

    from .conftest import cli_env
    script = tmp_path / 'dist_exit.py'
    script.write_text(SCRIPT)
    ranks = []
    for rank in (0, 1):
        env = dict(cli_env(), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE='2',
                   LOCAL_WORLD_SIZE='2', MASTER_ADDR='127.0.0.1', MASTER_PORT='29613')
        ranks.append(subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    for rank, proc in enumerate(ranks):
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f'rank {rank} exited {proc.returncode}:\n{out[-3000:]}'
    for rank in (0, 1):
        assert (tmp_path / f'rank{rank}').read_text() == 'sum 2\nalive at exit: False, ddp: False\n'
