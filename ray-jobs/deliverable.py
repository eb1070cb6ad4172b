"""Run a lab's reference deliverable on a Ray cluster:

    ray job submit --address http://127.0.0.1:8265 -- python ray-jobs/deliverable.py m01 --out /abs/dir

(``--working-dir .`` from the repository root when the cluster's nodes lack this file.)
"""

import sys

from llmlab.platform.jobs.deliverable_job import main

if __name__ == "__main__":
    sys.exit(main())
