"""Where a law's examples end up, and a floor on how many reach its checks.

A law that returns early on most examples proves little. Each law below reports one
outcome per example (also recorded with `hypothesis.event`, so that
`pytest --hypothesis-show-statistics` lists them) and says whether that outcome reached
the law's checks; after the run, `Reach.assert_share` fails the test when fewer than the
given share of examples did:

    reach = Reach("oracle")

    @given(example=examples())
    def law(example):
        reach.record(*check(example))   # check returns (outcome, reached)

    law()
    reach.assert_share(0.5)
"""

from __future__ import annotations

from collections import Counter

from hypothesis import event


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
