"""superweights scanner: find, validate and report the super weights of one model.

Import the pieces from their modules (`scanner.scan`, `scanner.load.sources`, ...): this package
file stays free of torch so that light commands start fast.
"""
__version__ = "0.3.0"
