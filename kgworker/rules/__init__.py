"""The offline ``rules`` extractor (chaishu's ``use_ai = false``): people, forms of address,
places, organizations and relations from lexicons, jieba's dictionary and a reader's
evidence — no model and no API key. :class:`RulesExtractor` is the entry point."""
