"""The suite's worker groups hold. tools/test.sh runs the tests that share a trained model
(``xdist_group``: 'trained_coco', 'trained_street', 'runner_checkpoint') with ``--dist
loadgroup``, which keeps each group on one worker, so the model is trained once. pytest-xdist
names a test's group by appending ``@group`` to its node id, and schedules by that name. Would
catch: a pytest whose node ids pytest-xdist can no longer rewrite (9.2 keeps them elsewhere;
requirements/constraints.txt), under which every group is silently split and each worker
trains the shared models again."""
import pytest


@pytest.mark.xdist_group('suite_groups')
def test_a_grouped_test_carries_its_group_to_the_scheduler(request):
    if not getattr(request.config.option, 'loadgroup', False):
        pytest.skip('not run by tools/test.sh (no --dist loadgroup): nothing is grouped')
    assert request.node.nodeid.endswith('@suite_groups'), request.node.nodeid
