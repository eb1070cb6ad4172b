"""Lab work as Ray jobs: a local Ray head on demand (``local``), submission and inspection through Ray's
Job Submission API (``client``), and the job entrypoints (``grade_job``, ``deliverable_job``, and
``pretrain_job`` and ``pipeline_job``, which share ``config_job``)."""
