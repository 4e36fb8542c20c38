"""dimo's toy plugin: a source whose sequence probabilities are known exactly."""
