"""Device mesh, logical-axis rules, sharded init and batch sharding (see `mesh.py`)."""

from audiolm.parallel.mesh import (BATCH_AXES, MESH_AXES, batch_size_divisor, check_batch_layout,
                                   init_sharded, local_batch, logical_param_specs, logical_rules,
                                   make_mesh, mesh_shape, param_shardings, process_batch_shards,
                                   process_rows, replicated, rows_per_process, shard_batch,
                                   shard_local_batch)

__all__ = ["BATCH_AXES", "MESH_AXES", "batch_size_divisor", "check_batch_layout", "init_sharded",
           "local_batch", "logical_param_specs", "logical_rules", "make_mesh", "mesh_shape",
           "param_shardings", "process_batch_shards", "process_rows", "replicated",
           "rows_per_process", "shard_batch", "shard_local_batch"]
