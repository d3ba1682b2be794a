"""Operating Chrysalis: the ``chrysalis init | run | status | jobs | retry | evolve | fuse`` commands, the
``/metrics`` endpoint, logging, holder actions from local accounts, and the demo (``make demo``)."""
