"""The deploy driver: scope by scope, bottom-up, apply rules until nothing changes.

A *scope* is a module whose forward is traced with torch.fx (children inlined, built-in
layers as leaves). Scopes are processed children first, so a merge lands in the smallest
module that holds it: that module gets a rewritten forward, and every module above it keeps
its class, its methods and its code. A scope whose forward cannot be traced is skipped with
the reason; its children are still deployed.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from reparam.cost import MacCounter
from reparam.errors import Refusal, ReparamError
from reparam.float64_run import Places
from reparam.gc_freeze import frozen_heap
from reparam.graph.capture import CallPattern, capture, describe_trace_failure
from reparam.graph.fx_dispatch import shared_module_hooks
from reparam.graph.inplace import functionalize
from reparam.graph.realize import graph_of, install_forward, is_rewritten
from reparam.graph.region import (
    Before,
    Region,
    Unverifiable,
    changed_region,
    region_error,
    take_before,
)
from reparam.graph.shapes import propagate_shapes
from reparam.graph.state_watch import StateWatch
from reparam.graph.sweep import delete_dead, referenced, set_attribute
from reparam.graph.trust import is_trusted_leaf, opaque_reason
from reparam.graph.uses import UsePicture, record_uses, static_uses
from reparam.graph.views import channel_affine, drop_noops, forget_norm_affines
from reparam.inputs import check_model, copy_model, validate_inputs
from reparam.matcher import recording_visits
from reparam.patterns import NoMatch
from reparam.progress import ProgressCallback, ScopeReporter
from reparam.report import (
    NO_NEIGHBOUR,
    DeployReport,
    NetworkOrder,
    count_params,
    layer_absmax,
    skipped_scope_reason,
    weight_ranges,
)
from reparam.rules import default_registry
from reparam.rules.base import PatternRule, Rewrite, Rule, RuleContext, SiteOutcome, absmax
from reparam.rules.registry import RuleRegistry
from reparam.try_memo import StaleMemoError, TryMemo
from reparam.verify import (
    clone_inputs,
    float64_default,
    float64_error,
    model_dtype,
    relative_error,
    run,
    run_in_float64,
    tolerance_for,
)


@dataclass
class DeployResult:
    """The deployed model and the report of what was done."""

    model: nn.Module
    report: DeployReport


def _validate(model: object) -> nn.Module:
    if isinstance(model, torch.jit.ScriptModule):
        raise ReparamError(
            "TorchScript modules cannot be re-parameterized: pass the eager "
            "nn.Module (before torch.jit.script/trace)"
        )
    if not isinstance(model, nn.Module):
        raise ReparamError(f"deploy expects a torch.nn.Module, got {type(model).__name__}")
    return model


def _shared_ids(model: nn.Module) -> frozenset[int]:
    """Modules reachable by two paths, and parameters owned by two modules."""
    seen: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        seen[id(m)] = seen.get(id(m), 0) + 1
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    return frozenset(k for k, v in seen.items() if v > 1)


def default_example_inputs(model: nn.Module) -> tuple[torch.Tensor, ...] | None:
    """A batch-1 random input from ``model.pretrained_cfg['input_size']`` (the timm
    convention, also used by ``reparam_models``), or None."""
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, attr, None)
        size = cfg.get("input_size") if isinstance(cfg, dict) else None
        if size and all(isinstance(s, int) and s > 0 for s in size):
            param = next(iter(model.parameters()), None)
            dtype = param.dtype if param is not None and param.is_floating_point() else None
            device = param.device if param is not None else None
            gen = torch.Generator().manual_seed(0)
            x = torch.randn((1, *size), generator=gen, dtype=dtype or torch.float32)
            return (x.to(device) if device is not None else x,)
    return None


@dataclass
class _Deployment:
    """What every scope of one deploy shares."""

    rules: RuleRegistry
    shared: frozenset[int]
    allow_slower: bool
    verify: bool
    check: bool
    report: DeployReport
    dtype: torch.dtype
    picture: UsePicture | None
    opaque: dict[int, str]
    static_picture: UsePicture | None = None  # without example inputs: from own-level traces
    pristine: nn.Module | None = None  # an untouched eval copy: the checks' reference
    pristine_places: Places = field(default_factory=Places)  # where the copy holds tensors
    watch: StateWatch | None = None  # where the working copy holds its tensors
    checked_in_part: set[str] = field(default_factory=set)  # checked on fewer calls than made


def _propagate_at(module: nn.Module, inputs: tuple[Any, ...], graph: fx.Graph, key: str) -> bool:
    return propagate_shapes(module, graph, inputs, key)


class _Scope:
    """One module being deployed."""

    def __init__(self, path: str, module: nn.Module, deployment: _Deployment) -> None:
        self.path, self.module, self.deployment = path, module, deployment
        self.rules, self.shared = deployment.rules, deployment.shared
        self.allow_slower, self.report = deployment.allow_slower, deployment.report
        self.dtype = deployment.dtype
        picture = deployment.picture
        self.pattern: CallPattern | None = picture.pattern(path) if picture else None
        self.inputs = self.pattern.tensors if self.pattern is not None else None
        # the same call pattern at other input shapes: cost is judged and checks run on each
        self.other_inputs = (
            [p.tensors for p in picture.other_shapes(path)]
            if picture is not None and self.pattern is not None
            else []
        )
        self.verify = deployment.verify and self.inputs is not None

    def _opaque(self, module: nn.Module, path: str) -> bool:
        return id(module) in self.deployment.opaque

    def _pinned(self) -> dict[str, str]:
        """Modules under this scope that something outside its graph uses."""
        picture = self.deployment.picture or self.deployment.static_picture
        if picture is None:
            return {}
        pinned = {}
        prefix = f"{self.path}." if self.path else ""
        for sub, _ in self.module.named_modules():
            if not sub:
                continue
            users = picture.users_outside(prefix + sub, self.path)
            if users:
                pinned[sub] = f"'{prefix + sub}' is also used directly by '{users[0]}'"
        return pinned

    def run(self) -> None:
        if isinstance(self.module, (nn.ModuleList, nn.ModuleDict)):
            return  # containers without a forward: their items are scopes of their own
        picture = self.deployment.picture
        conflict = picture.pattern_conflict(self.path) if picture is not None else None
        if picture is not None and self.pattern is None and conflict is None:
            # run, but its call could not be bound (a forward taking *args / **kwargs):
            # parents trace through it; it gets no forward of its own unchecked
            self.report.skipped_scopes.append(
                (self.path, "its call could not be bound to its forward's parameters "
                 "(*args / **kwargs): not rewritten on its own")
            )
            return
        # the check's reference: the same module in the untouched copy of the model
        self.original = None
        pristine = self.deployment.pristine
        if self.deployment.check and self.inputs is not None and pristine is not None:
            self.original = pristine.get_submodule(self.path) if self.path else pristine
        try:
            captured = capture(self.module, opaque=self._opaque, pattern=self.pattern)
            functionalize(captured.graph, self.module)
        except Exception as exc:  # noqa: BLE001 - any capture failure is reported, not raised
            reason = describe_trace_failure(exc)
            self.deployment.opaque[id(self.module)] = reason
            self.report.skipped_scopes.append((self.path, reason))
            return
        if conflict is not None:
            # parents still trace through it (each call with its own arguments)
            self.report.skipped_scopes.append((self.path, conflict))
            return
        graph = captured.graph
        self.values, self.versions = captured.values, captured.versions
        for node, value in captured.values.items():
            if isinstance(value, torch.Tensor) and node.graph is graph:
                node.meta["shape"] = tuple(value.shape)
        for name, value in captured.constants.items():
            self.module.register_buffer(name, value, persistent=False)
        rewrites_before = len(self.report.rewrites)
        try:
            self._rewrite(graph, captured.guards)
        finally:
            after = referenced(graph_of(self.module)) if is_rewritten(self.module) else set()
            for name in captured.constants:
                if name not in after:
                    set_attribute(self.module, name, None)
            watch = self.deployment.watch
            if watch is not None and (
                captured.constants or len(self.report.rewrites) != rewrites_before
            ):
                watch.refresh(self.path)  # tensors added, replaced or deleted on purpose

    def _rewrite(self, graph: fx.Graph, guards: list[str]) -> None:
        before_refs = referenced(graph)
        # the scope as it was, for a check of only what its rewrites change (one input
        # pattern: the capture's values are of that one)
        before = None
        if self.original is not None and not self.other_inputs and not self.verify:
            if not self._descendant_checked_in_part():
                try:
                    before = take_before(self.module, graph)
                except Unverifiable:
                    before = None  # something it cannot vouch for: checked whole
        drop_noops(graph, self.module)
        ctx = RuleContext(self.module, graph, self.path, self.shared, self.allow_slower)
        ctx.pinned = self._pinned()
        if self.inputs is not None:
            ctx.shape_provider = lambda g: propagate_shapes(self.module, g, self.inputs)
            ctx.other_shape_providers = [
                functools.partial(_propagate_at, self.module, inputs)
                for inputs in self.other_inputs
            ]
        original = self.original
        reference = self._reference(graph) if self.verify else None
        outcomes: dict[tuple[str, str], SiteOutcome] = {}
        rewrites = self._fixpoint(ctx, outcomes, reference)
        # an enclosing scope sees the same sites again: keep one outcome per (rule, site),
        # the outermost one, and drop refusals for sites where the rule fired after all
        seen = set(outcomes)
        self.report.refusals = [
            o for o in self.report.refusals if (o.rule, o.site) not in seen
        ] + [o for o in outcomes.values() if not o.fired]
        self._note_unfolded_norms(ctx)
        if not rewrites:
            return
        self.report.rewrites.extend(rewrites)
        fired_sites = {r.site for r in rewrites}
        self.report.unfolded_norms = [
            (site, reason) for site, reason in self.report.unfolded_norms if site not in fired_sites
        ]
        if any(r.forward_changed for r in rewrites):
            install_forward(self.module, ctx.graph)
            delete_dead(
                self.module,
                ctx.graph,
                before_refs | ctx.created,
                shared=self.shared,
                pinned=ctx.pinned,
            )
            if guards:
                self.report.notes.append(
                    f"'{self.path or '<model>'}' is specialized on "
                    f"{'; '.join(sorted(set(guards))[:3])} (checked at every call)"
                )
        if original is not None:
            if self.deployment.watch is not None:
                self.deployment.watch.refresh(self.path)  # the merged modules, not the old
            self._check(original, rewrites, before, ctx.graph)

    def _check(
        self, original: nn.Module, rewrites: list[Rewrite], before: Before | None, graph: fx.Graph
    ) -> None:
        """The rewritten scope against the same module in an untouched copy of the model, in
        float64, on the inputs it received (positional as recorded, the rest by keyword); or,
        where it can be shown, only the region the rewrites changed against the same region
        before them, on the values the capture recorded (:mod:`reparam.graph.region`)."""
        # every tensor of either model is read as a copy, also one the forward reaches
        # outside the checked module (a sibling held without registering it): the user's
        # model and the deployed one are as they were
        watch = self.deployment.watch
        places = watch.places() if watch is not None else Places()
        err = None
        if before is not None:
            try:
                region = changed_region(before, graph, self.module, self.values, self.versions)
            except Exception:  # noqa: BLE001 - whatever the region cannot show is checked whole
                region = None
            if isinstance(region, Region):
                err = region_error(region, before, self.module, places)
        picture = self.deployment.picture
        if picture is not None and picture.calls.get(self.path, 0) > 1 + len(self.other_inputs):
            # called more often than it is checked here: its parent checks it whole
            self.deployment.checked_in_part.add(self.path)
        if err is not None:
            self.report.region_checks += 1
        else:
            err = self._whole_error(original, places)
        self.report.checked_scopes += 1
        if not err <= tolerance_for(self.dtype):
            rules = sorted({r.rule for r in rewrites})
            sites = sorted({r.site for r in rewrites})[:3]
            raise ReparamError(
                f"deployed '{self.path or '<model>'}' differs from the original after "
                f"{', '.join(rules)} (at {', '.join(sites)}): relative error {err:.2e} in "
                "float64 on the inputs it received; this is a bug in a rule, please report it"
            )

    def _descendant_checked_in_part(self) -> bool:
        """Whether a module under this one was checked on fewer calls than it received (a
        block called twice at one shape is checked on its first call): this module's check
        then runs it whole, on every call, as before its own rewrites nothing did."""
        prefix = f"{self.path}." if self.path else ""
        return any(
            p.startswith(prefix) and p != self.path for p in self.deployment.checked_in_part
        )

    def _whole_error(self, original: nn.Module, places: Places) -> float:
        return max(
            float64_error(
                original,
                self.module,
                inputs,
                reference_also=self.deployment.pristine_places,
                candidate_also=places,
            )
            for inputs in [self.inputs, *self.other_inputs]
        )

    def _fixpoint(self, ctx: RuleContext, outcomes: dict, reference: Any) -> list[Rewrite]:
        """Fire the first (rule, node) that fires, in rule then graph order, until none does;
        tries that did not fire are remembered until a rewrite changes what they read."""
        rewrites: list[Rewrite] = []
        declined: set[tuple[str, str]] = set()
        memo = TryMemo(ctx.graph, ctx.root)
        remembers = [_remembers(rule) for rule in self.rules]
        while True:
            graph = ctx.graph
            fired = self._pass(ctx, outcomes, declined, reference, memo, remembers)
            if fired is not None:
                rewrites.append(fired)
            elif ctx.graph is graph:
                return rewrites
            memo.graph_changed(ctx.graph)  # a rewrite, or a rollback to another graph

    def _pass(
        self,
        ctx: RuleContext,
        outcomes: dict,
        declined: set,
        reference: Any,
        memo: TryMemo,
        remembers: list[bool],
    ) -> Rewrite | None:
        """One scan; stops at the first rewrite (or when a rollback swapped the graph)."""
        graph = ctx.graph
        for index, rule in enumerate(self.rules):
            pattern = getattr(rule, "graph_pattern", None)
            # the nodes of the kind the pattern starts at, from the memo's index
            candidates = memo.candidates(index, pattern)
            if memo.check and pattern is not None:
                _check_left_out(rule, memo.left_out(index, pattern), ctx)
            for node in candidates:
                if getattr(node, "_erased", False):
                    continue
                key = (index, node)
                known = remembers[index] and memo.knows(key)
                if known and not memo.check:
                    continue
                with recording_visits() as visited:
                    rewrite = self._try(rule, node, ctx, outcomes, declined, reference)
                if rewrite is not None:
                    if known:
                        raise StaleMemoError(
                            f"rule {rule.name} fired at '{node.name}', which the driver's "
                            "memo had skipped: the memo missed a dependency"
                        )
                    return rewrite
                if ctx.graph is not graph:
                    return None  # rolled back to the graph as it was: scan it again
                if remembers[index]:
                    memo.remember(key, visited)
        return None

    def _try(
        self,
        rule: Rule,
        node: fx.Node,
        ctx: RuleContext,
        outcomes: dict,
        declined: set,
        reference: Any,
    ) -> Rewrite | None:
        match = rule.match(node, ctx)
        if match is None or isinstance(match, NoMatch):
            if match is not None and (match.refusal or match.depth >= rule.near_miss_depth):
                site = ctx.site_name(node)
                outcome = SiteOutcome(rule.name, site, False, str(match))
                if match.refusal:
                    outcomes[(rule.name, site)] = outcome
                else:
                    self.report.note_near_miss(outcome)
            return None
        site = ctx.site_name(node)
        key = (rule.name, site)
        if key in declined:
            return None
        plan = rule.check(match, ctx)
        if isinstance(plan, Refusal):
            outcomes[key] = SiteOutcome(rule.name, site, False, plan.reason)
            return None
        tx = ctx.begin(keep_graph=reference is not None)
        rewrite = rule.rewrite(plan, ctx)
        if reference is not None:
            err = self._error(ctx.graph, reference)
            if not err <= tolerance_for(self.dtype):
                tx.rollback()
                declined.add(key)
                self.report.rolled_back.append((rule.name, site, err))
                outcomes[key] = SiteOutcome(
                    rule.name, site, False, f"rolled back: relative error {err:.2e}"
                )
                return None
        tx.commit()
        outcomes[key] = SiteOutcome(rule.name, site, True)
        return rewrite

    def _run_float64(self, graph: fx.Graph) -> Any:
        watch = self.deployment.watch
        with float64_default():
            return run_in_float64(
                fx.GraphModule(self.module, graph),
                self.inputs,
                also=watch.places() if watch is not None else Places(),
            )

    def _reference(self, graph: fx.Graph) -> Any:
        return self._run_float64(graph)

    def _error(self, graph: fx.Graph, reference: Any) -> float:
        try:
            candidate = self._run_float64(graph)
            return relative_error(reference, candidate)
        except Exception:  # noqa: BLE001 - a rewrite that breaks the forward is not exact
            return float("inf")

    def _note_unfolded_norms(self, ctx: RuleContext) -> None:
        reasons = {o.site: o.reason for o in self.report.refusals}
        for node in ctx.graph.nodes:
            view = channel_affine(node, ctx.root)
            if view is None or (not isinstance(view, Refusal) and view.kind == "channel_scale"):
                continue
            site = ctx.site_name(node)
            if isinstance(view, Refusal):
                reason = view.reason
            else:
                reason = reasons.get(site, "no conv or linear next to it to fold into")
            self.report.unfolded_norms = [
                (s, r) for s, r in self.report.unfolded_norms if s != site
            ] + [(site, reason)]


def _check_left_out(rule: Rule, nodes: list[fx.Node], ctx: RuleContext) -> None:
    """Checking mode: the rule, matched at nodes its anchor keys left out, finds nothing the
    driver would act on or report (else the keys hid it: a bug in the pattern's keys)."""
    for node in nodes:
        result = rule.match(node, ctx)
        if result is None:
            continue
        if not isinstance(result, NoMatch) or result.refusal or (
            result.depth >= rule.near_miss_depth
        ):
            found = "a match" if not isinstance(result, NoMatch) else f"'{result}'"
            raise StaleMemoError(
                f"rule {rule.name} finds {found} at '{node.name}', which its pattern's "
                "anchor keys leave out"
            )


def _remembers(rule: Rule) -> bool:
    """Whether the driver may remember ``rule``'s tries (its match reports what it read)."""
    return isinstance(rule, PatternRule) and type(rule).match is PatternRule.match


def _keep_memory_format(original: nn.Module, deployed: nn.Module, report: DeployReport) -> None:
    """A channels_last model stays channels_last: new 4-D conv weights follow it."""
    weights = [p for p in original.parameters() if p.dim() == 4]
    channels_last = [p.is_contiguous(memory_format=torch.channels_last) for p in weights]
    if not weights or not all(channels_last) or all(p.is_contiguous() for p in weights):
        return
    for m in deployed.modules():
        if isinstance(m, nn.Conv2d) and m.weight.is_contiguous():
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
    report.notes.append("channels_last model: merged conv weights are kept channels_last")


def _final_unfolded_norms(model: nn.Module, report: DeployReport) -> None:
    """Norms still in the deployed model, each with the last reason a scope gave."""
    reasons: dict[str, str] = {}
    for site, reason in report.unfolded_norms:
        reasons[site.split(":")[0]] = reason
    report.unfolded_norms = []
    for path, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            reason = reasons.get(path, NO_NEIGHBOUR)
            if reason == NO_NEIGHBOUR:  # its neighbour may sit in a scope that did not trace
                reason = skipped_scope_reason(path, report.skipped_scopes) or reason
            report.unfolded_norms.append((path, reason))


def _pristine(model: nn.Module) -> nn.Module:
    """The checks' reference: an eval copy of the model's modules that borrows the user's
    floating weights (no second copy of them). Each check reads them cast to float64 call by
    call (:mod:`reparam.float64_run`), so the user's tensors are never handed to a forward."""
    return copy_model(model, borrow=True).eval()


def _trusted_ids(model: nn.Module) -> set[int]:
    return {id(m) for m in model.modules() if is_trusted_leaf(m)}


def _post_order(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return list(reversed(list(model.named_modules())))


# the objects alive before (torch, the model) are not walked by collections inside
@frozen_heap()
def deploy_with_report(
    model: nn.Module,
    example_inputs: Any = None,
    *,
    inplace: bool = False,
    rules: RuleRegistry | Iterable[str] | None = None,
    verify: bool = False,
    allow_slower: bool = False,
    check: bool = True,
    progress: bool | ProgressCallback = False,
) -> DeployResult:
    """Deploy ``model`` and say what was done. See :func:`deploy`."""
    start = time.perf_counter()
    model = _validate(model)
    check_model(model)
    registry = _registry(rules)
    report = DeployReport()
    inputs = validate_inputs(example_inputs)
    if not inputs:
        inputs = default_example_inputs(model) or ()
        if inputs:
            report.notes.append(
                f"example input {tuple(inputs[0].shape)} taken from the "
                "model's pretrained_cfg['input_size']"
            )
    if verify and not inputs:
        raise ReparamError(
            "verify=True checks every rewrite numerically and needs example_inputs "
            "(the model has no pretrained_cfg input size to make them from)"
        )
    if model.training:
        report.notes.append(
            "the model was in training mode: deploy uses eval semantics "
            "(running statistics); the result is in eval mode"
        )
    # always work on a copy: a deploy that fails half-way leaves nothing half-converted;
    # ``inplace`` moves the finished result into the user's object at the very end
    target = copy_model(model)
    target.eval()
    dtype = model_dtype(target)
    if dtype in (torch.float16, torch.bfloat16):
        report.notes.append(
            f"{dtype} model: merges are computed in float64 and rounded once to the model dtype"
        )
    picture = None
    reference_out = None
    if inputs:
        try:
            # one forward records the uses and counts the multiply-adds before
            with MacCounter() as before:
                picture, reference_out = record_uses(
                    target, clone_inputs(inputs), skip=_trusted_ids(target)
                )
        except Exception as exc:  # noqa: BLE001 - the user's inputs do not fit the model
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ReparamError(
                f"example inputs do not fit {type(model).__name__}: "
                f"{type(exc).__name__}: {first}"
            ) from None
        report.flops_before = 2 * before.macs
    else:
        report.notes.append(
            "no example inputs: nothing was checked numerically (pass example_inputs to "
            "check every rewritten module in float64)"
        )
    report.params_before = count_params(target)
    report.weight_absmax_before = absmax(*[p for p in target.parameters() if p.dim() > 1])
    deployment = _Deployment(
        registry,
        _shared_ids(target),
        allow_slower,
        verify,
        check,
        report,
        dtype,
        picture,
        opaque={},
        static_picture=None if inputs else static_uses(target, _trusted_ids(target)),
        # one untouched float64 copy is every check's reference (a scope's check then covers
        # its children's rewrites too); no copy per scope
        pristine=_pristine(model) if inputs and check else None,
    )
    if deployment.pristine is not None:
        # read as copies in every check: the user's weights it borrows are never written
        deployment.pristine_places = StateWatch(deployment.pristine).places()
    deployment.watch = StateWatch(target)
    order, layers_before = NetworkOrder.of(target), layer_absmax(target)
    scopes = [(p, m) for p, m in _post_order(target) if not is_trusted_leaf(m)]
    with shared_module_hooks(), ScopeReporter(len(scopes), progress, start=start) as reporter:
        for path, module in scopes:
            reason = opaque_reason(module)
            if reason is not None:
                deployment.opaque[id(module)] = reason
                report.skipped_scopes.append((path, f"kept as it is: {reason}"))
            elif picture is None or picture.was_called(path):
                _Scope(path, module, deployment).run()
            reporter.scope_done(path)
    forget_norm_affines()
    _keep_memory_format(model, target, report)
    _final_unfolded_norms(target, report)
    report.params_after = count_params(target)
    report.weight_absmax_after = absmax(*[p for p in target.parameters() if p.dim() > 1])
    if inputs and check:
        whole = report.checked_scopes - report.region_checks
        report.notes.append(
            f"checked in float64: {report.checked_scopes} rewritten module(s); {whole} against "
            "the same module of an untouched copy, on the inputs it received"
            + (
                f", {report.region_checks} in the part their own rewrites changed, against that "
                "part before them (their submodules already checked), on the values it received"
                if report.region_checks
                else ""
            )
        )
    report.weight_ranges = weight_ranges(layers_before, layer_absmax(target))
    report.put_in_network_order(order)
    if inputs:
        # one forward counts the multiply-adds after and gives the output to compare
        with MacCounter() as after:
            output = run(target, clone_inputs(inputs))
        report.flops_after = 2 * after.macs
        # an invariant, not a heuristic: every rule decides with this same count
        # (reparam.cost) on these same shapes, so a rise is a bug in some rule
        if (report.flops_after or 0) > (report.flops_before or 0) and not allow_slower:
            raise ReparamError(
                f"deployed model needs more FLOPs ({report.flops_after:,}) than the original "
                f"({report.flops_before:,}) by the cost model every rule decides with "
                "(reparam.cost); this is a bug in a rule's cost check"
            )
        try:
            report.max_relative_error = relative_error(reference_out, output)
        except Exception:  # noqa: BLE001 - informative only: each scope was checked already
            report.max_relative_error = None
    report.seconds = time.perf_counter() - start
    if inplace:
        _transplant(target, into=model)
        target = model
    return DeployResult(target, report)


def _transplant(source: nn.Module, into: nn.Module) -> None:
    """Make ``into`` the deployed module (same object identity for the caller)."""
    into.__dict__.clear()
    into.__dict__.update(source.__dict__)
    into.__class__ = type(source)


def deploy(
    model: nn.Module,
    example_inputs: Any = None,
    *,
    inplace: bool = False,
    rules: RuleRegistry | Iterable[str] | None = None,
    verify: bool = False,
    allow_slower: bool = False,
    check: bool = True,
    progress: bool | ProgressCallback = False,
) -> nn.Module:
    """Return an equivalent inference model with every mergeable structure merged.

    Args:
        model: any ``nn.Module``; it is not changed (unless ``inplace``).
        example_inputs: a tensor or tuple of positional inputs. With them, rules that need
            shapes can fire, the report gives FLOPs, and the result is checked in float64.
        inplace: rewrite ``model`` itself instead of a deep copy.
        rules: a :class:`RuleRegistry` or rule names (default: every registered rule).
        verify: check each rewrite numerically (float64) and roll back any that is not exact.
        allow_slower: apply merges the cost model says would be slower.
        check: with ``example_inputs``, check every rewritten module against its original
            in float64, on the inputs it received in one forward of the example inputs.
        progress: ``True`` draws a progress bar (scopes done of total, elapsed) on stderr; a
            callable receives a :class:`reparam.progress.ScopeProgress` after every scope.
            Progress is also logged to the ``reparam.progress`` logger either way.
    """
    return deploy_with_report(
        model,
        example_inputs,
        inplace=inplace,
        rules=rules,
        verify=verify,
        allow_slower=allow_slower,
        check=check,
        progress=progress,
    ).model


def _registry(rules: RuleRegistry | Iterable[str] | Sequence[Rule] | None) -> RuleRegistry:
    if rules is None:
        return default_registry()
    if isinstance(rules, RuleRegistry):
        return rules
    items = list(rules)
    if all(isinstance(r, str) for r in items):
        return default_registry().select(items)
    return RuleRegistry(items)
