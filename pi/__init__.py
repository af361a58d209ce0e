"""The emulated Raspberry Pi check (`make pi-check`): rows in platforms, runs in tasks, rules in verdicts."""
