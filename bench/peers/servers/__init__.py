"""The peers' server code. Each module runs inside its peer's own virtual environment: import nothing here
beyond the standard library, NumPy, onnxruntime and that peer's own package."""
