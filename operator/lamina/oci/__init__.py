"""OCI images and registries: references, digests, manifests, and the async distribution client."""
