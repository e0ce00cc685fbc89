"""The rule registry: one verb to add a rule, duplicate names are an error."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from reparam.errors import ReparamError
from reparam.rules.base import Rule


class RuleRegistry:
    """An ordered set of rules, applied in registration order until nothing changes."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self._rules: dict[str, Rule] = {}
        for rule in rules:
            self.register(rule)

    def register(self, rule: Rule | type[Rule], *, before: str | None = None) -> Rule:
        if isinstance(rule, type):
            rule = rule()
        if not isinstance(rule, Rule):
            raise ReparamError(f"{rule!r} is not a reparam.Rule")
        for attr in ("name", "summary", "pattern"):
            if not isinstance(getattr(rule, attr, None), str):
                raise ReparamError(f"rule {type(rule).__name__} must define a string '{attr}'")
        if rule.name in self._rules:
            raise ReparamError(f"a rule named '{rule.name}' is already registered")
        if before is None:
            self._rules[rule.name] = rule
        else:
            if before not in self._rules:
                raise ReparamError(f"no rule named '{before}' to insert before")
            items = list(self._rules.items())
            at = [n for n, _ in items].index(before)
            items.insert(at, (rule.name, rule))
            self._rules = dict(items)
        return rule

    def unregister(self, name: str) -> None:
        if name not in self._rules:
            raise ReparamError(f"no rule named '{name}'")
        del self._rules[name]

    def get(self, name: str) -> Rule:
        try:
            return self._rules[name]
        except KeyError:
            raise ReparamError(
                f"no rule named '{name}'; registered: {', '.join(self._rules)}"
            ) from None

    def select(self, names: Iterable[str]) -> RuleRegistry:
        return RuleRegistry(self.get(n) for n in names)

    def __iter__(self) -> Iterator[Rule]:
        return iter(list(self._rules.values()))

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, name: object) -> bool:
        return name in self._rules

    def names(self) -> list[str]:
        return list(self._rules)
