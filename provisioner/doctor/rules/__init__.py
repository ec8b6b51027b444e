"""One module per doctor rule; each defines RULE (provisioner.doctor.base.Rule)."""
