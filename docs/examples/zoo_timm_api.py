"""Tutorial: the zoo's models behave like a timm model family.

A narrow RepMLPNet with the T224 layout (designed for 32x32 inputs) keeps the
example fast; every call works the same on the full-size models. Needs only
torch; the last section uses timm's ``reparameterize_model`` when timm is
installed.
"""

# --8<-- [start:cfg]
import torch

import reparam_models
from reparam.testing import randomize_norms

TINY_T224 = dict(
    channels=(16, 32, 64, 128),
    num_blocks=(1, 1, 1, 1),
    num_sharesets=(1, 2, 4, 8),
    hs=(8, 4, 2, 1),
    img_size=32,
)

model = reparam_models.create_model(
    "repmlpnet_t224", num_classes=10, **TINY_T224
)
cfg = model.pretrained_cfg  # also model.default_cfg
for key in ("input_size", "mean", "std", "crop_pct", "interpolation",
            "first_conv", "classifier", "num_classes", "origin_url", "file"):
    print(f"{key:13}: {cfg[key]}")
# --8<-- [end:cfg]

# --8<-- [start:classifier]
print(model.get_classifier())
model.reset_classifier(5)  # a fresh head
x = torch.randn(2, 3, 32, 32)
print("logits   :", tuple(model(x).shape))
model.reset_classifier(0, global_pool="max")  # no head: pooled features
print("features :", tuple(model(x).shape))
model.reset_classifier(10, global_pool="avg")
# --8<-- [end:classifier]

# --8<-- [start:features]
backbone = reparam_models.create_model("repmlpnet_t224", features_only=True,
                                       out_indices=(1, 3), **TINY_T224)
print("channels :", backbone.feature_info.channels())
print("strides  :", backbone.feature_info.reduction())
print("maps     :", [tuple(m.shape) for m in backbone(x)])
# --8<-- [end:features]

# --8<-- [start:pretrained]
# no local weights file is known yet:
print(reparam_models.list_models(pretrained=True))
try:
    reparam_models.create_model("repmlpnet_t224", pretrained=True)
except reparam_models.PretrainedWeightsError as err:
    print(str(err)[:80], "...")
# --8<-- [end:pretrained]

# --8<-- [start:checkpointing]
model.train()
model.set_grad_checkpointing()  # each unit recomputed in the backward pass
model(x).logsumexp(dim=1).sum().backward()
model.set_grad_checkpointing(False)
# --8<-- [end:checkpointing]

# --8<-- [start:reparameterize]
model.eval()
randomize_norms(model, 0)  # trained-looking norm statistics
with torch.no_grad():
    before = model(x)
    model.reparameterize()  # reparam.deploy(model, inplace=True)
    after = model(x)
err = ((after - before).norm() / before.norm()).item()
print(type(model).__name__, "relative error:", err)

try:
    from timm.utils.model import reparameterize_model
except ImportError:
    print("timm is not installed: skipping timm's reparameterize_model")
else:
    fresh = reparam_models.create_model(
        "repmlpnet_t224", num_classes=10, **TINY_T224
    ).eval()
    randomize_norms(fresh, 0)
    # calls .reparameterize() on the submodules:
    deployed = reparameterize_model(fresh)
    with torch.no_grad():
        err = ((deployed(x) - fresh(x)).norm() / fresh(x).norm()).item()
    print("timm's reparameterize_model, relative error:", err)
    left = hasattr(deployed, "head_norm")
    print("head_norm left for model.reparameterize():", left)
# --8<-- [end:reparameterize]
