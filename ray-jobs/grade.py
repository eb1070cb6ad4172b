"""Grade a lab submission on a Ray cluster:

    ray job submit --address http://127.0.0.1:8265 --working-dir DIR -- python ray-jobs/grade.py m01 PATH

PATH is relative to DIR (the job's working directory). The cluster's Python must have llmlab installed
(the llmlab image on KubeRay; the project's venv for a local head). Prints the result record
(see llmlab.platform.jobs.record) that `llmlab job ID` reads back.
"""

import sys

from llmlab.platform.jobs.grade_job import main

if __name__ == "__main__":
    sys.exit(main())
