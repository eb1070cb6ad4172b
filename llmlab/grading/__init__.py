"""Grading: run a lab's checks against a learner's submission in a separate, limited process.

``runner`` is the trusted side (draws inputs, computes references, judges); ``sandbox`` is the process that
imports the submission and answers calls. Only call arguments cross to the sandbox; the seed, expected
values and the judging code never do.
"""

from llmlab.grading.runner import grade, grade_source

__all__ = ["grade", "grade_source"]
