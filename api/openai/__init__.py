"""The OpenAI-compatible facade under `/openai/v1`: OpenAI's wire shapes over turnlog's conversations and runs."""
