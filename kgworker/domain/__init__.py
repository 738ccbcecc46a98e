"""The pure domain core: extraction types, names, aliases, resolution, relation types,
graph rows, chunking and statuses. Nothing here does I/O, so it is tested without servers
and every layer above (store, llm, rules, the chaishu application) may use it."""
