"""llmlab's Kubernetes operators (kopf)."""
