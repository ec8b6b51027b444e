"""Drivers: the contract every backend implements (base) and one subpackage per backend."""
