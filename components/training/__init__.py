"""The training capability: the trainer and its building blocks, used by the train step."""
