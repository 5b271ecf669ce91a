"""The reader layer, at the bottom: every input format (`inputs`), the layouts of public prompt and trace sets
(`layouts`, `trace_layouts`) and the column mappings a user writes for the rest (`mapping`). Nothing here
imports a stage, the pipeline or the command line."""
