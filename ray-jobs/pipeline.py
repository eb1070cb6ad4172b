"""The m17 data pipeline on Ray Data, as a Ray job:

    ray job submit --address http://127.0.0.1:8265 -- python ray-jobs/pipeline.py --config-json '{}' --out /abs/dir

(``llmlab pipeline [SOURCES...]`` does the same.)
"""

import sys

from llmlab.platform.jobs.pipeline_job import main

if __name__ == "__main__":
    sys.exit(main())
