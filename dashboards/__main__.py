"""python -m dashboards [--check]: regenerate dashboards/*.json (or verify them)."""
import sys

import codegen
from dashboards import DIR, generate

sys.exit(codegen.main(__doc__, DIR, generate))
