"""RPC: the peer's gRPC server and client, the wire format and authentication."""
