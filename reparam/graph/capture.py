"""Capture a module's forward as a torch.fx graph that is a true account of what it runs.

**Leaves.** Trusted built-in layers (:func:`reparam.graph.trust.is_trusted_leaf`) and the
modules the caller names as *opaque* (hooks, instance forwards, TorchScript, forwards that do
not trace) stay single ``call_module`` nodes; everything else is traced through, so a conv
subclass that overrides ``_conv_forward`` shows what it really computes.

**Concrete values.** Given the inputs the module received in a real forward, every node
also gets its real value while tracing (a shadow run). Python that needs a value then works
where plain fx gives up: ``x.reshape(*y.size())`` iterates a size of known length (symbolic:
one ``getitem`` per dimension), ``int(w.shape[0] / g)`` on a parameter is a constant, and
``int(x.shape[-1] / p)`` on an input is specialized with a guard
(:mod:`reparam.graph.guards`) that raises at run time for a shape it was not traced for.
A branch on tensor *data* is refused.

**Call pattern.** Arguments the recorded call passed as ``None``, bools, numbers or strings
are traced as those constants (``concrete_args``) and guarded, so an optional argument
(``identity=None``) or a flag cannot silently take the other path.

**What a trace cannot record** — a ``torch.autocast`` region, a write to ``self`` or to any
module's attributes (features stored, caches), in-place ``+=`` on a traced tensor, slice
assignment — either appears in the graph as what it is (``operator.iadd``,
``operator.setitem``, so :mod:`reparam.graph.inplace` can reason about it) or makes the
capture fail with the reason, so the module is kept as it is (opaque) by its parents.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import operator
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.fx.proxy import TraceError

from reparam.graph.fx_dispatch import tracing_with
from reparam.graph.guards import guard_equal, guard_len
from reparam.graph.state_watch import Snapshot, attribute_entry, state_writes
from reparam.graph.trust import is_trusted_leaf, opaque_reason
from reparam.runtime import LEAF_MODULES

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)
_META_ATTRS = {"shape", "ndim", "dtype", "device", "is_cuda", "layout"}
_META_METHODS = {"size", "dim", "ndimension", "numel", "get_device", "__len__"}


UNKNOWN = -1  # a version where a value of another kind may hold tensors
_PLAIN = (int, float, complex, bool, str, bytes, type(None), slice, type(Ellipsis), torch.Size,
          torch.dtype, torch.device, torch.memory_format, torch.layout)


def tensor_versions(value: Any) -> tuple[int, ...]:
    """The version counters of the tensors in ``value`` (nested lists, tuples and dicts);
    ``UNKNOWN`` stands for a value of another kind, which may hold tensors unseen."""
    if isinstance(value, torch.Tensor):
        return (value._version,)
    if isinstance(value, (list, tuple)):
        return tuple(v for item in value for v in tensor_versions(item))
    if isinstance(value, dict):
        return tuple(v for item in value.values() for v in tensor_versions(item))
    if isinstance(value, _PLAIN):
        return ()
    return (UNKNOWN,)


class CaptureError(Exception):
    """The forward cannot be captured faithfully; the message says why."""


def is_builtin_leaf(module: nn.Module) -> bool:
    """True for a built-in torch.nn layer that computes exactly what its library class says."""
    return is_trusted_leaf(module)


@dataclass
class CallPattern:
    """How a module was called in the recorded forward (real values, bound by name)."""

    arguments: dict[str, Any]
    positional: tuple[str, ...]

    @property
    def tensors(self) -> tuple[Any, ...]:
        return tuple(self.arguments[n] for n in self.positional)


def bind_call(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> CallPattern | None:
    """Bind one call of ``module`` to its forward's parameters (defaults applied)."""
    try:
        sig = inspect.signature(type(module).forward)
        bound = sig.bind(module, *args, **kwargs)
    except (TypeError, ValueError):
        return None
    bound.apply_defaults()
    names = list(sig.parameters)[1:]  # the first is the module itself
    kinds = {n: sig.parameters[n].kind for n in names}
    if any(
        k in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        for k in kinds.values()
    ):
        return None
    arguments = {n: bound.arguments[n] for n in names}
    return CallPattern(arguments, tuple(names))


def _is_constant_arg(value: Any) -> bool:
    return value is None or type(value) in (bool, int, float, str)


