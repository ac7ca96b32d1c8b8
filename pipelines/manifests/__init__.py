"""GitOps manifests: the kustomize tree that ``kfbatch manifests`` renders and checks."""

from pipelines.manifests.render import render_tree
from pipelines.manifests.tree import diff_tree, write_tree

__all__ = ["diff_tree", "render_tree", "write_tree"]
