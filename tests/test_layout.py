"""The package's shape: modules of at most 400 lines (test, property-test and bench
files 800), and no import cycle anywhere in src/fqlower, function-level and
type-checking imports included (a module low in the stack, such as the errors, must
not reach up into the IR to print itself)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "fqlower"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the fqlower modules it imports, wherever the import statement is."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
                found = [target for target in targets if target in modules] or [node.module]
            elif isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            else:
                continue
            graph[name].update(target for target in found if target in modules and target != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = visit(name)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert {"fqlower.errors", "fqlower.ir", "fqlower.engine.draft"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    source = "def f():\n    from fqlower.ir import Program\n"
    assert any(isinstance(node, ast.ImportFrom) for node in ast.walk(ast.parse(source)))


def test_the_errors_import_nothing_of_fqlower():
    assert import_graph()["fqlower.errors"] == set()


MODULE_LINES = 400


def test_every_module_of_the_package_is_at_most_400_lines():
    long = {module_name(path): n for path in PACKAGE.rglob("*.py") if (n := len(path.read_text().splitlines())) > MODULE_LINES}
    assert long == {}, f"modules over {MODULE_LINES} lines: {long}"


TEST_FILE_LINES = 800
ROOT = PACKAGE.parents[1]


def test_every_test_property_test_and_bench_file_is_at_most_800_lines():
    files = [path for folder in ("tests", "property_tests", "bench") for path in (ROOT / folder).glob("*.py")]
    assert len(files) > 50
    long = {str(path.relative_to(ROOT)): n for path in files if (n := len(path.read_text().splitlines())) > TEST_FILE_LINES}
    assert long == {}, f"files over {TEST_FILE_LINES} lines: {long}"


IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[a-z-, ]+\])?(?P<rest>.*)$")


def unexplained_type_ignores(text: str) -> list[int]:
    """Line numbers of `# type: ignore` comments without an error code or without a
    `# why` after it."""
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        found = IGNORE.search(line)
        if found and not (found["codes"] and re.match(r"\s*#\s*\S", found["rest"])):
            lines.append(number)
    return lines


def test_every_type_ignore_names_its_code_and_says_why():
    unexplained = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if (lines := unexplained_type_ignores(path.read_text()))
    }
    assert unexplained == {}


def test_the_type_ignore_check_finds_bare_and_unexplained_ignores():
    text = "a = 1  # type: ignore\nb = 2  # type: ignore[index]\nc = 3  # type: ignore[index]  # a Sequential\n"
    assert unexplained_type_ignores(text) == [1, 2]
