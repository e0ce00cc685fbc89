"""Tutorial: RepMLPNet, training form against deployed form.

By default this builds a *tiny* RepMLPNet (the T224 recipe, narrowed and sized
for 32x32 inputs) so it runs in seconds on a CPU. ``--full`` uses the real
``repmlpnet_t224`` at 224x224 (about 38M parameters; deploying it takes a minute
or two on a laptop CPU).
"""

# --8<-- [start:build]
import sys

import torch

import reparam
import reparam_models
from reparam.demo import randomize_batch_norms

FULL = "--full" in sys.argv
if FULL:
    overrides, size = {}, 224
else:  # the T224 layout: four stages, share sets, 1x1 + 3x3 Local Perceptron
    overrides = dict(
        channels=(16, 32, 64, 128),
        num_blocks=(1, 1, 1, 1),
        num_sharesets=(1, 2, 4, 8),
        # the partition size per stage: the stage's map size at img_size
        hs=(8, 4, 2, 1),
        img_size=32,
        num_classes=10,
    )
    size = 32

torch.manual_seed(0)
model = reparam_models.create_model("repmlpnet_t224", **overrides)
model = randomize_batch_norms(model).eval()  # trained-looking BN statistics
print(model.stages[0][0].repmlp_block)  # the training-time RepMLP block
# --8<-- [end:build]

# --8<-- [start:deploy]
x = torch.randn(4, 3, size, size)
result = reparam.deploy_with_report(model, x)
deployed, report = result.model, result.report
print(report.fired())
print(deployed.stages[0][0].repmlp_block)  # only the FC (fc3) is left
# --8<-- [end:deploy]

# --8<-- [start:compare]
with torch.no_grad():
    y_train, y_deploy = model(x), deployed(x)
print("max |difference|   :", float((y_train - y_deploy).abs().max()))
print("relative error     :", reparam.relative_error(y_train, y_deploy))
print(
    "same predictions   :",
    bool((y_train.argmax(1) == y_deploy.argmax(1)).all()),
)
print(
    "float64 rel. error :",
    reparam.assert_equivalent(model, deployed, x, in_float64=True),
)


def count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


print(f"parameters         : {count(model):,} -> {count(deployed):,}")
print(f"FLOPs per forward  : {report.flops_before:,} -> {report.flops_after:,}")
# --8<-- [end:compare]
