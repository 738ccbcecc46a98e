"""LLM extraction: provider clients, prompts, answer repair, retries, shared flow control,
accounting and the response cache, assembled by :class:`kgworker.llm.extractor.LLMExtractor`.
"""
