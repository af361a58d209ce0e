"""Pictures into model inputs: decoding files and bytes, resampling, and the digit and plain preparations."""
