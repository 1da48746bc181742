"""The kserve SDK's clients against a running lstm-serve, each at its defaults; run as a script by
``tests/test_clients.py``.

A separate process because the kserve package and ``tritonclient.grpc`` (which the service imports) both
register the protobuf package ``inference`` and cannot be imported into one process.

Reads ``{"rest": url, "grpc": "host:port", "cases": [{"model", "datatype", "array"}]}`` as argv[1] and prints
``{"rest_v2": ..., "rest_v1": ..., "grpc": ...}`` as JSON: probabilities per model from each client.
"""

import asyncio
import json
import sys
from typing import Any

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

_NUMPY = {"FP32": np.float32, "INT32": np.int32}


def request(case: dict[str, Any], binary: bool) -> InferRequest:
    array = np.asarray(case["array"], dtype=_NUMPY[case["datatype"]])
    tensor = InferInput(name="sequence", shape=list(array.shape), datatype=case["datatype"])
    tensor.set_data_from_numpy(array, binary_data=binary)
    return InferRequest(model_name=case["model"], infer_inputs=[tensor])


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"rest_v2": {"binary": {}, "json": {}, "model_ready": {}}, "rest_v1": {}, "grpc": {"infer": {}, "model_ready": {}}}
    async with InferenceRESTClient(RESTConfig(protocol="v2")) as v2:
        out["rest_v2"]["live"] = await v2.is_server_live(spec["rest"])
        out["rest_v2"]["ready"] = await v2.is_server_ready(spec["rest"])
        for case in spec["cases"]:
            model = case["model"]
            out["rest_v2"]["model_ready"][model] = await v2.is_model_ready(spec["rest"], model)
            for kind, binary in (("binary", True), ("json", False)):
                response = await v2.infer(spec["rest"], request(case, binary), model_name=model)
                out["rest_v2"][kind][model] = response.outputs[0].as_numpy().reshape(-1).tolist()
    async with InferenceRESTClient() as v1:  # the default protocol, v1: TF Serving's ':predict'
        for case in spec["cases"]:
            body = {"instances": np.asarray(case["array"]).tolist()}
            response = await v1.infer(spec["rest"], body, model_name=case["model"])
            out["rest_v1"][case["model"]] = [row[0] for row in response["predictions"]]
    grpc = InferenceGRPCClient(spec["grpc"])
    try:
        out["grpc"]["live"] = await grpc.is_server_live()
        out["grpc"]["ready"] = await grpc.is_server_ready()
        for case in spec["cases"]:
            model = case["model"]
            out["grpc"]["model_ready"][model] = await grpc.is_model_ready(model)
            response = await grpc.infer(request(case, True))
            out["grpc"]["infer"][model] = response.outputs[0].as_numpy().reshape(-1).tolist()
    finally:
        await grpc.close()
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
