"""vnet inside other people's tests: the pytest plugin (plugin.py, registered with pytest by
the `pytest11` entry point) and the lab handle it gives a test (livelab.py)."""
