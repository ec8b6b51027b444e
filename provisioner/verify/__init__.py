"""Verification: what each cell claims (checks), running the probes in the guests (run), and
the reports of the matrix (report: table, JSON, JUnit; htmlreport with topology, topograph)."""
