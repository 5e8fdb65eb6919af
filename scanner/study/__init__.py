"""Studies built on a scan: `quantize` (round-to-nearest quantizers), `quant_study` (the quantization study),
`cross` (a set found in one model zeroed in another, and paired changes between models)."""