@dataclass
class Capture:
    """A traced graph of ``root`` (graph nodes refer to ``root``'s submodules by path)."""

    root: nn.Module
    graph: fx.Graph
    constants: dict[str, torch.Tensor] = field(default_factory=dict)
    values: dict[fx.Node, Any] = field(default_factory=dict)
    guards: list[str] = field(default_factory=list)
    pattern: CallPattern | None = None
    # the version counters of each value's tensors when it was computed: a value written in
    # place later in the run (``relu(inplace=True)``) is no longer what its node produced
    versions: dict[fx.Node, tuple[int, ...]] = field(default_factory=dict)

    @property
    def example_inputs(self) -> tuple[Any, ...] | None:
        """The positional inputs of the recorded call, in the traced graph's order."""
        if self.pattern is None:
            return None
        placeholders = [n for n in self.graph.nodes if n.op == "placeholder"]
        if any(n not in self.values for n in placeholders):
            return None
        return tuple(self.values[n] for n in placeholders)


class _ValueProxy(fx.Proxy):
    """A proxy that can answer Python's questions from the real value of its node."""

    def __len__(self) -> int:
        return self.tracer.concrete_len(self)  # type: ignore[attr-defined]

    def __int__(self) -> int:
        return int(self.tracer.concrete(self, "int"))  # type: ignore[attr-defined]

    def __index__(self) -> int:
        return int(self.tracer.concrete(self, "int"))  # type: ignore[attr-defined]

    def __float__(self) -> float:
        return float(self.tracer.concrete(self, "float"))  # type: ignore[attr-defined]

    def __setitem__(self, index: Any, value: Any) -> None:
        self.tracer.create_proxy("call_function", operator.setitem, (self, index, value), {})

    def _inplace(self, fn: Callable[..., Any], other: Any) -> fx.Proxy:
        return self.tracer.create_proxy("call_function", fn, (self, other), {})

    def __iadd__(self, other: Any) -> fx.Proxy:
        return self._inplace(operator.iadd, other)

    def __isub__(self, other: Any) -> fx.Proxy:
        return self._inplace(operator.isub, other)

    def __imul__(self, other: Any) -> fx.Proxy:
        return self._inplace(operator.imul, other)

    def __itruediv__(self, other: Any) -> fx.Proxy:
        return self._inplace(operator.itruediv, other)


def _describe(node: Any, depth: int = 0) -> str:
    """A short Python-like expression for a node (for guard and refusal messages)."""
    if not isinstance(node, fx.Node):
        return repr(node)
    if depth > 4:
        return node.name
    if node.op == "placeholder":
        return str(node.target)
    if node.op == "get_attr":
        return f"self.{node.target}"
    args = [_describe(a, depth + 1) for a in node.args]
    if node.op == "call_method":
        return f"{args[0]}.{node.target}({', '.join(args[1:])})"
    if node.target is getattr and len(args) == 2:
        return f"{args[0]}.{node.args[1]}"
    if node.target is operator.getitem and len(args) == 2:
        return f"{args[0]}[{args[1]}]"
    symbols = {
        operator.add: "+",
        operator.sub: "-",
        operator.mul: "*",
        operator.truediv: "/",
        operator.floordiv: "//",
        operator.gt: ">",
        operator.lt: "<",
        operator.ge: ">=",
        operator.le: "<=",
        operator.eq: "==",
        operator.ne: "!=",
    }
    if node.target in symbols and len(args) == 2:
        return f"({args[0]} {symbols[node.target]} {args[1]})"
    name = getattr(node.target, "__name__", str(node.target))
    return f"{name}({', '.join(args)})"


