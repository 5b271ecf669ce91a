"""Teacher generation: prompts in, one trace row per (prompt `id`, `sample`) out, from any backend."""
