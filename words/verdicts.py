"""Verdicts, findings and spike kinds: the names a scan result, the catalog, the index and the protect list
use, what each means, and the rule that gives a weight its tier. Adding a tier is an entry of TIERS (and,
if it needs one, a condition in `tier`): SQL lists, the index, protect lists and lineage read them from here.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tier:
    """A verdict on one weight (or a set of weights zeroed together)."""

    name: str
    catastrophic: bool  # its removal (alone, or with its set) wrecks the model: protect it
    matters: bool  # its removal changes perplexity beyond noise and controls
    meaning: str


# strongest first
TIERS = (
    Tier("super_weight", True, True, "zeroing it alone multiplies perplexity past the catastrophic ratio"),
    Tier("super_set", True, True, "a needed member of a catastrophic set: without it, the rest of the set "
                                  "is not catastrophic"),
    Tier("mild", False, True, "significant alone (above the minimum ratio and its controls), not catastrophic"),
    Tier("negligible", False, False, "neither; or a member of a spike whose weights together are harmless"),
    Tier("unvalidated", False, False, "a candidate of a spike that barely moves the output on the prompts "
                                      "(triage), not measured"),
)
ALIASES = {"partner": "super_set"}  # superweights 0.1's name, kept in migrated catalogs
BY_NAME = {t.name: t for t in TIERS}

CATASTROPHIC = tuple(t.name for t in TIERS if t.catastrophic)
MATTERING = tuple(t.name for t in TIERS if t.matters)
# what catalogs may hold for each (the current names and their older aliases)
CATASTROPHIC_STORED = CATASTROPHIC + tuple(a for a, n in ALIASES.items() if n in CATASTROPHIC)
MATTERING_STORED = MATTERING + tuple(a for a, n in ALIASES.items() if n in MATTERING)


def of(name: str | None) -> Tier | None:
    """The tier a stored verdict names (older names included), or None."""
    return BY_NAME.get(ALIASES.get(name, name)) if name else None


def is_catastrophic(name: str | None) -> bool:
    t = of(name)
    return bool(t and t.catastrophic)


def matters(name: str | None) -> bool:
    t = of(name)
    return bool(t and t.matters)


def sql_list(names) -> str:
    """An SQL list of verdict names, `('a', 'b')`: names come from this module, never from a user."""
    return "(" + ", ".join(f"'{n}'" for n in names) + ")"


def tier(*, catastrophic_alone: bool, needed: bool, significant: bool) -> str:
    """The tier of a weight: `catastrophic_alone` (zeroed alone, past the catastrophic line), `needed` (a member
    of a catastrophic set that the set cannot do without), `significant` (zeroed alone, past the significant
    line and its controls). A set zeroed as a whole (a cross-ablation) is one weight when it has one member,
    else `needed` for all of them."""
    if catastrophic_alone and significant:
        return "super_weight"
    if needed:
        return "super_set"
    return "mild" if significant else "negligible"


# a spike's group (its candidates zeroed together)
GROUP_VERDICTS = {
    "super_activation": "the group zeroed together is catastrophic: the spike is a super activation",
    "mild_activation": "the group zeroed together is significant, not catastrophic",
    "spike_only": "a spike whose weights together barely matter",
}

# what a scan found, in one word
FINDINGS = {
    "super_weights": "super weights found: their removal is catastrophic",
    "mild_only": "spikes whose weights matter, but none catastrophically",
    "spikes_harmless": "spikes, but no weight whose removal matters",
    "no_spike": "no down-projection output spikes above the threshold",
    "not_visible": "not visible to this method: the post-MLP norm's gains make the large activations, "
                   "not a down-projection weight",
    "unvalidated": "spikes with candidates, not validated (--no-validate)",
}

# what a detected spike does to the residual stream
SPIKE_KINDS = {
    "massive": "a large activation the layer adds to the residual stream (a candidate super activation)",
    "cancellation": "opposes a residual activation already at least half its size (a late layer removing it)",
    "diffuse": "spread over many input channels: no weight makes a share of it",
}
SPIKE_ALIASES = {"super_activation": "massive"}  # schema 4 and earlier named a massive spike so