class ConcreteTracer(fx.Tracer):
    """fx tracer with a leaf policy, a shadow run of real values and guarded specialization."""

    def __init__(
        self,
        opaque: Callable[[nn.Module, str], bool] = lambda m, q: False,
        placeholder_values: list[Any] | None = None,
    ) -> None:
        super().__init__()
        self._opaque = opaque
        self._placeholders: Iterator[Any] | None = (
            iter(placeholder_values) if placeholder_values is not None else None
        )
        self.values: dict[fx.Node, Any] = {}
        self.versions: dict[fx.Node, tuple[int, ...]] = {}
        self.dependence: dict[fx.Node, str] = {}  # "const" | "shape" | "data"
        self.guards: list[str] = []
        self._real = 0  # > 0 while a real value is computed: module calls run, not recorded
        self._tensor_names: dict[int, str] | None = None
        self.parameter_proxies: dict[str, fx.Proxy] = {}
        self.watched: Snapshot | None = None  # the tensors the forward can write
        self._watched_ids: set[int] = set()

    def trace(self, root, concrete_args=None):  # noqa: ANN001
        self.parameter_proxies = {}
        with tracing_with(self):
            return super().trace(root, concrete_args)

    # -- fx's patched nn.Module.__call__ / __getattr__ come through these two ----------------
    def call_module(self, m, forward, args, kwargs):  # noqa: ANN001
        if self._real:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):  # noqa: ANN001
        """fx's rule (a parameter or buffer of the root becomes a ``get_attr`` node), with the
        owner looked up in one table instead of a walk over every parameter per read."""
        if self._real or not isinstance(attr_val, torch.Tensor):
            return attr_val
        if self._tensor_names is None:
            names: dict[int, str] = {}
            for n, p in self.root.named_parameters():
                names.setdefault(id(p), n)
            if self.proxy_buffer_attributes:
                for n, b in self.root.named_buffers():
                    names.setdefault(id(b), n)
            self._tensor_names = names
        name = self._tensor_names.get(id(attr_val))
        if name is None:
            return attr_val
        if name not in parameter_proxy_cache:
            parameter_proxy_cache[name] = self.create_proxy("get_attr", name, (), {})
        return parameter_proxy_cache[name]

    # -- leaves -----------------------------------------------------------------------------
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if self._opaque(m, module_qualified_name) or isinstance(m, LEAF_MODULES):
            return True
        if opaque_reason(m) is not None:
            return True
        return is_trusted_leaf(m)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ValueProxy(node, self)

    # -- the shadow run ---------------------------------------------------------------------
    def create_proxy(
        self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None
    ):  # noqa: ANN001, E501
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        self._shadow(proxy.node)
        return proxy

    def _shadow(self, node: fx.Node) -> None:
        inputs = node.all_input_nodes
        if node.op == "placeholder":
            self.dependence[node] = "data"
            if self._placeholders is not None:
                try:
                    self._remember(node, next(self._placeholders))
                except StopIteration:
                    self._placeholders = None
            return
        if node.op == "get_attr":
            self.dependence[node] = "const"
            try:
                obj: Any = self.root
                with self.real_values():
                    for part in str(node.target).split("."):
                        obj = getattr(obj, part)
                self._remember(node, obj)
            except AttributeError:
                pass
            return
        deps = {self.dependence.get(n, "data") for n in inputs}
        if "data" in deps and self._reads_metadata(node):
            self.dependence[node] = "shape"
        elif "data" in deps:
            self.dependence[node] = "data"
        elif "shape" in deps:
            self.dependence[node] = "shape"
        else:
            self.dependence[node] = "const"
        if any(n not in self.values for n in inputs):
            return
        if node.op not in ("call_function", "call_method", "call_module"):
            return

        def value(a: Any) -> Any:
            return self.values[a] if isinstance(a, fx.Node) else a

        args = fx.node.map_aggregate(node.args, value)
        kwargs = fx.node.map_aggregate(node.kwargs, value)
        try:
            with torch.no_grad():
                if node.op == "call_function":
                    if node.target is operator.setitem:
                        args = (args[0].clone(), *args[1:])  # never write into a real value
                    result = node.target(*args, **kwargs)
                elif node.op == "call_method":
                    result = getattr(args[0], node.target)(*args[1:], **kwargs)
                else:
                    module = self.root.get_submodule(str(node.target))
                    with self.real_values(), self._leaf_writes(module):
                        result = module(*args, **kwargs)
        except Exception:  # noqa: BLE001 - no value: questions about this node stay unanswered
            return
        self._remember(node, result)

    def _remember(self, node: fx.Node, value: Any) -> None:
        self.values[node] = value
        self.versions[node] = tensor_versions(value)

    def watch(self, snapshot: Snapshot) -> None:
        self.watched = snapshot
        self._watched_ids = {id(e.tensor) for e in snapshot.entries}

    def note_attribute(self, module: nn.Module, name: str, value: Any) -> None:
        """A module attribute the forward read: a parameter or buffer held outside the traced
        module (a sibling held unregistered) is watched from now on."""
        if self.watched is None or self._real or not isinstance(value, torch.Tensor):
            return  # inside a leaf's real run: the leaf's own business
        if id(value) in self._watched_ids:
            return
        entry = attribute_entry(module, name, value)
        if entry is not None:
            self._watched_ids.add(id(value))
            self.watched.extend([entry])

    @contextlib.contextmanager
    def _leaf_writes(self, module: nn.Module) -> Iterator[None]:
        """A user's leaf module runs for real and stays a call in the graph: what it writes
        anywhere in the model (``watched``) is its own side effect, kept, not the trace's."""
        if self.watched is None or isinstance(module, LEAF_MODULES) or is_trusted_leaf(module):
            yield
            return
        before, names_before = self.watched.again(), self.watched.name_keys()
        try:
            yield
        finally:
            self.watched.absorb(before, names_before)

    @contextlib.contextmanager
    def real_values(self) -> Iterator[None]:
        """Module calls and attribute reads inside run for real (a shadow value)."""
        self._real += 1
        try:
            yield
        finally:
            self._real -= 1

    @staticmethod
    def _reads_metadata(node: fx.Node) -> bool:
        if node.op == "call_method":
            return node.target in _META_METHODS
        if node.op == "call_function" and node.target is getattr:
            return len(node.args) > 1 and node.args[1] in _META_ATTRS
        return node.op == "call_function" and node.target is len

    # -- Python asking for values -----------------------------------------------------------
    def _known(self, proxy: fx.Proxy, question: str) -> tuple[Any, str]:
        node = proxy.node
        if node not in self.values:
            raise TraceError(
                f"the forward needs the {question} of '{_describe(node)}', which is only "
                "known with example inputs"
            )
        dependence = self.dependence.get(node, "data")
        if dependence == "data":
            raise TraceError(
                f"the forward's Python depends on tensor data ({question} of "
                f"'{_describe(node)}'): data-dependent control flow"
            )
        return self.values[node], dependence

    def _guard(self, proxy: fx.Proxy, fn: Callable[..., Any], expected: Any) -> None:
        what = _describe(proxy.node)
        self.guards.append(f"{what} == {expected!r}")
        self.create_proxy("call_function", fn, (proxy, expected, what), {})

    def concrete(self, proxy: fx.Proxy, question: str) -> Any:
        value, dependence = self._known(proxy, question)
        if isinstance(value, torch.Tensor):
            value = value.item()
        if dependence == "shape":
            self._guard(proxy, guard_equal, value)
        return value

    def to_bool(self, obj: fx.Proxy) -> bool:
        value, dependence = self._known(obj, "truth value")
        result = bool(value)
        if dependence == "shape":
            self._guard(obj, guard_equal, value)
        return result

    def concrete_len(self, proxy: fx.Proxy) -> int:
        value, dependence = self._known(proxy, "length")
        n = len(value)
        if dependence == "shape" or (isinstance(value, torch.Tensor) and dependence != "const"):
            self._guard(proxy, guard_len, n)
        return n

    def iter(self, obj: fx.Proxy) -> Iterator:
        node = obj.node
        value = self.values.get(node)
        if value is None:
            return super().iter(obj)
        if isinstance(value, torch.Tensor):
            if value.dim() == 0:
                raise TraceError("iteration over a 0-d tensor")
            n = value.shape[0]
            if self.dependence.get(node, "data") != "const":
                self._guard(obj, guard_len, n)
        elif isinstance(value, (tuple, list)):
            n = len(value)
            if self.dependence.get(node, "data") != "const":
                self._guard(obj, guard_len, n)
        else:
            return super().iter(obj)
        return iter([obj[i] for i in range(n)])


