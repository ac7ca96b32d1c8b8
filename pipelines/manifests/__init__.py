"""GitOps manifests: the kustomize tree that ``kfbatch manifests`` renders and checks.

:func:`render_tree` (:mod:`~pipelines.manifests.render`) builds every file from a
:class:`~pipelines.manifests.deployment.Deployment`, one module per part of the tree:
:mod:`~pipelines.manifests.base`, :mod:`~pipelines.manifests.kfp_component`,
:mod:`~pipelines.manifests.standalone` and :mod:`~pipelines.manifests.overlays`, with the
YAML and patches of :mod:`~pipelines.manifests.kustomize` and the pod pieces of
:mod:`pipelines.k8s`. :func:`write_tree` and :func:`diff_tree` (:mod:`~pipelines.manifests.tree`)
write it or compare it with disk; :mod:`~pipelines.manifests.job` is the entry point of the
standalone inference Job's pods.
"""

from pipelines.manifests.render import render_tree
from pipelines.manifests.tree import diff_tree, write_tree

__all__ = ["diff_tree", "render_tree", "write_tree"]
