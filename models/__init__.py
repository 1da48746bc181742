"""Domain layer of lstm-serve: architectures, training, inference runtime, model index and registry, and sessions.

Nothing here imports the web framework; ``service`` imports this package, never the reverse.
"""

import os

# Keras 3 picks its backend from the environment at import; TensorFlow is the one this project pins.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's C++ start-up chatter (oneDNN notices, CUDA probes) hides the service's own logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