_MODULE_INTERNALS = frozenset(nn.Module().__dict__)


def _snapshot(module: nn.Module) -> list[tuple[str, nn.Module, dict[str, object]]]:
    saved = []
    for path, m in module.named_modules():
        state = {}
        for key, value in m.__dict__.items():
            if key in _MODULE_INTERNALS:
                continue
            state[key] = copy.copy(value) if isinstance(value, (dict, list, set)) else value
        saved.append((path, m, state))
    return saved


def _changed(before: object, after: object) -> bool:
    if isinstance(before, dict) and isinstance(after, dict):
        return before.keys() != after.keys() or any(before[k] is not after[k] for k in before)
    if isinstance(before, list) and isinstance(after, list):
        return len(before) != len(after) or any(
            a is not b for a, b in zip(before, after, strict=True)
        )
    if isinstance(before, set) and isinstance(after, set):
        return before != after
    return before is not after


def _holds_proxy(value: object) -> bool:
    if isinstance(value, fx.Proxy):
        return True
    if isinstance(value, dict):
        return any(_holds_proxy(v) for v in value.values())
    if isinstance(value, (list, tuple, set)):
        return any(_holds_proxy(v) for v in value)
    return False


def _side_effects(saved, skip: Callable[[str], bool]) -> list[str]:
    found = []
    for path, m, state in saved:
        if skip(path):
            # a leaf ran for real in the shadow run (its own caches may change); a traced
            # write into it leaves a proxy behind
            for key, value in m.__dict__.items():
                if key not in _MODULE_INTERNALS and _holds_proxy(value):
                    found.append(f"{path}.{key}")
            continue
        for key, value in m.__dict__.items():
            if key in _MODULE_INTERNALS or key.startswith("_reparam"):
                continue
            if key not in state or _changed(state[key], value):
                found.append(f"{path}.{key}" if path else f"self.{key}")
    return found


