"""The scan: the plan (every setting resolved once), the one stream, stitching, the Scanner API, bench."""
