"""Kubernetes manifests (kustomize base + overlays) and the Envoy config they ship."""
