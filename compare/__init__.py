"""`make compare`: every model through every installed runtime, float against int8, in one report."""
