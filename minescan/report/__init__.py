"""The morning report of a run: what changed since the baseline run, new sites outside concessions first, with chips."""
