"""Infrastructure: local servers for one machine (``infra.local``), containers and Kubernetes manifests."""
