"""Generated from proto/raftlock/v1/raftlock.proto by scripts/gen-python.sh: do not edit."""
