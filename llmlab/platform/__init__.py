"""The platform around the course: submission store, grading service logic and its client, gradebook,
Kubernetes objects, the local stack, the course run, SLOs and dashboards. Concept modules (``llmlab.*``
outside ``platform`` and ``labs``) never import from here."""
