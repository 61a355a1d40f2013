"""`python -m sandbox eval ...`: the worker's entry point (see sandbox/worker.py)."""
import sys

from sandbox.worker import main

sys.exit(main())
