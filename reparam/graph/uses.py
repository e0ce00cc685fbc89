"""One recorded forward of the whole model: how each module is called, and who uses what.

Built once, before any rewrite, from a real run on the example inputs:

* **call patterns** — the arguments every module received, bound to its forward's parameters
  (:class:`~reparam.graph.capture.CallPattern`); a module called with different constant
  arguments (``identity=None`` once, a tensor another time) has several;
* **shape variants** — for a module called in one pattern at several input shapes (one
  block run on each level of a pyramid, on a crop and on the full map), the inputs of each
  distinct shape (up to :data:`MAX_SHAPE_VARIANTS`): rules judge cost on all of them, and
  the check compares the rewritten scope on every one;
* **uses** — for every module, the modules whose forwards call it or read its parameters and
  buffers directly. A parent calling ``self.block.conv(x)`` or reading
  ``self.block.bn.weight`` is such a use of ``block.conv`` / ``block.bn`` from outside
  ``block``: while ``block`` alone is deployed, those modules must stay as they are.

The run uses global module hooks and a ``TorchFunctionMode`` that sees every tensor an op
reads; nothing is added to the user's modules.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from reparam.graph.capture import CallPattern, _restore, _snapshot, bind_call

MAX_SHAPE_VARIANTS = 16
"""Distinct input shapes kept per module call pattern (cost and checks use each); a module
called at more is not rewritten on its own (its parent's graph still holds every call)."""


def _shape_key(pattern: CallPattern) -> tuple:
    flat, _ = tree_flatten(list(pattern.arguments.values()))
    return tuple(tuple(t.shape) for t in flat if isinstance(t, torch.Tensor))


def _pattern_key(pattern: CallPattern) -> tuple:
    key = []
    for name in pattern.positional:
        value = pattern.arguments[name]
        if isinstance(value, torch.Tensor):
            key.append((name, "tensor"))
        elif value is None or type(value) in (bool, int, float, str):
            key.append((name, type(value).__name__, value))
        elif isinstance(value, (list, tuple)):
            key.append((name, type(value).__name__, len(value)))
        else:
            key.append((name, type(value).__name__))
    return tuple(key)


def _detach(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_detach(v) for v in value) if not hasattr(value, "_fields") else value
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    return value


@dataclass
class UsePicture:
    """What one forward of the model on the example inputs did."""

    patterns: dict[str, list[CallPattern]] = field(default_factory=dict)
    callers: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    readers: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    shape_variants: dict[str, list[CallPattern]] = field(default_factory=dict)
    shape_overflow: set[str] = field(default_factory=set)

    def pattern(self, path: str) -> CallPattern | None:
        """The call pattern of ``path`` when it was called in one way only."""
        found = self.patterns.get(path)
        return found[0] if found and len(found) == 1 else None

    def other_shapes(self, path: str) -> list[CallPattern]:
        """Calls of ``path``'s one pattern at input shapes other than the first call's."""
        return list(self.shape_variants.get(path, ()))

    def pattern_conflict(self, path: str) -> str | None:
        found = self.patterns.get(path) or []
        if len(found) > 1:
            return (
                f"it is called with {len(found)} different argument patterns; a traced "
                "forward can stand for one"
            )
        if path in self.shape_overflow:
            return (
                f"it is called at more than {MAX_SHAPE_VARIANTS} input shapes; cost and "
                "checks cannot cover every one"
            )
        return None

    def was_called(self, path: str) -> bool:
        return path in self.patterns or self.calls.get(path, 0) > 0

    def users_outside(self, path: str, scope: str) -> list[str]:
        """Modules outside ``scope``'s subtree that call ``path`` or read its tensors."""

        def outside(user: str) -> bool:
            if not scope:
                return False
            return not (user == scope or user.startswith(scope + "."))

        users = self.callers.get(path, set()) | self.readers.get(path, set())
        return sorted(u or "<model>" for u in users if outside(u))


class _Recorder(TorchFunctionMode):
    """Sees every op's tensor arguments: a parameter or buffer read by a module other than
    its owner is recorded as a use of the owner."""

    def __init__(self, owners: dict[int, str], stack: list[str], picture: UsePicture) -> None:
        super().__init__()
        self.owners, self.stack, self.picture = owners, stack, picture

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if self.stack:
            current = self.stack[-1]
            for t in _tensors((args, kwargs)):
                owner = self.owners.get(id(t))
                if owner is not None and owner != current:
                    self.picture.readers[owner].add(current)
        return func(*args, **kwargs)


def _tensors(value: object) -> Iterator[torch.Tensor]:
    """The tensors in ``value``, through tuples, lists and dict values at any depth (a
    plain walk: torch's pytree flattening cost a third of the recorded forward's overhead)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def record_uses(
    model: nn.Module, inputs: tuple[Any, ...], skip: set[int]
) -> tuple[UsePicture, Any]:
    """Run ``model`` once on ``inputs`` and record call patterns and cross-module uses.

    ``skip`` holds the ids of modules whose calls need no pattern (trusted leaves). Returns
    the picture and the model's output.
    """
    picture = UsePicture()
    paths = {id(m): p for p, m in model.named_modules()}
    parent_of = {p: p.rpartition(".")[0] for p in paths.values() if p}
    owners: dict[int, str] = {}
    for path, m in model.named_modules():
        for t in list(m._parameters.values()) + list(m._buffers.values()):
            if t is not None:
                owners.setdefault(id(t), path)
    stack: list[str] = []
    keys: dict[str, set] = defaultdict(set)
    shapes: dict[str, set] = defaultdict(set)

    def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
        path = paths.get(id(module))
        if path is None:
            return
        caller = stack[-1] if stack else None
        if caller is not None and path and parent_of.get(path) != caller:
            picture.callers[path].add(caller)
        picture.calls[path] += 1
        if id(module) not in skip:
            pattern = bind_call(module, args, kwargs)
            if pattern is not None:
                key, shape = _pattern_key(pattern), _shape_key(pattern)
                if key not in keys[path]:
                    keys[path].add(key)
                    shapes[path].add(shape)
                    pattern = CallPattern(_detach(pattern.arguments), pattern.positional)
                    picture.patterns.setdefault(path, []).append(pattern)
                elif shape not in shapes[path]:
                    shapes[path].add(shape)
                    if len(shapes[path]) > MAX_SHAPE_VARIANTS:
                        picture.shape_overflow.add(path)
                    else:
                        pattern = CallPattern(_detach(pattern.arguments), pattern.positional)
                        picture.shape_variants.setdefault(path, []).append(pattern)
        stack.append(path)

    def post(module: nn.Module, args: tuple, output: Any) -> None:
        if paths.get(id(module)) is not None and stack:
            stack.pop()

    handles = []
    for m in model.modules():
        if isinstance(m, torch.jit.ScriptModule):
            continue  # called as it is; TorchScript takes no Python hooks
        handles.append(m.register_forward_pre_hook(pre, with_kwargs=True, prepend=True))
        handles.append(m.register_forward_hook(post, always_call=True))
    try:
        with torch.no_grad(), _Recorder(owners, stack, picture):
            output = model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return picture, output


class _OwnLevelTracer(fx.Tracer):
    """Traces one module's own forward, every submodule a leaf."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


def static_uses(model: nn.Module, skip: set[int]) -> UsePicture:
    """The cross-module uses, without example inputs: each module's own forward traced with
    its submodules as leaves. A call or a read that reaches past a direct child is a use
    from outside that child; a forward that does not trace is assumed to use everything
    below it (so nothing below it is changed without the module's own graph)."""
    picture = UsePicture()
    for path, m in model.named_modules():
        if id(m) in skip or isinstance(m, (nn.ModuleList, nn.ModuleDict)):
            continue
        prefix = f"{path}." if path else ""
        saved = _snapshot(m)  # a forward may store what it computes: no proxy stays behind
        try:
            graph = _OwnLevelTracer().trace(m)
        except Exception:  # noqa: BLE001 - unknown uses: assume every descendant is used
            for sub, _ in m.named_modules():
                if sub and "." in sub:
                    picture.callers[prefix + sub].add(path)
            continue
        finally:
            _restore(saved)
        for node in graph.nodes:
            target = str(node.target)
            if node.op == "call_module" and "." in target:
                picture.callers[prefix + target].add(path)
            elif node.op == "get_attr" and "." in target:
                owner = target.rpartition(".")[0]
                if "." in owner:
                    picture.readers[prefix + owner].add(path)
    return picture
