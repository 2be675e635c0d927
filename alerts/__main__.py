"""python -m alerts [--check]: regenerate the rule file and the PrometheusRule (or verify them)."""
import sys

import codegen
from alerts import DIR, generate

sys.exit(codegen.main(__doc__, DIR, generate))
