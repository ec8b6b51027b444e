"""Backend-neutral operations on labs: up, verify, status, destroy, list and gc through the
driver registry (labs); dry-run plans (plans), the mode x NIC-model matrix (matrix), Vagrant
verification (vagrant), the guided demo (demo)."""
from . import labs  # noqa: F401  (ops.labs is what the CLI calls)
