"""The lab host: the one subprocess site (runner), network namespaces and the isolated sandbox,
processes vnet starts, port forwards, the accelerator, and the lab records under the state root."""
