"""What the command line says and does without options: read by the plain `predict` path and by the parser.

Kept apart from options.py so that `predict MODEL IMAGE...`, which never needs argparse, reads the
same defaults as the parser sets, without importing it.
"""

DESCRIPTION = "predict, eval, bench, info, samples and serve on the device"

from edge_runtime import records

# What `predict` does without the option.
PREDICT_DEFAULTS = {"top_k": records.DEFAULT_TOP_K, "backend": None, "threads": None, "skip_integrity_check": False,
                    "json": False}
