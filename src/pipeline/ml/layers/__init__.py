"""Network layers shared by the studies, one concept per module (formula and shapes in
each module's docstring). Layers import torch and torch_geometric only, never a study.

* ``dense``: ``mlp``, ``dense_stack`` (fully connected stacks)
* ``linear_blocks``: ``input_blocks`` (a linear layer over concatenated parts, part by part)
* ``edge_conv``: ``knn_neighbours``, ``NeighbourEdgeConv`` (EdgeConv on a kNN graph)
* ``energy_log``: ``signed_log`` (asinh input transform of energies)
* ``fine_cells``: ``block_sizes``, ``to_fine`` (detector cells on a fine grid)
* ``scatter``: ``index_sum``, ``index_mean`` (scatter sums and means over an index)
"""

from pipeline.ml.layers.dense import dense_stack, mlp
from pipeline.ml.layers.edge_conv import NeighbourEdgeConv, knn_neighbours
from pipeline.ml.layers.energy_log import signed_log
from pipeline.ml.layers.fine_cells import block_sizes, to_fine
from pipeline.ml.layers.linear_blocks import input_blocks
from pipeline.ml.layers.scatter import index_mean, index_sum

__all__ = ["NeighbourEdgeConv", "block_sizes", "dense_stack", "index_mean", "index_sum", "input_blocks",
           "knn_neighbours", "mlp", "signed_log", "to_fine"]
