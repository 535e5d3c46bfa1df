"""API: the local control API through which the CLI and the web UI drive a peer."""
