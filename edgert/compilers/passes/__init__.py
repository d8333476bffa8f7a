"""Graph -> Graph rewrites, one per module. Shape propagation is ``ir.Graph.infer_specs``."""

from edgert.compilers.passes.fold_batchnorm import fold_batchnorm
from edgert.compilers.passes.fuse_linear_leaky import fuse_linear_leaky
from edgert.compilers.passes.remove_dead_nodes import remove_dead_nodes

__all__ = ["fold_batchnorm", "fuse_linear_leaky", "remove_dead_nodes"]
