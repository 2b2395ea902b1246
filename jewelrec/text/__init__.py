"""Text search: query parsing (query), title vectors (minilm, vectors), rank fusion
(fusion) and the searcher that joins them (search)."""
