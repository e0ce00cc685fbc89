"""Canonical views of a traced graph: what a node *computes*, whatever way it was written.

* :func:`sum_terms` sees ``a + b``, ``torch.add``, ``Tensor.add``, ``+=`` and ``sum([...])`` (and
  any chain of them) as one n-ary sum, so rules never deal with commutativity or association.
* :func:`channel_affine` sees every eval-mode batch norm (BatchNorm1d/2d/3d, SyncBatchNorm, a
  subclass traced into ``F.batch_norm`` on constant statistics) and a per-channel scale
  ``x * gamma`` as the same thing: ``y = scale[c] * x + shift[c]`` along dim 1.
* :func:`drop_noops` removes eval-mode Dropout, Identity and activations that are provably
  the identity (:func:`is_identity_activation`).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from reparam.errors import Refusal
from reparam.graph.anchors import MODULE_CALL, function_keys
from reparam.graph.trust import untrusted_reason
from reparam.transforms import norm_to_affine

_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_MUL_FUNCTIONS = {operator.mul, operator.imul, torch.mul}
_NORM_FUNCTIONS = (F.batch_norm, torch.batch_norm)
#: anchor keys (:mod:`reparam.graph.anchors`) of the nodes :func:`is_add` may accept
ADD_KEYS = function_keys(_ADD_FUNCTIONS, methods=["add"])
#: anchor keys of the nodes :func:`could_be_channel_affine` may accept
AFFINE_KEYS = function_keys([*_NORM_FUNCTIONS, *_MUL_FUNCTIONS], methods=["mul"]) | {MODULE_CALL}
_DROPOUT_FUNCTIONS = {
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.dropout3d,
    F.alpha_dropout,
    F.feature_alpha_dropout,
}
_NOOP_MODULES = (
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


def resolve_attr(root: nn.Module, target: str) -> object:
    obj: object = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def is_add(node: Node) -> bool:
    """A plain two-operand tensor sum (alpha, if given, is 1)."""
    if node.kwargs.get("alpha", 1) != 1 or node.kwargs.get("out") is not None:
        return False
    if node.op == "call_function" and node.target in _ADD_FUNCTIONS:
        return len(node.args) == 2
    return node.op == "call_method" and node.target == "add" and len(node.args) == 2


def _is_zero(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0


@dataclass
class SumView:
    """An n-ary sum: ``root`` computes ``sum(terms)``."""

    root: Node
    terms: list[Node]
    adds: list[Node] = field(default_factory=list)  # the add nodes of the tree, root first


def sum_terms(node: Node) -> SumView | None:
    """Flatten the tree of single-use adds rooted at ``node``; None if it is not a sum."""
    if not is_add(node):
        return None
    view = SumView(root=node, terms=[])

    def visit(n: Node) -> bool:
        view.adds.append(n)
        for arg in n.args:
            if isinstance(arg, Node):
                if is_add(arg) and single_user(arg):
                    if not visit(arg):
                        return False
                else:
                    view.terms.append(arg)
            elif not _is_zero(arg):
                return False  # a scalar offset is not a sum of branches
        return True

    if not visit(node) or len(view.terms) < 2:
        return None
    return view


def is_sum_root(node: Node) -> bool:
    """An add that is not itself absorbed into a larger single-use sum."""
    if not is_add(node):
        return False
    users = value_users(node)
    return not (len(users) == 1 and is_add(users[0]))


@dataclass
class AffineView:
    """``node`` computes ``scale[c] * input + shift[c]`` (channels on dim 1)."""

    node: Node
    input: Node
    scale: torch.Tensor
    shift: torch.Tensor
    kind: str
    module_path: str | None = None
    param_rank: int | None = None  # for ``x * gamma``: gamma's rank (it must reach dim 1)
    leading_one: bool = False  # gamma is (1, C, 1, ...) rather than (C, 1, ...)
    all_ones: bool = False  # gamma is (1, 1, ..., 1): one factor for every element

    def fits_rank(self, rank: int | None) -> bool:
        """Whether the affine acts on dim 1 of a tensor of this rank: ``(C, 1, 1)`` does
        for a rank-4 tensor only (for rank 3 its C meets the batch dim), ``(1, C, 1, 1)``
        for rank 4 only."""
        if self.param_rank is None:
            return True
        if rank is None:
            return False
        if self.all_ones:  # broadcasts to any rank at least its own, without growing it
            return rank >= self.param_rank
        return rank == (self.param_rank if self.leading_one else self.param_rank + 1)


def _degenerate(running_var: torch.Tensor, eps: float) -> bool:
    return bool(((running_var.detach().double() + float(eps)) <= 0).any()) or bool(
        (~torch.isfinite(running_var.detach())).any()
    )


_AFFINES: dict[tuple, tuple[tuple, tuple[torch.Tensor, torch.Tensor] | None]] = {}


def forget_norm_affines() -> None:
    """Drop the kept affines (and so the references to the norms' tensors)."""
    _AFFINES.clear()


def _norm_affine(
    mean: torch.Tensor,
    var: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``norm_to_affine`` of these statistics, or None where ``var + eps <= 0`` (or is not
    finite). Rules ask for the same norm at every node and every pass: the result is kept
    while the tensors are the same objects at the same version (an in-place write bumps
    ``Tensor._version``)."""
    tensors = (mean, var, weight, bias)
    key = (*(id(t) for t in tensors), float(eps))
    stamp = tuple(None if t is None else t._version for t in tensors)
    hit = _AFFINES.get(key)
    if hit is not None and hit[0][0] == stamp and all(
        a is b for a, b in zip(hit[0][1], tensors, strict=True)
    ):
        return hit[1]
    result = None if _degenerate(var, eps) else norm_to_affine(mean, var, weight, bias, eps)
    if len(_AFFINES) > 4096:
        _AFFINES.clear()
    _AFFINES[key] = ((stamp, tensors), result)
    return result


def _norm_module_affine(
    node: Node, module: nn.modules.batchnorm._BatchNorm
) -> AffineView | Refusal:
    reason = untrusted_reason(module)
    if reason is not None:
        return Refusal(f"batch norm '{node.target}' is kept as it is: {reason}")
    if module.training:
        return Refusal(f"batch norm '{node.target}' is in training mode (batch statistics)")
    if module.running_mean is None or module.running_var is None:
        return Refusal(
            f"batch norm '{node.target}' has no running statistics "
            "(track_running_stats=False normalizes with batch statistics)"
        )
    affine = _norm_affine(
        module.running_mean, module.running_var, module.weight, module.bias, module.eps
    )
    if affine is None:
        return Refusal(
            f"batch norm '{node.target}' has running_var + eps <= 0 (or not finite) in some "
            "channel: it is not an affine map"
        )
    scale, shift = affine
    return AffineView(node, node.args[0], scale, shift, "batch_norm", str(node.target))


def _functional_norm_affine(node: Node, root: nn.Module) -> AffineView | Refusal:
    names = [
        "input",
        "running_mean",
        "running_var",
        "weight",
        "bias",
        "training",
        "momentum",
        "eps",
    ]
    bound = dict(zip(names, node.args, strict=False))
    bound.update(node.kwargs)
    training = bound.get("training", False)
    if training is not False:
        return Refusal("functional batch_norm normalizes with batch statistics (training=True)")
    tensors = {}
    for name in ("running_mean", "running_var", "weight", "bias"):
        value = bound.get(name)
        if value is None:
            if name in ("running_mean", "running_var"):
                return Refusal("functional batch_norm without running statistics")
            tensors[name] = None
        elif isinstance(value, Node) and value.op == "get_attr":
            tensors[name] = resolve_attr(root, value.target)
        else:
            return Refusal(f"functional batch_norm's {name} is not a constant of the model")
    eps = bound.get("eps", 1e-5)
    if not isinstance(eps, (int, float)):
        return Refusal("functional batch_norm's eps is not a constant")
    affine = _norm_affine(
        tensors["running_mean"],
        tensors["running_var"],
        tensors["weight"],
        tensors["bias"],
        float(eps),
    )
    if affine is None:
        return Refusal("functional batch_norm has running_var + eps <= 0 in some channel")
    scale, shift = affine
    return AffineView(node, bound["input"], scale, shift, "functional_batch_norm")


def _scale_affine(node: Node, root: nn.Module) -> AffineView | Refusal | None:
    a, b = node.args[0], node.args[1]
    for x, p in ((a, b), (b, a)):
        if (
            isinstance(p, Node)
            and p.op == "get_attr"
            and isinstance(x, Node)
            and x.op != "get_attr"
        ):
            value = resolve_attr(root, p.target)
            if not isinstance(value, torch.Tensor) or value.dim() < 1:
                return None
            shape = list(value.shape)
            # (C, 1, ..., 1) or (1, C, 1, ..., 1): one factor per channel on dim 1
            leading_one = bool(shape and shape[0] == 1 and len(shape) >= 2)
            if leading_one:
                shape = shape[1:]
            if len(shape) < 2 or any(s != 1 for s in shape[1:]):
                return None
            scale = value.reshape(-1)
            return AffineView(
                node,
                x,
                scale,
                torch.zeros_like(scale),
                "channel_scale",
                str(p.target),
                param_rank=value.dim(),
                leading_one=leading_one,
                all_ones=value.numel() == 1,
            )
    return None


def could_be_channel_affine(node: Node, root: nn.Module) -> bool:
    """False where :func:`channel_affine` is None for sure (a look at the node alone)."""
    if node.op == "call_module":
        try:
            module = resolve_attr(root, node.target)
        except AttributeError:
            return True
        return isinstance(module, nn.modules.batchnorm._BatchNorm)
    if node.op == "call_function":
        return node.target in _NORM_FUNCTIONS or node.target in _MUL_FUNCTIONS
    return node.op == "call_method" and node.target == "mul"


def channel_affine(node: Node, root: nn.Module) -> AffineView | Refusal | None:
    """The per-channel affine that ``node`` computes, a Refusal saying why it is not one in
    eval semantics (a norm on batch statistics), or None when ``node`` is no norm or scale."""
    if node.op == "call_module":
        module = resolve_attr(root, node.target)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return _norm_module_affine(node, module)
        return None
    if node.op == "call_function" and node.target in _NORM_FUNCTIONS:
        if node.target is torch.batch_norm:
            return Refusal("aten-level torch.batch_norm is not recognised; use F.batch_norm")
        return _functional_norm_affine(node, root)
    is_mul = (node.op == "call_function" and node.target in _MUL_FUNCTIONS) or (
        node.op == "call_method" and node.target == "mul"
    )
    if is_mul and len(node.args) == 2 and not node.kwargs:
        return _scale_affine(node, root)
    return None


def _is_one(value: object, root: nn.Module) -> bool:
    """``value`` (a number, a tensor, or a graph constant of the model) is exactly 1 everywhere."""
    if isinstance(value, Node):
        if value.op != "get_attr":
            return False
        value = resolve_attr(root, str(value.target))
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return value == 1
    if isinstance(value, torch.Tensor):
        return value.numel() > 0 and bool((value.detach() == 1).all())
    return False


def is_identity_activation(node: Node, root: nn.Module) -> bool:
    r"""An activation that computes its input exactly, whatever the input.

    ``leaky_relu(x, a) = max(x, 0) + a min(x, 0)`` is ``x`` for ``a = 1``, and so is
    ``prelu(x, w)`` where every ``w`` is 1: ``nn.LeakyReLU(1.0)``, ``F.leaky_relu(x, 1.0)``
    (positional or ``negative_slope=``), ``nn.PReLU`` with all weights 1 and ``F.prelu`` on a
    constant all-ones weight. VanillaNet (arXiv:2305.12972, Sec. 3.2) anneals its activation
    ``F.leaky_relu(x, act_learn)`` to ``act_learn = 1`` for deployment: that is this case.
    Anything else (a slope read from the input, a weight that is not exactly 1) is kept.
    """
    if node.op == "call_module":
        module = resolve_attr(root, node.target)
        if type(module) is nn.LeakyReLU:
            return _is_one(module.negative_slope, root)
        if type(module) is nn.PReLU:
            return _is_one(module.weight, root)
        return False
    if node.op != "call_function":
        return False
    if node.target is F.leaky_relu:
        slope = node.kwargs.get("negative_slope", node.args[1] if len(node.args) > 1 else 0.01)
        return _is_one(slope, root)
    if node.target in (F.prelu, torch.prelu):
        weight = node.kwargs.get("weight", node.args[1] if len(node.args) > 1 else None)
        return _is_one(weight, root)
    return False


def is_noop(node: Node, root: nn.Module) -> bool:
    """Eval-mode Dropout, Identity, F.dropout(training=False) and identity activations
    compute ``x``."""
    if is_identity_activation(node, root):
        return True
    if node.op == "call_module":
        module = resolve_attr(root, node.target)
        if untrusted_reason(module) is not None:
            return False
        if isinstance(module, nn.Identity):
            return True
        return isinstance(module, _NOOP_MODULES) and not module.training
    if node.op == "call_function" and node.target in _DROPOUT_FUNCTIONS:
        training = node.kwargs.get("training", node.args[2] if len(node.args) > 2 else True)
        return (
            training is False
            or node.kwargs.get("p", node.args[1] if len(node.args) > 1 else 0.5) == 0
        )
    return False


def drop_noops(graph: fx.Graph, root: nn.Module) -> int:
    """Remove no-op nodes; returns how many were removed."""
    removed = 0
    for node in list(graph.nodes):
        if is_noop(node, root) and node.args and isinstance(node.args[0], Node):
            inputs = node.all_input_nodes
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
            for other in inputs:  # a PReLU weight read only here
                if other.op == "get_attr" and not other.users:
                    graph.erase_node(other)
            removed += 1
    return removed


_META_ATTRS = {"ndim", "shape", "dtype", "device", "is_cuda", "layout", "requires_grad"}
_META_METHODS = {"size", "dim", "ndimension", "numel", "get_device"}
_SHAPE_OF_OTHER = {"reshape_as", "view_as", "expand_as", "type_as"}  # read the 2nd arg's metadata


def is_metadata_use(user: Node, node: Node) -> bool:
    """``user`` reads only the metadata of ``node`` (its shape, rank, dtype, device), e.g. the
    ``x.ndim`` of an ``assert``: a rewrite that keeps the shape keeps that answer."""
    if user.op == "call_function" and user.target is getattr:
        return user.args[0] is node and len(user.args) > 1 and user.args[1] in _META_ATTRS
    if user.op == "call_method" and user.target in _META_METHODS:
        return user.args[0] is node
    if user.op == "call_method" and user.target in _SHAPE_OF_OTHER:
        return len(user.args) == 2 and user.args[1] is node and user.args[0] is not node
    return False


def value_users(node: Node) -> list[Node]:
    """The users of ``node`` that read its values (metadata reads excluded)."""
    return [u for u in node.users if not is_metadata_use(u, node)]


def single_user(node: Node) -> bool:
    """Exactly one user reads the values of ``node``."""
    return len(value_users(node)) == 1
