"""results/report.pdf: what was run, with provenance, the tables and figures, and a short reading."""
