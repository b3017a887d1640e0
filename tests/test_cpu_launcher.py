"""mmengine's pytorch launcher on CPU processes: the process group hrnet_mm initialises is
destroyed before the interpreter finalises (a gloo group left to finalisation can abort a
finished run: "terminate called without an active exception")."""
import sys

from .conftest import run_cli

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


def test_process_group_is_destroyed_at_exit(tmp_path):
    script = tmp_path / 'dist_exit.py'
    script.write_text(SCRIPT)
    run_cli([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
             '--master_port=29613', str(script), str(tmp_path)], timeout=300)
    for rank in (0, 1):
        assert (tmp_path / f'rank{rank}').read_text() == 'sum 2\nalive at exit: False, ddp: False\n'
