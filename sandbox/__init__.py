"""The archer worker: scores one candidate naive.py on the MAD tasks. Needs torch only.

Entry point: `python -m sandbox eval --candidate FILE --profile NAME --seeds 0,1,2 --out result.json`.
Tested by tests/test_naive.py, tests/test_tasks.py, tests/test_train.py and tests/test_checks_*.py.
"""
