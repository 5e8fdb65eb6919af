"""The service layer: composes the scanner and the catalog. Batches on Ray (`batch`, `worker`, `pin`,
`models`), Ray jobs (`jobs`), one scan to one catalog row (`service`), and the `superweights` command
(`cli`), the one place where library errors become exit codes."""
