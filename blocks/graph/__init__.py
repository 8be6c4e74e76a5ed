"""Graph neural network blocks: graph convolutions (GCN, GraphSAGE, GAT, GIN) and graph pooling.

Each block takes a `graph` port (PyG's layout: x, edge_index[, edge_weight, edge_attr, batch];
see `ports`) and optional node features `x` from an earlier layer, and gives node features
[N, C] (`nodes`), or one vector per graph [G, C] (`graph_pool`). The layers are written with
the export-safe scatter ops of `scatter`, their weights named as PyG's so its state dicts load.
"""

from . import gat, gcn, gin, pool, sage  # noqa: F401
