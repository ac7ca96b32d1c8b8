"""Tests of the GitOps manifests and of the CRD-validated custom resources."""
