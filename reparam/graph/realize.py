"""Put a rewritten graph back into the user's module, keeping its class and its methods.

The module keeps its own submodules (so ``state_dict`` keys stay where they were) and gets a
forward generated from the rewritten graph. Its class becomes a thin subclass of the original
(``isinstance`` still holds, every other method still works) that knows how to pickle and
deep-copy itself: the graph travels, the generated function is rebuilt on load.
"""

from __future__ import annotations

import copy
import types
from typing import Any

import torch.fx as fx
from torch import nn

_GRAPH_ATTR = "_reparam_graph"
_MARK = "_reparam_deployed_class"


def _compile(graph: fx.Graph) -> types.FunctionType:
    code = graph.python_code(root_module="self")
    namespace: dict[str, Any] = dict(code.globals)
    exec(compile(code.src, "<reparam-deployed-forward>", "exec"), namespace)  # noqa: S102
    return namespace["forward"]


def _strip(graph: fx.Graph) -> fx.Graph:
    new = fx.Graph()
    env = new.graph_copy(graph, {})
    new.output(env)
    for node in new.nodes:
        node.meta = {}
    return new


def _blank(original_cls: type) -> nn.Module:
    return original_cls.__new__(original_cls)


def _set_state(obj: nn.Module, state: dict[str, Any]) -> None:
    nn.Module.__setstate__(obj, state)
    _attach(obj, state[_GRAPH_ATTR])


def _reduce_ex(self: nn.Module, protocol: int):
    # (callable, args, state, listitems, dictitems, state_setter): the blank object is
    # memoized before its state is pickled, so modules that refer to themselves work too.
    return (_blank, (original_class(self),), dict(self.__dict__), None, None, _set_state)


def _deepcopy(self: nn.Module, memo: dict[int, Any]) -> nn.Module:
    # the graph is never edited once installed: the copy shares it and the class compiled
    # from it (recompiling the forward of every deployed module made copies slow)
    obj = _blank(original_class(self))
    memo[id(self)] = obj
    graph = self.__dict__[_GRAPH_ATTR]
    memo[id(graph)] = graph
    nn.Module.__setstate__(obj, copy.deepcopy(dict(self.__dict__), memo))
    obj.__class__ = type(self)
    return obj


def _deployed_graph(self: nn.Module) -> fx.Graph:
    """The graph the deployed forward was generated from (like ``GraphModule.graph``)."""
    return self.__dict__[_GRAPH_ATTR]


def _deployed_code(self: nn.Module) -> str:
    """The Python source of the deployed forward (like ``GraphModule.code``)."""
    return self.__dict__[_GRAPH_ATTR].python_code(root_module="self").src


def _extra_repr(self: nn.Module) -> str:
    base = original_class(self).extra_repr(self)
    return "deployed by reparam" + (f", {base}" if base else "")


def _attach(module: nn.Module, graph: fx.Graph) -> None:
    """Give ``module`` its own subclass whose ``forward`` is compiled from ``graph``.

    One class per rewritten module: torch.fx traces ``type(root).forward``, so the forward
    must live on the class (with its real signature) for the deployed model to trace again.
    """
    original = original_class(module)
    namespace = {
        "forward": _compile(graph),
        "__reduce_ex__": _reduce_ex,
        "__deepcopy__": _deepcopy,
        "__module__": original.__module__,
        "__qualname__": original.__qualname__,
        "__doc__": original.__doc__,
        "extra_repr": _extra_repr,
        "deployed_graph": property(_deployed_graph),
        "deployed_code": property(_deployed_code),
        _MARK: original,
    }
    for name, fn in (("graph", _deployed_graph), ("code", _deployed_code)):
        if not hasattr(original, name) and name not in module.__dict__:
            namespace[name] = property(fn)  # fx's names, where the user's class leaves them free
    module.__dict__[_GRAPH_ATTR] = graph
    module.__class__ = type(original.__name__, (original,), namespace)


def install_forward(module: nn.Module, graph: fx.Graph) -> None:
    """Give ``module`` a forward computed from ``graph`` (nodes name ``module``'s submodules)."""
    graph = _strip(graph)
    graph.lint()
    _attach(module, graph)


def original_class(module: nn.Module) -> type:
    """The user's class of ``module`` (deployed modules are a thin subclass of it)."""
    return type(module).__dict__.get(_MARK) or type(module)


def is_rewritten(module: nn.Module) -> bool:
    return _GRAPH_ATTR in module.__dict__


def graph_of(module: nn.Module) -> fx.Graph | None:
    return module.__dict__.get(_GRAPH_ATTR)
