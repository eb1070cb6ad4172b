"""Pretrain with DeepSpeed ZeRO on Ray Train, as a Ray job:

    ray job submit --address http://127.0.0.1:8265 -- python ray-jobs/pretrain.py --config-json '{}' --out /abs/dir

(``llmlab pretrain CONFIG`` does the same from a config file.)
"""

import sys

from llmlab.platform.jobs.pretrain_job import main

if __name__ == "__main__":
    sys.exit(main())
