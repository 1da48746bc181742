"""What a model predicts, named once for training, serving, comparison and the HTTP schemas.

Kept free of Keras so that light callers (the CLI reading a comparison report) can import it.
"""

from typing import Literal

#: The question's yes/no (``Dense(1, sigmoid)``), one of several classes (softmax), or numbers (linear).
Task = Literal["binary", "multiclass", "regression"]
