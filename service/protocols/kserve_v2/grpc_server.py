"""KServe V2 over gRPC: ``inference.GRPCInferenceService`` in the service's own process and event loop.

The service definition is the one ``tritonclient[grpc]`` ships (``service_pb2``, ``service_pb2_grpc``), so
the server speaks exactly what Triton's and KServe's clients send. The methods a V2 client uses are
implemented on the same ``V2DataPlane`` as HTTP; the others answer UNIMPLEMENTED. Auth follows the HTTP
rules: with ``API_KEY`` and ``API_KEY_ALL``, every method but ServerLive and ServerReady needs
``authorization: Bearer <key>`` metadata. Errors map to status codes in ``errors.grpc_status``. Every call of
those methods is counted and timed by method and status code (``Metrics.observe_grpc``), as HTTP requests are.
"""

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from service.auth import bearer_matches
from service.config import Settings
from service.errors import Problem, Unauthorized, problem_of
from service.metrics import Metrics
from service.protocols.kserve_v2.codec import call_from_grpc, grpc_response, parse_version
from service.protocols.kserve_v2.dataplane import V2DataPlane
from service.protocols.kserve_v2.errors import grpc_status

log = logging.getLogger(__name__)

#: How long a stopping server lets running calls finish.
_STOP_GRACE_S = 5.0

Reply = TypeVar("Reply")


def _unary(method: Callable[..., Awaitable[Reply]]) -> Callable[..., Awaitable[Reply]]:
    """Abort the call with the status code of whatever it raised; count and time it (``_count``)."""

    @wraps(method)
    async def call(self: "InferenceServicer", request: Any, context: grpc.aio.ServicerContext) -> Reply:
        _count(self.metrics, method.__name__, context)
        try:
            return await method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - every error becomes a status code
            problem = problem_of(exc)
            await context.abort(grpc_status(problem), problem.message)
            raise  # abort raises; this line is never reached

    return call


def _count(metrics: Metrics, method: str, context: grpc.aio.ServicerContext) -> None:
    """Count and time the call under its status code once its handler has ended: the code it aborted with,
    CANCELLED when gRPC cancelled it (e.g. past the client's deadline), else OK. A stream whose client goes away
    while the handler waits for its next message may end that wait as if the client had closed its side: OK."""
    started = time.perf_counter()

    def ended(done: grpc.aio.ServicerContext) -> None:
        code = grpc.StatusCode.CANCELLED if done.cancelled() else done.code() or grpc.StatusCode.OK
        metrics.observe_grpc(method, code.name, time.perf_counter() - started)

    context.add_done_callback(ended)


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The V2 gRPC methods, on the shared data plane."""

    def __init__(self, plane: V2DataPlane, settings: Settings, metrics: Metrics) -> None:
        self.plane = plane
        self.settings = settings
        self.metrics = metrics

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        if self.settings.api_key and self.settings.api_key_all:
            header = dict(context.invocation_metadata() or ()).get("authorization", "")
            if not bearer_matches(header, self.settings.api_key):
                raise Unauthorized

    @_unary
    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @_unary
    async def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.plane.ready)

    @_unary
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        self._authorize(context)
        return pb.ServerMetadataResponse(**self.plane.server_metadata().model_dump())

    @_unary
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        self._authorize(context)
        metadata = self.plane.model_metadata(request.name, parse_version(request.version))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=metadata.name,
            versions=metadata.versions,
            platform=metadata.platform,
            inputs=[tensor(**t.model_dump()) for t in metadata.inputs],
            outputs=[tensor(**t.model_dump()) for t in metadata.outputs],
        )

    @_unary
    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext) -> pb.ModelReadyResponse:
        self._authorize(context)
        return pb.ModelReadyResponse(ready=await self.plane.model_ready(request.name, parse_version(request.version)))

    @_unary
    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        self._authorize(context)
        return grpc_response(await self.plane.infer(call_from_grpc(request)))

    async def ModelStreamInfer(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """One response per request, in order (a sequence's steps stay in order); an error ends only its request.

        The stream is counted once, when it ends (``_count``)."""
        _count(self.metrics, "ModelStreamInfer", context)
        try:
            self._authorize(context)
        except Unauthorized as exc:
            problem = problem_of(exc)
            await context.abort(grpc_status(problem), problem.message)
        async for request in requests:
            try:
                answer = await self.plane.infer(call_from_grpc(request))
            except Exception as exc:  # noqa: BLE001 - reported in the stream, as Triton does
                problem: Problem = problem_of(exc)
                yield pb.ModelStreamInferResponse(
                    error_message=problem.message, infer_response=pb.ModelInferResponse(id=request.id)
                )
                continue
            yield pb.ModelStreamInferResponse(infer_response=grpc_response(answer))


class GrpcServer:
    """The gRPC server's life: started and stopped by the app's lifespan on its event loop."""

    def __init__(self, plane: V2DataPlane, settings: Settings, metrics: Metrics) -> None:
        self.address = f"{settings.host}:{settings.grpc_port}"
        self._server = grpc.aio.server(
            options=[
                # The same body limit as HTTP (MAX_BODY_BYTES): grpc answers RESOURCE_EXHAUSTED past it.
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                ("grpc.max_send_message_length", settings.max_body_bytes),
                # grpc shares a port between processes by default (SO_REUSEPORT): a second service started on
                # a taken GRPC_PORT would silently get half of another's calls. Refuse to start instead.
                ("grpc.so_reuseport", 0),
            ]
        )
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(plane, settings, metrics), self._server)
        self.port = self._server.add_insecure_port(self.address)

    async def start(self) -> None:
        """Start serving."""
        await self._server.start()
        log.info("gRPC (KServe V2) listening on %s", self.address)

    async def stop(self) -> None:
        """Let running calls finish for a moment, then stop."""
        await self._server.stop(_STOP_GRACE_S)
