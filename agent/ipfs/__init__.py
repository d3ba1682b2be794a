"""The IPFS layer: a Kubo-compatible importer, an embedded node, and pinning backends behind one interface."""
