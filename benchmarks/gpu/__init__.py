"""The GPU check kit: cost table, correctness checks and a short paired training on a lent GPU machine, with a
``--cpu --tiny`` mode for this machine (README.md beside this file)."""
