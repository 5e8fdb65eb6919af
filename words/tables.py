"""The catalog's tables and their schemas, version 5: what a scan result's keys and the catalog's columns are
called and hold. Adding a table is an entry of TABLES: the store writes it (`Catalog.write`), snapshots read
it, and queries see it as a view of its name.

A scan is one row of `scans`, which carries its candidates, spikes and layer profiles as lists (`SCAN_FILE`):
one commit, so that every engine reading the table sees a scan whole or not at all. The catalog's views show
them as tables of their own (`candidates`, `spikes`, `layer_profiles`, each with the scan's `scan_id`), as
catalogs before schema 5 stored them (and are still read so). Tokens: `token_pos` is a position in a
calibration prompt, `token_id` the token's id in the model's vocabulary. Schema 5 also renamed the candidates
`candidates` (schema 4: `super_weights`, now the view of the catastrophic tiers) and the spike kind
`super_activation` `massive`.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from . import COORDINATES

SCHEMA_VERSION = 5

_i32, _i64, _f64, _str, _bool = pa.int32(), pa.int64(), pa.float64(), pa.string(), pa.bool_()

CANDIDATE = pa.struct([
    ("layer", _i32), ("module", _str), ("expert", _i32), ("row", _i32), ("col", _i32),
    ("value", _f64),            # W[row, col] as loaded (dequantized for GGUF)
    ("input", _f64),            # x[col], the down projection's input at the spike's token
    ("input_ratio", _f64),      # |x[col]| over the model's median per-layer input maximum
    ("output", _f64),           # y[row], the down projection's output at that token (the spike)
    ("output_ratio", _f64),     # spike over the model's median per-layer output maximum
    ("contribution", _f64),     # W[row, col] * x[col]
    ("share", _f64),            # contribution / y[row]
    ("token_pos", _i32), ("token_id", _i64),  # the spike's token: position in its prompt, vocabulary id
    ("prompt", _i32), ("round", _i32), ("rank", _i32), ("screen_kl", _f64),
    # this weight alone zeroed: ppl ratio with the interval that decided it (error spent across looks), on how
    # many evaluation windows, whether it decided every threshold at the zones' edges, the threshold whose line
    # it still holds (either verdict is right there), per kind of text, per window (ln ratio), in what precision
    ("ppl", _f64), ("ppl_ratio", _f64), ("ppl_ratio_lo", _f64), ("ppl_ratio_hi", _f64),
    ("windows", _i32), ("decided", _bool), ("near_threshold", _f64), ("ppl_ratio_kinds", pa.map_(_str, _f64)),
    ("window_deltas", pa.list_(_f64)), ("measured_in", _str),
    ("stopword_shift", _f64),
    ("group", _str),            # the spike it belongs to, e.g. L2R3968
    ("group_ppl_ratio", _f64), ("group_ppl_ratio_lo", _f64), ("group_ppl_ratio_hi", _f64),  # zeroed together
    # controls of the group's size from the same matrix: the worst random draw, the largest other weights
    ("random_ppl_ratio", _f64), ("random_ppl_ratio_hi", _f64), ("largest_ppl_ratio", _f64),
    ("largest_ppl_ratio_hi", _f64),
    # members of catastrophic groups: the group without this weight, and what it carries (the group's effect
    # over the rest's, paired): the weight is needed when that is at least the catastrophic ratio
    ("rest_ppl_ratio", _f64), ("rest_ppl_ratio_lo", _f64), ("rest_ppl_ratio_hi", _f64),
    ("carried_ratio", _f64), ("carried_ratio_lo", _f64), ("carried_ratio_hi", _f64),
    ("verdict", _str),          # a tier of words.verdicts.TIERS
])

SPIKE = pa.struct([
    ("layer", _i32), ("module", _str), ("expert", _i32), ("row", _i32), ("token_pos", _i32), ("token_id", _i64),
    ("prompt", _i32),
    ("value", _f64),            # what the MLP adds to the residual at (token, row), after any post-MLP norm
    ("raw", _f64),              # the down projection's own output there
    ("residual_in", _f64),      # the residual stream entering the layer there
    ("ratio", _f64),
    ("kind", _str),             # a key of words.verdicts.SPIKE_KINDS
    ("round", _i32),
])

LAYER_PROFILE = pa.struct([
    ("layer", _i32),
    ("input_value", _f64), ("input_channel", _i32), ("input_token_pos", _i32), ("input_token_id", _i64),
    ("input_prompt", _i32), ("input_expert", _i32),
    ("output_value", _f64), ("output_channel", _i32), ("output_token_pos", _i32), ("output_token_id", _i64),
    ("output_prompt", _i32), ("output_expert", _i32),
    ("post_norm_value", _f64), ("post_norm_channel", _i32),
])

SCAN_FIELDS = [
    ("schema_version", pa.int16()), ("scan_id", _str),
    ("model", _str),            # hub id for hub models, else what was asked for (a path, pkg:name)
    ("spec", _str), ("repo_id", _str), ("source", _str),  # source: hub | local | gguf | packaged
    ("revision", _str),         # pinned hub commit, or local-<hash> of the files
    ("gguf_file", _str),
    ("base_model", _str),       # the model it was made from (a catalog model name), when known
    ("base_model_from", _str),  # who said so: card (hub model card) | gguf (its metadata) | models_file | flag
    ("architecture", _str), ("layers_path", _str),
    ("num_layers", _i32), ("hidden_size", _i32), ("intermediate_size", _i32), ("num_experts", _i32),
    ("num_parameters", _i64), ("dtype", _str), ("device", _str), ("offloaded", _bool),
    ("prompts", pa.list_(_str)), ("scanner_version", _str), ("host", _str),
    ("started", pa.timestamp("us", tz="UTC")), ("duration_s", _f64),
    ("status", _str),           # ok | failed
    ("error_type", _str), ("error", _str),
    ("ppl_base", _f64), ("stopword_mass", _f64), ("eval_tokens", _i32), ("eval_text_sha256", _str),
    ("eval_ids_sha256", _str),  # of the windows' token ids: scans with the same one can be compared window by window
    ("eval_windows", _i32), ("window_tokens", _i32), ("eval_passes", _i32), ("eval_ablations", _i32),
    ("rounds", _i32), ("n_candidates", _i32), ("n_super_weights", _i32),  # n_super_weights: super_weight + super_set
    ("validated", _bool),       # its candidates were judged by ablation
    ("finding", _str),          # a key of words.verdicts.FINDINGS
    ("largest_ppl_ratio", _f64), ("largest_ppl_ratio_lo", _f64), ("largest_ppl_ratio_hi", _f64),  # of its groups
    ("detect_s", _f64), ("triage_s", _f64), ("validate_s", _f64),
    ("config", _str),           # the whole scan configuration, as JSON (scanner.config.ScanConfig)
    ("config_fingerprint", _str),  # of what changes verdicts (scanner.config.ScanConfig.fingerprint)
    ("warnings", pa.list_(_str)),
]
NESTED = {"candidates": CANDIDATE, "spikes": SPIKE, "layer_profiles": LAYER_PROFILE}

SCAN_FILE = pa.schema(SCAN_FIELDS + [(name, pa.list_(t)) for name, t in NESTED.items()],
                      metadata={"superweights.schema_version": str(SCHEMA_VERSION),
                                "superweights.coordinates": COORDINATES})

REFERENCE_FILE = pa.schema([
    ("model", _str), ("hub_id", _str),
    ("level", _str),            # weight: a claim about W[row, col]; channel: about a row (hidden channel) only
    ("layer", _i32), ("module", _str), ("expert", _i32), ("row", _i32), ("col", _i32),
    ("claim", _str),            # channel claims: what was claimed, in the source's words
    ("effect", _f64),           # channel claims: the relative change in loss the source measured (+3.01 = +301%)
    ("source", _str),           # where the claim was published
    ("origin", _str),           # the file it was imported from
    ("set_id", _str),           # content hash of that file
    ("imported", pa.timestamp("us", tz="UTC")),
], metadata={"superweights.schema_version": str(SCHEMA_VERSION), "superweights.coordinates": COORDINATES})

# One row per setting of a quantization study (`superweights quantize-eval`): perplexity under simulated RTN
# quantization against the unquantized model on the same evaluation windows, with its 95% interval.
QUANT_RESULT = pa.schema([
    ("study_id", _str), ("scan_id", _str),  # scan_id: the scan whose super weights were kept
    ("model", _str), ("revision", _str), ("scanner_version", _str), ("dtype", _str),
    ("started", pa.timestamp("us", tz="UTC")),
    ("study", _str),            # weights | activations | restore
    ("bits", _i32), ("block", _i64),  # block: elements per block of the flattened weight; null: per tensor
    ("variant", _str),          # weights: plain | keep | clip_keep | clip; activations: plain | hold; restore
    ("rtn", _str),              # RTN form: paper (block minimum offset) | zero-point; null: zero-point (older studies)
    ("clip", _str),             # the outlier rule of the clip variants, e.g. z>4
    ("held", pa.list_(_str)),   # activations held out: their input channels, the super activation's first
    # held out: ppl ratio over holding the first channel only (over plain when one is held), paired by window
    ("held_gain", _f64), ("held_gain_lo", _f64), ("held_gain_hi", _f64),
    ("tolerance", _f64),        # the finding's line: a setting is usable when its ratio's interval is wholly below
    ("kept", pa.list_(_str)),   # the super weights kept / zeroed, as labels
    ("ppl", _f64), ("ppl_lo", _f64), ("ppl_hi", _f64),
    ("ppl_ratio", _f64), ("ppl_ratio_lo", _f64), ("ppl_ratio_hi", _f64),
    ("ppl_base", _f64), ("windows", _i32), ("stopword_shift", _f64), ("eval_text_sha256", _str),
    ("finding", _str),          # the study's one line: per variant the largest block size within the tolerance
], metadata={"superweights.schema_version": str(SCHEMA_VERSION)})

# One row per comparison of two scans of a family (`superweights diff`, and batches with base models): where
# each weight that matters on either side is on the other (`catalog.lineage`), and cross-ablations: A's
# catastrophic set zeroed in B (a_in_b), B's in A (b_in_a), and each model's own set on the same windows.
LINEAGE_COORD = pa.struct([
    ("status", _str),           # kept | moved | lost | new
    ("layer", _i32), ("module", _str), ("expert", _i32), ("row", _i32), ("col", _i32),  # A's (B's when new)
    ("b_layer", _i32), ("b_row", _i32), ("b_col", _i32),  # where it is in B (null when lost)
    ("a_value", _f64), ("b_value", _f64),  # W there in each model
    ("a_spike", _f64), ("b_spike", _f64),  # its spike's output ratio in each scan
    ("a_verdict", _str), ("b_verdict", _str), ("a_ppl_ratio", _f64), ("b_ppl_ratio", _f64),
    # zeroed alone, B's effect over A's on the windows both were measured on: stronger | weaker | unchanged
    # (its interval not wholly outside the zone) | unpaired (other windows, or not measured)
    ("change", _str), ("change_ratio", _f64), ("change_ratio_lo", _f64), ("change_ratio_hi", _f64),
])
_CROSS = [(f"{side}_{k}", t) for side in ("a_in_b", "b_in_a", "a_in_a", "b_in_b")
          for k, t in (("ppl_ratio", _f64), ("ppl_ratio_lo", _f64), ("ppl_ratio_hi", _f64), ("windows", _i32),
                       ("decided", _bool), ("verdict", _str))]
# how a set's effect changed from its own model to the other (a_set: in B over in A; b_set: in A over in B),
# paired on the windows both were measured on: stronger | weaker | unchanged (within the zone) | unpaired
_CHANGES = [(f"{side}_change{k}", t) for side in ("a_set", "b_set")
            for k, t in (("", _str), ("_ratio", _f64), ("_ratio_lo", _f64), ("_ratio_hi", _f64))]
LINEAGE = pa.schema([
    ("diff_id", _str), ("started", pa.timestamp("us", tz="UTC")), ("scanner_version", _str),
    ("a_model", _str), ("a_scan_id", _str), ("a_revision", _str),  # A: the base, when B declares one
    ("b_model", _str), ("b_scan_id", _str), ("b_revision", _str),
    ("declared", _str),         # how B names A as its base: card | gguf | models_file | flag; null: compared ad hoc
    ("kept", _i32), ("moved", _i32), ("lost", _i32), ("new", _i32),
    ("a_set", pa.list_(_str)), ("b_set", pa.list_(_str)),  # each scan's catastrophic weights, as labels
    *_CROSS,                    # verdicts: super_weight | super_set | mild | negligible; null: not measured
    *_CHANGES,
    ("eval_text_sha256", _str),
    ("status", _str),           # ok | failed (the comparison could not be made; `error` says why)
    ("error_type", _str), ("error", _str),
    ("coordinates", pa.list_(LINEAGE_COORD)),
], metadata={"superweights.schema_version": str(SCHEMA_VERSION), "superweights.coordinates": COORDINATES})

SCAN_COLUMNS = [name for name, _ in SCAN_FIELDS]


@dataclass(frozen=True)
class Table:
    schema: pa.Schema
    per: str  # one row per ...
    # a list in each scan's row of `scans` (a scan is one row: one commit, whole or absent for every engine that
    # reads the table), shown as a table of its own by the catalog's views; `schema` is that table's
    of_scan: bool = False
    stored_as: tuple = ()  # the folders older schemas kept it in, as a table of its own: read where present


# `scans` first: a reader loads it before the others (catalog.snapshot)
TABLES = {
    "scans": Table(SCAN_FILE, "scan"),
    **{name: Table(pa.schema([("scan_id", _str), *[(f.name, f.type) for f in struct]]), per, of_scan=True,
                   stored_as=("super_weights",) if name == "candidates" else (name,))
       for (name, struct), per in zip(NESTED.items(), ("candidate", "detected spike", "layer of a scan"))},
    "reference": Table(REFERENCE_FILE, "published claim"),
    "quant_results": Table(QUANT_RESULT, "setting of a quantization study"),
    "lineage": Table(LINEAGE, "comparison of two scans"),
}
SCHEMAS = {name: t.schema for name, t in TABLES.items()}
