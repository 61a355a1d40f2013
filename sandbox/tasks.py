"""The six MAD tasks, generated as mad-lab's instances.py does (see shared/reference/mad-facts.md §1-2)."""
from sandbox.result import TASKS, TASK_TITLES  # noqa: F401