def _restore(saved) -> None:
    for _, m, state in saved:
        for key in [k for k in m.__dict__ if k not in _MODULE_INTERNALS and k not in state]:
            del m.__dict__[key]
        m.__dict__.update(state)


class _NoAutocast:
    """While tracing, opening a torch.autocast region is a capture error (fx cannot record
    it: the region would silently vanish from the rewritten forward)."""

    def __enter__(self) -> None:
        klass = torch.amp.autocast_mode.autocast
        self._enter = klass.__enter__

        def refuse(obj: Any) -> None:
            raise CaptureError(
                "the forward opens a torch.autocast region, which a traced graph cannot record"
            )

        klass.__enter__ = refuse  # type: ignore[method-assign]

    def __exit__(self, *exc: object) -> None:
        torch.amp.autocast_mode.autocast.__enter__ = self._enter  # type: ignore[method-assign]


_FLAG_TYPES = (bool, str)  # flags and modes; sizes and other numbers are not guarded


class _FlagReads:
    """Records the plain Python attributes (bool flags, str modes) each traced-through module
    reads while tracing, so the rewritten forward can check them at every call.

    During the trace only, each such module's class is swapped for a subclass (made once per
    class and cached) whose ``__getattribute__`` reports to the recorder that is active.
    """

    _spies: dict[type, type | None] = {}
    _active: list[_FlagReads] = []

    def __init__(self, root: nn.Module, skip: Callable[[str], bool]) -> None:
        self.root, self.skip = root, skip
        self.reads: dict[tuple[str, str], Any] = {}
        self.paths: dict[int, str] = {}
        self._swapped: list[tuple[nn.Module, type]] = []

    @classmethod
    def _spy(cls, klass: type) -> type | None:
        if klass not in cls._spies:
            active = cls._active

            def getattribute(obj: Any, name: str) -> Any:
                value = object.__getattribute__(obj, name)
                if (
                    active
                    and not name.startswith("_")
                    and name != "training"
                    and isinstance(value, _FLAG_TYPES)
                    and name in object.__getattribute__(obj, "__dict__")
                ):
                    recorder = active[-1]
                    path = recorder.paths.get(id(obj))
                    if path is not None:
                        recorder.reads.setdefault((path, name), value)
                return value

            try:
                spy: type | None = type(
                    klass.__name__,
                    (klass,),
                    {"__getattribute__": getattribute, "__module__": klass.__module__},
                )
            except Exception:  # noqa: BLE001 - a class that refuses subclasses: no flag reads
                spy = None
            cls._spies[klass] = spy
        return cls._spies[klass]

    def __enter__(self) -> _FlagReads:
        for path, m in self.root.named_modules():
            if self.skip(path) or is_trusted_leaf(m):
                continue
            spy = self._spy(type(m))
            if spy is None:
                continue
            self.paths[id(m)] = path
            self._swapped.append((m, type(m)))
            m.__class__ = spy
        self._active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._active.remove(self)
        for m, cls in self._swapped:
            m.__class__ = cls


def _guard_flags(graph: fx.Graph, reads: dict[tuple[str, str], Any], guards: list[str]) -> None:
    """Check, at the start of the rewritten forward, every flag the trace read."""
    anchor = next((n for n in graph.nodes if n.op != "placeholder"), None)
    if anchor is None:
        return
    for (path, name), value in sorted(reads.items(), key=lambda kv: kv[0]):
        target = f"{path}.{name}" if path else name
        what = f"self.{target}"
        with graph.inserting_before(anchor):
            attr = graph.get_attr(target)
            graph.call_function(guard_equal, (attr, value, what))
        guards.append(f"{what} == {value!r}")


