"""Log templates with Drain3: free text -> a template id that stays the same across runs and processes.

Drain3's own persistence serializes its objects with jsonpickle, which can build any Python object
from the stored text (as unsafe as pickle). So the state is written here as plain JSON (the clusters
and the prefix tree, nothing else) and rebuilt into Drain3's classes on load; a state that is not
exactly that shape is refused. The caller stores it (in Elasticsearch, beside the models) with
optimistic concurrency, so two processes never hand out the same id to two templates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from drain3.drain import Drain, LogCluster, Node
from drain3.masking import LogMasker, MaskingInstruction

from secmon.detect.fields import field_values
from secmon.errors import InputError

FORMAT = 1
MAX_TEXT = 4096  # characters of one message given to Drain (CPU stays bounded whatever the line)
MASKS = (  # variable parts that are never part of a template
    (r"\b(?:[0-9a-fA-F]{1,4}:){3,7}[0-9a-fA-F]{1,4}\b", "IPV6"),
    (r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b", "IP"),
    (r"\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{16,}\b", "HEX"),
    (r"(?<![A-Za-z])[-+]?\d+(?:\.\d+)?(?![A-Za-z])", "NUM"),
)


class Templates:
    """A Drain3 miner whose state is plain JSON."""

    def __init__(self, state: Mapping[str, Any] | None = None):
        self.drain = Drain(depth=4, sim_th=0.4, max_children=100)
        self.masker = LogMasker([MaskingInstruction(p, name) for p, name in MASKS], "<", ">")
        self.changed = False
        if state:
            try:
                self._restore(state)
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"the stored log-template state is refused: {exc}",
                                 hint="delete it to start the templates afresh (their ids change)") from None

    def id_of(self, text: str) -> str:
        cluster, change = self.drain.add_log_message(self.masker.mask(text[:MAX_TEXT]))
        if change != "none":
            self.changed = True
        return f"T{cluster.cluster_id}"

    def template(self, ident: str) -> str:
        cluster = self.drain.id_to_cluster.get(int(ident.lstrip("T") or 0))
        return cluster.get_template() if cluster else ""

    def of(self, name: str) -> Callable[[Mapping[str, Any]], str | None]:
        """doc -> the template id of its `name` field (None when it has no text)."""
        def template_of(doc: Mapping[str, Any]) -> str | None:
            values = field_values(doc, name)
            return self.id_of(str(values[0])) if values else None
        return template_of

    # --- state ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        clusters = [[c.cluster_id, c.size, list(c.log_template_tokens)]
                    for c in sorted(self.drain.id_to_cluster.values(), key=lambda c: c.cluster_id)]
        return {"format": FORMAT, "counter": self.drain.clusters_counter, "clusters": clusters,
                "tree": _node_out(self.drain.root_node)}

    def _restore(self, state: Mapping[str, Any]) -> None:
        if state.get("format") != FORMAT:
            raise ValueError(f"unknown format {state.get('format')!r}")
        counter = state["counter"]
        if not isinstance(counter, int) or counter < 0:
            raise ValueError("the cluster counter is not a count")
        for ident, size, tokens in state["clusters"]:
            if not (isinstance(ident, int) and 0 < ident <= counter and isinstance(size, int)
                    and isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)):
                raise ValueError("a cluster is not (id, size, tokens)")
            cluster = LogCluster(tokens, ident)
            cluster.size = size
            self.drain.id_to_cluster[ident] = cluster
        self.drain.clusters_counter = counter
        self.drain.root_node = _node_in(state["tree"], set(self.drain.id_to_cluster), 0)


def _node_out(node: Node) -> dict[str, Any]:
    return {"ids": list(node.cluster_ids), "children": {k: _node_out(v) for k, v in node.key_to_child_node.items()}}


def _node_in(data: Any, known: set[int], depth: int) -> Node:
    if not isinstance(data, dict) or depth > 8:
        raise ValueError("the prefix tree is not nested nodes")
    node = Node()
    ids = data["ids"]
    if not isinstance(ids, list) or any(i not in known for i in ids):
        raise ValueError("the prefix tree names clusters that do not exist")
    node.cluster_ids = list(ids)
    children = data["children"]
    if not isinstance(children, dict):
        raise ValueError("the prefix tree's children are not a mapping")
    node.key_to_child_node = {str(k): _node_in(v, known, depth + 1) for k, v in children.items()}
    return node
