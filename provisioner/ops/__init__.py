"""Backend-neutral operations on labs: dry-run plans (plans), the mode x NIC-model matrix
(matrix), Vagrant verification (vagrant), the guided demo (demo)."""
