"""raftlock: a client for the raftlock distributed lock service."""
