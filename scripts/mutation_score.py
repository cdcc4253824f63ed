"""Per-module mutation scores from mutmut's results (`make mutation`, docs/mutation.md).

mutmut 3 keeps one `<module>.py.meta` JSON file per mutated module under
mutants/, mapping each mutant's name to the exit code of its test run. This
prints, per module, how many mutants the tests killed out of all of them, the
score (killed out of those checked, so that a partial run reads right), and how
many survived, had no covering test, timed out or were not checked; then the
totals.

    python scripts/mutation_score.py              # the table
    python scripts/mutation_score.py --markdown   # the same, as docs/mutation.md's table
    python scripts/mutation_score.py --survivors  # also each surviving mutant's name

Run from the repository root, after `mutmut run`. Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

# mutmut.stats.status_by_exit_code, copied so this script needs only the stdlib;
# anything else counts as "suspicious", as in mutmut.
STATUS_BY_EXIT_CODE = {
    1: "killed",
    3: "killed",  # pytest's internal error: the mutant broke something, a kill
    37: "killed",  # caught by the type checker
    0: "survived",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    36: "timeout",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
    -11: "segfault",
    -9: "segfault",
    2: "interrupted",
    None: "not checked",
}
COLUMNS = ("killed", "survived", "no tests", "timeout", "suspicious", "not checked")


def status(exit_code: int | None) -> str:
    return STATUS_BY_EXIT_CODE.get(exit_code, "suspicious")


def module_name(meta: Path, root: Path) -> str:
    """mutants/src/fqlower/passes/prepack.py.meta -> fqlower/passes/prepack.py"""
    relative = meta.relative_to(root).as_posix().removesuffix(".meta")
    return relative.removeprefix("src/")


def load(root: Path) -> dict[str, dict[str, str]]:
    """{module: {mutant name: status}} for every mutated module under `root`."""
    results = {}
    for meta in sorted(root.rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if codes:
            results[module_name(meta, root)] = {name: status(code) for name, code in codes.items()}
    return results


def percent(killed: int, total: int) -> str:
    return f"{100 * killed / total:.1f}%" if total else "-"


def score(counts: Counter, total: int) -> str:
    """Killed out of the mutants checked (a partial run leaves some unchecked)."""
    return percent(counts["killed"], total - counts["not checked"])


def rows(results: dict[str, dict[str, str]]) -> list[tuple[str, Counter, int]]:
    table = []
    overall: Counter = Counter()
    for module, by_name in results.items():
        counts = Counter(by_name.values())
        overall.update(counts)
        table.append((module, counts, len(by_name)))
    table.append(("TOTAL", overall, sum(overall.values())))
    return table


def print_plain(table: list[tuple[str, Counter, int]]) -> None:
    width = max(len(module) for module, _, _ in table)
    header = f"{'module':<{width}}  {'killed/total':>13}  {'score':>6}  " + "  ".join(f"{c:>11}" for c in COLUMNS[1:])
    print(header)
    print("-" * len(header))
    for module, counts, total in table:
        killed = f"{counts['killed']}/{total}"
        cells = "  ".join(f"{counts[c]:>11}" for c in COLUMNS[1:])
        print(f"{module:<{width}}  {killed:>13}  {score(counts, total):>6}  {cells}")


def print_markdown(table: list[tuple[str, Counter, int]]) -> None:
    print("| module | killed / total | score (of checked) | " + " | ".join(COLUMNS[1:]) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in COLUMNS[1:]) + " |")
    for module, counts, total in table:
        name = f"**{module}**" if module == "TOTAL" else f"`{module}`"
        cells = " | ".join(str(counts[c]) for c in COLUMNS[1:])
        print(f"| {name} | {counts['killed']} / {total} | {score(counts, total)} | {cells} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=Path("mutants"), help="mutmut's folder (default: mutants)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--survivors", action="store_true", help="also list every mutant that was not killed")
    args = parser.parse_args(argv)

    results = load(args.mutants)
    if not results:
        print(f"no mutmut results under {args.mutants}/: run `make mutation` (or `mutmut run`) first", file=sys.stderr)
        return 1
    table = rows(results)
    (print_markdown if args.markdown else print_plain)(table)
    if args.survivors:
        print()
        for module, by_name in results.items():
            for name, state in by_name.items():
                if state != "killed":
                    print(f"{state:>11}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
