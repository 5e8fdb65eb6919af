"""Loading: from what a user types (a hub id, a folder, a .gguf file, `pkg:` and `planted:` names) to a model in
memory or streamed layer by layer. `sources` resolves and pins, `loading` loads (or offloads with accelerate),
`stream` and `stream_gguf` read one decoder layer at a time, `gguf_once` and `gguf_header` read GGUF files fast,
`card` finds the base a checkpoint declares, `requantize` makes the derived packaged models."""
