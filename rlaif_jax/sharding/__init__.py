"""Device mesh, logical-axis rules and sharded jit helpers."""
