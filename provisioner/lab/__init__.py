"""The lab: a lab file becomes a typed, validated Lab (model, loader); the network modes and
NIC models it may name (modes/, nics/); the default lab `vnet create` builds (defaults)."""
