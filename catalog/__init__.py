"""The catalog: scans stored in Delta Lake tables (`store`), read as one snapshot (`snapshot`), queried
read-only with DuckDB (`query`, over the views of `views`), published as a coordinate index (`publish`). Free of
torch and transformers; it takes the scanner's JSON results. Its tables and words are `words`'.

    from catalog.store import Catalog
    from catalog.rows import ok_row
    from catalog import query
    cat = Catalog("out/catalog")
    cat.write_scan(ok_row(result.to_dict()))
    columns, rows = query.run(cat, "SELECT model, layer, row, col FROM super_weights")
"""
