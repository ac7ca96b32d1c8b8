"""The packaged Hydra config tree of kfbatch (installed as ``pipelines.conf``)."""
