"""Device mesh, logical-axis rules, sharded init and batch sharding (see `mesh.py`)."""

from audiolm.parallel.mesh import (BATCH_AXES, MESH_AXES, batch_size_divisor, init_sharded,
                                   logical_param_specs, logical_rules, make_mesh, mesh_shape,
                                   param_shardings, replicated, shard_batch)

__all__ = ["BATCH_AXES", "MESH_AXES", "batch_size_divisor", "init_sharded",
           "logical_param_specs", "logical_rules", "make_mesh", "mesh_shape", "param_shardings",
           "replicated", "shard_batch"]
