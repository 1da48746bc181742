"""Compatibility protocols, one package each: TF Serving REST (``tfserving``) and KServe V2 / Open Inference
Protocol over HTTP and gRPC (``kserve_v2``). Each package holds its routes, bodies, codec and error format;
all of them call the same data plane as the native routes (``Predictor``, ``SessionService``)."""
