"""Parquet catalog queried with DuckDB (see issue: Catalog)."""
