"""llmlab's deployable HTTP services: thin FastAPI shells over the llmlab library."""
