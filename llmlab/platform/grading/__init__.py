"""Grading: run a lab's checks against a learner's submission, in an OS sandbox.

``runner`` is the trusted side (draws inputs, computes references, judges, signs nothing: the job does);
``isolation`` builds the bubblewrap sandbox; ``sandbox`` (with ``protocol``) is the self-contained agent
that imports the submission inside it and answers calls; ``scan`` reports off-limits calls; ``integrity``
compares submissions for instructors. Only call arguments cross into the sandbox; the seed, expected values,
judging code, keys and llmlab itself never do.
"""

from llmlab.platform.grading.runner import grade, grade_source

__all__ = ["grade", "grade_source"]
