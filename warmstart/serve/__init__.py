"""Use case `serve`: the scale-from-zero TCP front (front) and its pre-started pool (pool).
May import: errors, core, engines, security, cache, runtime, restore."""