def _keep_parameter_names(graph: fx.Graph, concrete: dict[str, Any]) -> None:
    """fx names a specialized argument's placeholder ``name_1``; the rewritten forward keeps
    the original parameter name, so keyword callers still work."""
    for node in graph.nodes:
        if node.op != "placeholder":
            continue
        base, _, suffix = str(node.target).rpartition("_")
        if suffix == "1" and base in concrete:
            node.target = base


def _concrete_args(pattern: CallPattern) -> tuple[dict[str, Any], list[Any]]:
    concrete: dict[str, Any] = {}
    placeholder_values: list[Any] = []
    for name in pattern.positional:
        value = pattern.arguments[name]
        if _is_constant_arg(value):
            concrete[name] = value
        placeholder_values.append(value)
    return concrete, placeholder_values


def capture(
    module: nn.Module,
    extra_leaf_types: Iterable[type] = (),
    *,
    opaque: Callable[[nn.Module, str], bool] | None = None,
    pattern: CallPattern | None = None,
) -> Capture:
    """Trace ``module``; raises :class:`CaptureError` (or what torch.fx raises) when the
    forward cannot be captured faithfully.

    ``opaque(m, path)`` names more modules to keep as calls; ``pattern`` is a recorded call
    (real values) that drives the shadow run and the call-pattern specialization.
    A write the trace cannot see (a constant written into a parameter or buffer of the
    module, or of another module it reads one from) fails the capture
    (:mod:`reparam.graph.state_watch`).
    Tracing runs the user's forward on proxies: every module's plain attributes are restored
    afterwards, so no proxy is left behind in the model; a forward that changed any of them
    has side effects a graph would drop, and the capture fails saying which. Tensor constants
    the tracer attached to the root are returned in ``constants``.
    """
    leaf_types = tuple(extra_leaf_types)

    def is_opaque(m: nn.Module, path: str) -> bool:
        if leaf_types and isinstance(m, leaf_types):
            return True
        return opaque(m, path) if opaque is not None else False

    concrete: dict[str, Any] | None = None
    values: list[Any] | None = None
    if pattern is not None:
        concrete, values = _concrete_args(pattern)
    tracer = ConcreteTracer(is_opaque, values)
    saved = _snapshot(module)
    # what the forward can write: its module's tensors, and those it reads elsewhere
    tensors = Snapshot.of(module)
    tracer.watch(tensors)
    before = set(module.__dict__)
    leaves: list[str] = []

    def ran_for_real(path: str) -> bool:  # a leaf: its own caches may change in the shadow run
        return any(path == leaf or path.startswith(leaf + ".") for leaf in leaves)

    flags = _FlagReads(module, skip=lambda p: bool(p) and is_opaque(module.get_submodule(p), p))
    try:
        with _NoAutocast(), flags:
            graph = tracer.trace(module, concrete_args=concrete or None)
        leaves = [str(n.target) for n in graph.nodes if n.op == "call_module"]
        constants = {
            k: v
            for k, v in module.__dict__.items()
            if k not in before and isinstance(v, torch.Tensor)
        }
        effects = _side_effects(saved, skip=ran_for_real)
        effects = [e for e in effects if e.split(".")[-1] not in constants]
        written = tensors.changed()
        effects += state_writes(tensors, written, ran_for_real)
    finally:
        _restore(saved)
        tensors.put_back()
    if effects:
        raise CaptureError(
            f"the forward writes module attributes ({', '.join(sorted(set(effects))[:3])}): a "
            "rewritten forward would drop that side effect"
        )
    if concrete:
        _keep_parameter_names(graph, concrete)
    guards = list(tracer.guards)
    _guard_flags(graph, flags.reads, guards)
    values_by_node = dict(tracer.values)
    for node in graph.nodes:
        node.meta["dependence"] = tracer.dependence.get(node, "data")
    return Capture(
        root=module,
        graph=graph,
        constants=constants,
        values=values_by_node,
        guards=guards,
        pattern=pattern,
        versions=dict(tracer.versions),
    )


def describe_trace_failure(exc: BaseException) -> str:
    """One line saying why tracing failed (data-dependent control flow, unpacked shapes ...)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    if isinstance(exc, CaptureError):
        return first
    if "iterated" in first or "__iter__" in first:
        hint = " (the forward unpacks a traced tensor or its size; give example inputs)"
    elif "bool" in first or "control flow" in first:
        hint = " (data-dependent control flow)"
    else:
        hint = ""
    return f"{type(exc).__name__}: {first}{hint}"


# kept for callers that name the tracer class
LeafPolicyTracer = ConcreteTracer
