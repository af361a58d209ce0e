"""The numpy engine: a TFLite interpreter in numpy alone, bit-exact with TFLite's reference kernels."""
