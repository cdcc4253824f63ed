"""Where a law's examples end up, and a floor on how many reach its checks.

A law that returns early on most examples proves little. Each law below reports one
outcome per example (also recorded with `hypothesis.event`, so that
`pytest --hypothesis-show-statistics` lists them) and says whether that outcome reached
the law's checks; after the run, `Reach.assert_share` fails the test when fewer than the
given share of examples did:

    run_law("law 1 (the oracle)", examples(), check, share=0.5)

runs `check` (which returns `(outcome, reached)`) on every example hypothesis draws
from the strategy, then asserts the share.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import event, example, given, settings
from hypothesis import strategies as st


SUMMARIES: list[str] = []  # printed at the end of the pytest run (conftest.py)


class Reach:
    def __init__(self, law: str) -> None:
        self.law = law
        self.outcomes: Counter[str] = Counter()
        self.reached = 0

    def record(self, outcome: str, reached: bool) -> None:
        event(outcome)
        self.outcomes[outcome] += 1
        self.reached += reached

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    def summary(self) -> str:
        lines = [f"{self.law}: {self.reached} of {self.total} examples reached its checks"]
        lines += [f"  {count:4d}  {outcome}" for outcome, count in self.outcomes.most_common()]
        return "\n".join(lines)

    def assert_share(self, share: float) -> None:
        SUMMARIES.append(self.summary())
        assert self.total > 0, f"{self.law}: no example ran"
        assert self.reached >= share * self.total, (
            f"fewer than {share:.0%} of the examples reached the law's checks:\n{self.summary()}"
        )


def run_law(
    law: str,
    strategy: st.SearchStrategy[Any],
    check: Callable[[Any], tuple[str, bool]],
    share: float,
    at_least: int = 0,
    explicit: Sequence[Any] = (),
) -> None:
    """Check `law` on examples of `strategy` (the profile's number, or `at_least`), after
    the `explicit` ones (regressions, as `@example`s); fail when fewer than `share` of
    them reach its checks."""
    reach = Reach(law)

    def each(example: Any) -> None:
        reach.record(*check(example))

    # a derandomized run seeds from the test function's source, which every law shares
    # here: the law's name gives each law its own examples
    each._hypothesis_internal_add_digest = law.encode()  # type: ignore[attr-defined]
    examples = max(settings.default.max_examples, at_least)
    test = given(strategy)(each)
    for value in explicit:
        test = example(value)(test)
    settings(settings.default, max_examples=examples)(test)()
    reach.assert_share(share)
