"""The task graph with each task's state, as Mermaid or Graphviz text.

Tasks are grouped by class (a Mermaid subgraph or a Graphviz cluster per
class), which keeps a graph of a few hundred tasks readable.
"""

from __future__ import annotations

from typing import Any

from .freshness import TaskState
from .graph import NodeKey, TaskGraph

STATE_STYLE = {
    "cached": ("#d9ecff", "#3a7bd5"),
    "stale": ("#fff3cd", "#c9a227"),
    "computed": ("#d4edda", "#2e8b57"),
    "failed": ("#f8d7da", "#c0392b"),
    "skipped": ("#eeeeee", "#888888"),
    "unknown": ("#ffffff", "#444444"),
}


def graph_structure(
    graph: TaskGraph, items: dict[NodeKey, str], states: dict[NodeKey, TaskState] | None
) -> dict[str, Any]:
    """JSON-ready nodes (id, class, label, item nodeid, planned state) and edges."""
    index = {k: i for i, k in enumerate(graph.order)}
    nodes = []
    for key in graph.order:
        task = graph.tasks[key]
        planned = None
        if states is not None:
            planned = "stale" if states[key].stale else "cached"
        nodes.append(
            {
                "id": index[key],
                "cls": type(task).__qualname__,
                "label": items.get(key, repr(task)).rsplit("::", 1)[-1],
                "nodeid": items.get(key),
                "planned": planned,
            }
        )
    edges = [[index[u], index[v]] for u, v in graph.edges()]
    return {"nodes": nodes, "edges": edges}


def _state(node: dict[str, Any], statuses: dict[str, str]) -> str:
    found = statuses.get(node["nodeid"] or "")
    return found or node.get("planned") or "unknown"


def render_graph(structure: dict[str, Any], statuses: dict[str, str], suffix: str) -> str:
    if suffix == ".dot":
        return _dot(structure, statuses)
    text = _mermaid(structure, statuses)
    return f"```mermaid\n{text}```\n" if suffix == ".md" else text


def _by_class(structure: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for node in structure["nodes"]:
        groups.setdefault(node["cls"], []).append(node)
    return groups


def _mermaid(structure: dict[str, Any], statuses: dict[str, str]) -> str:
    lines = ["flowchart LR"]
    for number, (cls, nodes) in enumerate(_by_class(structure).items()):
        lines.append(f'  subgraph c{number}["{cls}"]')
        for node in nodes:
            label = node["label"].replace('"', "'")
            state = _state(node, statuses)
            lines.append(f'    n{node["id"]}["{label}<br/>{state}"]:::{state}')
        lines.append("  end")
    for u, v in structure["edges"]:
        lines.append(f"  n{u} --> n{v}")
    for state, (fill, stroke) in STATE_STYLE.items():
        lines.append(f"  classDef {state} fill:{fill},stroke:{stroke}")
    return "\n".join(lines) + "\n"


def _dot(structure: dict[str, Any], statuses: dict[str, str]) -> str:
    lines = ["digraph taskproc {", "  rankdir=LR;", "  node [shape=box, style=filled];"]
    for number, (cls, nodes) in enumerate(_by_class(structure).items()):
        lines.append(f'  subgraph cluster_{number} {{ label="{cls}";')
        for node in nodes:
            state = _state(node, statuses)
            fill, stroke = STATE_STYLE[state]
            label = node["label"].replace('"', "'")
            attributes = f'label="{label}\\n{state}", fillcolor="{fill}", color="{stroke}"'
            lines.append(f"    n{node['id']} [{attributes}];")
        lines.append("  }")
    for u, v in structure["edges"]:
        lines.append(f"  n{u} -> n{v};")
    lines.append("}")
    return "\n".join(lines) + "\n"
