"""The step DAG: cycles, upstream sets and execution stages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def find_cycle(needs: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One cycle as ``[a, b, …, a]``, or None. Unknown ids in ``needs`` are ignored."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in needs.get(node, ()):
            if dep not in needs:
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in needs:
        if node not in state and (found := visit(node)):
            return found
    return None


def upstream(needs: Mapping[str, Sequence[str]]) -> dict[str, set[str]]:
    """Every step's transitive ``needs`` (its ancestors). Assumes no cycle."""
    memo: dict[str, set[str]] = {}

    def ancestors(node: str) -> set[str]:
        if node not in memo:
            memo[node] = set()
            for dep in needs.get(node, ()):
                if dep in needs:
                    memo[node] |= {dep, *ancestors(dep)}
        return memo[node]

    return {node: ancestors(node) for node in needs}


def stages(needs: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Steps grouped by depth: each stage can start once the stages before it finished.

    Within a stage, steps are independent of each other and run concurrently.
    Order inside a stage follows the document, so plans read like the file.
    """
    depth: dict[str, int] = {}

    def level(node: str) -> int:
        if node not in depth:
            depth[node] = 1 + max((level(d) for d in needs.get(node, ()) if d in needs), default=-1)
        return depth[node]

    result: list[list[str]] = []
    for node in needs:
        d = level(node)
        while len(result) <= d:
            result.append([])
    for node in needs:
        result[depth[node]].append(node)
    return result
