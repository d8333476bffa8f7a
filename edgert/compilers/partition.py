"""Split a graph into stages, each run by one backend: TVM subgraphs and single kernel nodes."""

from __future__ import annotations

from dataclasses import dataclass

from edgert import ir
from edgert.errors import UnsupportedOpError


@dataclass(frozen=True)
class Stage:
    """Consecutive nodes (in topological order) that one backend runs as a unit."""

    backend: str
    nodes: tuple[ir.Node, ...]
    inputs: tuple[str, ...]   # activations read from earlier stages or graph inputs (not params)
    outputs: tuple[str, ...]  # values later stages or the graph outputs read

    def subgraph(self, g: ir.Graph, specs: dict[str, ir.TensorSpec]) -> ir.Graph:
        """The stage as a graph of its own: its inputs, its nodes, its parameters."""
        used = {i for n in self.nodes for i in n.inputs}
        return ir.Graph(inputs=tuple((i, specs[i]) for i in self.inputs), nodes=self.nodes,
                        outputs=self.outputs, params={k: v for k, v in g.params.items() if k in used})


def choose_backends(g: ir.Graph, available: tuple[str, ...]) -> dict[str, str]:
    """Each node's backend: the first of its op's ``backends`` that is available."""
    chosen, missing = {}, []
    for n in g.nodes:
        pick = next((b for b in n.backends if b in available), None)
        if pick is None:
            missing.append(f"{n.op} {n.name!r} needs one of {list(n.backends)}")
        chosen[n.name] = pick
    if missing:
        raise UnsupportedOpError(f"no available backend ({', '.join(available)}) runs:\n  "
                                 + "\n  ".join(missing))
    return chosen


def partition(g: ir.Graph, backend_of: dict[str, str], groupable: tuple[str, ...] = ("tvm",),
              keep: tuple[str, ...] = ()) -> list[Stage]:
    """Group maximal runs of consecutive nodes on a ``groupable`` backend; other nodes stand alone.

    Values named in ``keep`` (adaptation taps) are stage outputs even when nothing later reads them.
    """
    runs: list[list[ir.Node]] = []
    for n in g.nodes:
        b = backend_of[n.name]
        if runs and b in groupable and backend_of[runs[-1][0].name] == b:
            runs[-1].append(n)
        else:
            runs.append([n])
    params = set(g.params)
    later_reads: list[set[str]] = []
    acc = set(g.outputs) | set(keep)
    for run in reversed(runs):
        later_reads.append(set(acc))
        acc |= {i for n in run for i in n.inputs}
    later_reads.reverse()
    stages = []
    for run, later in zip(runs, later_reads):
        made = {n.output for n in run}
        inputs = tuple(dict.fromkeys(i for n in run for i in n.inputs if i not in made and i not in params))
        outputs = tuple(n.output for n in run if n.output in later)
        stages.append(Stage(backend_of[run[0].name], tuple(run), inputs, outputs))
    return stages
