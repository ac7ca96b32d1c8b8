"""The scoring capability: planning shards, batch sizing and model optimisation, and the
lookup store, used by the infer and publish steps."""
