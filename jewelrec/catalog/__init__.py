"""The catalog: product schema, importers (CSV, JSONL, ShopStyle), SQLite store, demo generator."""
