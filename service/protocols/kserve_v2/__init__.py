"""KServe V2 / Open Inference Protocol, over HTTP (``/v2/...``) and gRPC (``inference.GRPCInferenceService``).

Both transports decode requests into the same ``codec.InferCall`` and call the same ``V2DataPlane``; the
binary tensor data extension and Triton's sequence extension are supported on both.
"""
