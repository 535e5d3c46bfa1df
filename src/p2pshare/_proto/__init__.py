"""Generated protobuf and gRPC code; regenerate with scripts/gen-proto, never edit."""
