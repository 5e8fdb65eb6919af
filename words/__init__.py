"""The words the scanner, the catalog and the service layer share, defined once.

`words.verdicts`: the verdict tiers of a weight (in order, with what each means), the verdicts of a spike's
group, what a scan found, the kinds of spike, and the one rule that gives a weight its tier.
`words.tables`: the coordinate convention and the catalog's tables with their schemas.

This package imports none of the others (`tests/test_layering.py` holds it to that), and they may all import
it: a word changed here changes everywhere.
"""

# One coordinate convention, everywhere (scan results, catalog, index, protect lists, README).
COORDINATES = ("(layer, row, col) of the MLP down projection as a Linear weight W[out, in]: row = hidden/output "
               "channel, col = intermediate/input channel; layers count from 0; for MoE experts, "
               "expert e's down projection [e, row, col]; module is the path inside the decoder layer")
COORDINATE_COLUMNS = ("layer", "module", "expert", "row", "col")
