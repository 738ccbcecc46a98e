"""The offline ``rules`` extractor (chaishu's ``use_ai = false``): names from patterns and
part-of-speech tags, no model and no API key."""
