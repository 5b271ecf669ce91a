"""Prompt curation: ingest with column mapping, normalize, dedup (exact + near), decontaminate."""
