"""llmlab: the mathematics and engineering of large language models, as 20 graded labs.

The package is organised by concept (``linalg``, ``autodiff``, ``information``, ``optim``, ``theory``...);
``llmlab.labs`` composes those pieces into graded labs and ``llmlab.grading`` grades a learner's submission.
Importing ``llmlab`` itself is light: torch is imported only by the modules that need it.
"""

__version__ = "0.1.0"
