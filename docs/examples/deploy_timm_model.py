"""Tutorial: deploy a timm model with the generic engine.

Needs ``pip install timm`` (the ``timm`` extra); without it the script says so
and exits.
"""

# --8<-- [start:build]
import copy
import importlib.util
import sys

import torch
from torch import nn

import reparam
from reparam.demo import randomize_batch_norms

if importlib.util.find_spec("timm") is None:
    print("timm is not installed: pip install timm")
    sys.exit(0)

import timm

torch.manual_seed(0)
model = timm.create_model("repvit_m0_9", pretrained=False, num_classes=10)
# or pretrained=True, if you can download
model = randomize_batch_norms(model).eval()
x = torch.randn(1, 3, 64, 64)  # small input: any size the model accepts
# --8<-- [end:build]

# --8<-- [start:deploy]
result = reparam.deploy_with_report(model, x)
print(result.report.fired())
print(
    f"parameters {result.report.params_before:,}"
    f" -> {result.report.params_after:,}"
)
print("relative error:", result.report.max_relative_error)
# --8<-- [end:deploy]


# --8<-- [start:compare]
def layers(m: nn.Module) -> dict[str, int]:
    convs = sum(isinstance(c, nn.Conv2d) for c in m.modules())
    norms = sum(
        isinstance(c, nn.modules.batchnorm._BatchNorm) for c in m.modules()
    )
    return {"convs": convs, "batch norms": norms}


from timm.utils.model import reparameterize_model

# timm's hand-written conversion
timm_deployed = reparameterize_model(copy.deepcopy(model))
print("training form :", layers(model))
print("reparam.deploy:", layers(result.model))
print("timm's own    :", layers(timm_deployed))
with torch.no_grad():
    print(
        "ours vs timm's:",
        reparam.relative_error(timm_deployed(x), result.model(x)),
    )
# --8<-- [end:compare]
