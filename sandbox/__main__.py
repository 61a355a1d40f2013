"""`python -m sandbox eval ...`: the worker's entry point (see sandbox/worker.py)."""
import os
import sys

from sandbox.worker import main

code = main()
sys.stdout.flush()
sys.stderr.flush()
# the result is written and its files closed: skip the interpreter's teardown (module finalisers, the CUDA
# context), which only delays the evaluator
os._exit(code)
