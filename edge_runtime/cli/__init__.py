"""`mnist-edge` on the command line: the commands (main), their options, and the measuring helpers they run."""
