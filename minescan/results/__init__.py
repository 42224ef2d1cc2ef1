"""Results: the format table, writers (one atomic writer for every file), readers, evaluation, quicklooks."""
