# A deterministic 6-iteration CPU run (no random augmentation, fixed seed) that checkpoints
# every 2 iterations: interrupted and resumed, it must end exactly where an unbroken run does.
_base_ = './demo_tiny.py'
train_dataloader = dict(
    dataset=dict(pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='PackSegInputs'),
    ]))
max_iters = 6
train_cfg = dict(max_iters=max_iters, val_interval=100)
param_scheduler = [dict(type='PolyLR', eta_min=1e-5, power=1.0, by_epoch=False, begin=0,
                        end=max_iters)]
default_hooks = dict(checkpoint=dict(interval=2, max_keep_ckpts=10, save_last=True))
randomness = dict(seed=0, deterministic=True)
val_cfg = None
val_dataloader = None
val_evaluator = None
test_cfg = None
test_dataloader = None
test_evaluator = None
